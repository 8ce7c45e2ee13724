// planJob's per-type planning comes from the hints job-schemas.json carries for each type
// (declared in executor/jobtypes.py): how many of a cluster's hosts a job has out at once,
// which types need an SSH credential, which make tasks of a cluster's hosts. No database.
import assert from "node:assert/strict";
import { ESXI_SSH_JOB_TYPES, hostsOutAtOnce, JOB_SCHEMAS, JOB_TYPES, planHints } from "../_shared/jobs.ts";

Deno.test("every creatable type has rules, and a hosts-out hint exactly when it takes hosts out", () => {
  assert.deepEqual(Object.keys(JOB_SCHEMAS.job_type_rules).sort(), JOB_TYPES);
  for (const t of JOB_TYPES) {
    const r = JOB_SCHEMAS.job_type_rules[t];
    assert.equal(r.plan.hosts_out !== undefined, r.takes_hosts_out, t);
    assert.ok(r.risk !== "high" || r.requires_window, `${t}: high risk without a window`);
  }
});

Deno.test("hosts out at once: a params field capped by the cluster, all targets, or one", () => {
  const fw = planHints("firmware_update").hosts_out!;
  assert.equal(hostsOutAtOnce(fw, { max_parallel: 2 }, 5), 2);
  assert.equal(hostsOutAtOnce(fw, { max_parallel: 8 }, 3), 3);
  const rolling = planHints("rolling_cluster_update").hosts_out!;
  assert.equal(hostsOutAtOnce(rolling, { max_parallel_hosts: 4 }, 3), 3);
  assert.equal(hostsOutAtOnce(rolling, { max_parallel_hosts: 1 }, 3), 1);
  const power = planHints("power_operation").hosts_out!;
  assert.equal(hostsOutAtOnce(power, { action: "graceful_restart" }, 4), 4);
  assert.equal(hostsOutAtOnce(power, { action: "on" }, 4), 0); // powering on takes no host out
  assert.equal(hostsOutAtOnce(planHints("esxi_upgrade").hosts_out!, {}, 6), 1); // host by host
});

Deno.test("only the rolling update makes its tasks of a cluster's hosts and is one per cluster", () => {
  assert.deepEqual(JOB_TYPES.filter((t) => planHints(t).tasks === "cluster_hosts"), ["rolling_cluster_update"]);
  assert.deepEqual([...ESXI_SSH_JOB_TYPES], ["esxi_upgrade"]);
  assert.deepEqual(JOB_TYPES.filter((t) => planHints(t).site_default_catalog_unless), ["firmware_compliance"]);
  assert.deepEqual(JOB_TYPES.filter((t) => planHints(t).one_per_cluster), ["rolling_cluster_update"]);
});

Deno.test("a type without rules is a clear error, not a silent default", () => {
  assert.throws(() => planHints("scp_restore"), /job-schemas.json has no rules for scp_restore/);
});
