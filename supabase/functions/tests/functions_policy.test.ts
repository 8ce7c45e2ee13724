// The pure policy logic of the edge functions: roles, safety rules, windows, job control, blockers.
import assert from "node:assert/strict";
import {
  blockerProblem,
  type BlockerRow,
  controlProblem,
  FUNCTION_ACCESS,
  type JobState,
  overlaps,
  requireRole,
  roleAtLeast,
  type SafetyInput,
  type SafetyPolicy,
  safetyViolations,
  sameScope,
  violationError,
  windowTimeProblems,
} from "../_shared/policy.ts";
import { HttpError } from "../_shared/http.ts";
import { planHints } from "../_shared/jobs.ts";

const NOW = new Date("2026-11-28T12:00:00Z");
const H = 3_600_000;
const at = (h: number) => new Date(NOW.getTime() + h * H);
const HIGH: SafetyPolicy = {
  job_type: "rolling_cluster_update", risk: "high", requires_window: true, takes_hosts_out: true,
  max_hosts_out_per_cluster: 1, max_concurrent_per_cluster: 1,
};
const LOW: SafetyPolicy = {
  job_type: "scp_backup", risk: "low", requires_window: false, takes_hosts_out: false,
  max_hosts_out_per_cluster: null, max_concurrent_per_cluster: null,
};
const WINDOW = { id: "w", site_id: "s1", cluster_id: "c1", status: "approved" as const, starts_at: at(-1), ends_at: at(3) };

function input(over: Partial<SafetyInput> = {}): SafetyInput {
  return {
    jobType: "rolling_cluster_update", policy: HIGH, siteId: "s1", clusterId: "c1", hostsInParallel: 1,
    window: WINDOW, scheduledFor: NOW, activity: { active_jobs: 0, active_same_type: 0 },
    onePerCluster: planHints("rolling_cluster_update").one_per_cluster!, now: NOW, ...over,
  };
}
const codes = (i: SafetyInput) => safetyViolations(i).map((v) => v.code);

Deno.test("roles form a ladder and every function action names a known role", () => {
  assert.ok(roleAtLeast("admin", "viewer"));
  assert.ok(roleAtLeast("approver", "operator"));
  assert.ok(!roleAtLeast("operator", "approver"));
  assert.ok(!roleAtLeast(null, "viewer"));
  const actions = Object.entries(FUNCTION_ACCESS).flatMap(([fn, a]) => Object.entries(a).map(([k, r]) => [fn, k, r]));
  assert.equal(actions.length, 23);
  for (const [, , r] of actions) assert.ok(["viewer", "operator", "approver", "admin"].includes(r));
  assert.equal(FUNCTION_ACCESS["job-control"].force_resume, "admin");
  assert.equal(FUNCTION_ACCESS["maintenance-windows"].approve, "approver");
  assert.equal(FUNCTION_ACCESS["maintenance-windows"].approve_series, "approver");
  assert.equal(FUNCTION_ACCESS["maintenance-windows"].cancel_series, "operator");
  assert.equal(FUNCTION_ACCESS["encrypt-credentials"].seal, "admin");
  assert.equal(FUNCTION_ACCESS["schedules"].save, "operator"); // fire: the service role, outside the ladder
});

Deno.test("requireRole answers 403 naming the role needed", () => {
  requireRole("operator", "create-job", "create");
  for (const role of ["viewer", null] as const) {
    assert.throws(() => requireRole(role, "create-job", "create"), (e: unknown) => e instanceof HttpError && e.status === 403);
  }
  assert.throws(() => requireRole("approver", "job-control", "force_resume"), HttpError);
  assert.throws(() => requireRole("admin", "job-control", "explode"), /no access rule/);
});

Deno.test("a high-risk job inside its approved window, alone on its cluster, is allowed", () => {
  assert.deepEqual(codes(input()), []);
  assert.deepEqual(codes(input({ policy: LOW, jobType: "scp_backup", window: null, clusterId: null, activity: null })), []);
});

Deno.test("risk and windows: required, approved, same site and cluster, not over, scheduled inside", () => {
  assert.deepEqual(codes(input({ window: null })), ["window_required"]);
  assert.deepEqual(codes(input({ window: { ...WINDOW, status: "requested" } })), ["window_not_approved"]);
  assert.deepEqual(codes(input({ window: { ...WINDOW, site_id: "s2" } })), ["window_wrong_scope"]);
  assert.deepEqual(codes(input({ window: { ...WINDOW, cluster_id: "c2" } })), ["window_wrong_scope"]);
  assert.deepEqual(codes(input({ window: { ...WINDOW, cluster_id: null } })), [], "a site-wide window covers every cluster");
  assert.deepEqual(codes(input({ window: { ...WINDOW, starts_at: at(-3), ends_at: at(-1) } })), ["window_over"]);
  assert.deepEqual(codes(input({ scheduledFor: at(5) })), ["outside_window"]);
  // a low-risk job that names a window anyway is held to it too
  assert.deepEqual(codes(input({ policy: LOW, window: { ...WINDOW, status: "rejected" } })), ["window_not_approved"]);
});

Deno.test("per-cluster limits: hosts out at once, concurrent jobs, one rolling update per cluster", () => {
  assert.deepEqual(codes(input({ hostsInParallel: 2 })), ["cluster_limit"]);
  assert.deepEqual(codes(input({ activity: { active_jobs: 1, active_same_type: 1 } })), ["rolling_update_in_progress"]);
  assert.equal(safetyViolations(input({ activity: { active_jobs: 1, active_same_type: 1 } }))[0].message,
    "this cluster already has a rolling update in progress");
  const fw = { ...HIGH, job_type: "firmware_update" };
  const firmware = { jobType: "firmware_update", policy: fw, onePerCluster: null };
  assert.deepEqual(codes(input({ ...firmware, activity: { active_jobs: 1, active_same_type: 0 } })), ["cluster_busy"]);
  const two = { ...fw, max_concurrent_per_cluster: 2 };
  // a type without one_per_cluster may have several active jobs of its own on the cluster
  assert.deepEqual(codes(input({ ...firmware, policy: two, activity: { active_jobs: 1, active_same_type: 1 } })), []);
  const err = violationError(safetyViolations(input({ hostsInParallel: 3, window: null })));
  assert.equal(err.status, 409);
  assert.equal(err.code, "window_required");
  assert.equal((err.details as { violations: unknown[] }).violations.length, 2);
  assert.equal(violationError(safetyViolations(input({ hostsInParallel: 3 }))).status, 422);
});

Deno.test("maintenance window times: not in the past, ordered, at most a week, within a year", () => {
  assert.deepEqual(windowTimeProblems(at(1), at(2), NOW), []);
  assert.deepEqual(windowTimeProblems(at(-2), at(2), NOW).map((p) => p.code), ["window_in_past"]);
  assert.deepEqual(windowTimeProblems(at(2), at(1), NOW).map((p) => p.code), ["window_inverted"]);
  assert.deepEqual(windowTimeProblems(at(1), at(1 + 24 * 8), NOW).map((p) => p.code), ["window_too_long"]);
  assert.deepEqual(windowTimeProblems(at(24 * 400), at(24 * 400 + 1), NOW).map((p) => p.code), ["window_too_far"]);
});

Deno.test("window scope and overlap", () => {
  assert.ok(sameScope({ site_id: "s", cluster_id: "a" }, { site_id: "s", cluster_id: "a" }));
  assert.ok(sameScope({ site_id: "s", cluster_id: null }, { site_id: "s", cluster_id: "a" }));
  assert.ok(!sameScope({ site_id: "s", cluster_id: "a" }, { site_id: "s", cluster_id: "b" }));
  assert.ok(!sameScope({ site_id: "s", cluster_id: null }, { site_id: "t", cluster_id: null }));
  assert.ok(overlaps({ starts_at: at(0), ends_at: at(2) }, { starts_at: at(1), ends_at: at(3) }));
  assert.ok(!overlaps({ starts_at: at(0), ends_at: at(1) }, { starts_at: at(1), ends_at: at(2) }), "touching is not overlapping");
});

Deno.test("job control: which actions apply in which state", () => {
  const s = (status: JobState["status"], over: Partial<JobState> = {}): JobState => ({
    status, pause_reason: status === "paused" ? "operator" : null, cancel_requested_at: null, pause_requested_at: null,
    lease_expires_at: status === "running" ? at(1) : null, ...over,
  });
  assert.equal(controlProblem("pause", s("running"), NOW), null);
  assert.equal(controlProblem("pause", s("pending"), NOW)?.code, "not_running");
  assert.equal(controlProblem("pause", s("running", { pause_requested_at: NOW }), NOW)?.code, "already_requested");
  assert.equal(controlProblem("resume", s("paused"), NOW), null);
  assert.equal(controlProblem("resume", s("paused", { pause_reason: "executor_lost" }), NOW)?.code, "needs_force_resume");
  assert.equal(controlProblem("resume", s("running"), NOW)?.code, "not_paused");
  for (const st of ["pending", "running", "paused"] as const) assert.equal(controlProblem("cancel", s(st), NOW), null);
  for (const st of ["completed", "failed", "cancelled"] as const) assert.equal(controlProblem("cancel", s(st), NOW)?.code, "already_finished");
  assert.equal(controlProblem("cancel", s("running", { cancel_requested_at: NOW }), NOW)?.code, "already_requested");
  assert.equal(controlProblem("force_resume", s("paused", { pause_reason: "executor_lost" }), NOW), null);
  assert.equal(controlProblem("force_resume", s("running", { lease_expires_at: at(-1) }), NOW), null, "a stuck lease");
  assert.equal(controlProblem("force_resume", s("running"), NOW)?.code, "not_stuck");
  assert.equal(controlProblem("force_resume", s("completed"), NOW)?.code, "not_stuck");
  assert.equal(controlProblem("retry", s("failed"), NOW), null);
  assert.equal(controlProblem("retry", s("cancelled"), NOW)?.code, "not_failed");
});

Deno.test("blocker decisions: resolved and stale blockers are refused", () => {
  const b = (over: Partial<BlockerRow> = {}): BlockerRow => ({
    id: "b", job_id: "j", kind: "usb_passthrough", status: "open", host_id: "h1", vm_id: "v", vm_exists: true, vm_host_id: "h1",
    ...over,
  });
  for (const d of ["power_off_vm", "migrate_manually_done", "skip_host", "abort"] as const) assert.equal(blockerProblem(b(), d), null);
  assert.equal(blockerProblem(b({ status: "resolved" }), "skip_host")?.code, "blocker_resolved");
  assert.equal(blockerProblem(b({ vm_exists: false }), "power_off_vm")?.code, "stale_blocker");
  assert.equal(blockerProblem(b({ vm_host_id: "h2" }), "power_off_vm")?.code, "stale_blocker");
  assert.equal(blockerProblem(b({ vm_host_id: "h2" }), "migrate_manually_done"), null);
  assert.equal(blockerProblem(b({ host_id: null, vm_id: null }), "skip_host")?.code, "invalid_decision");
  assert.equal(blockerProblem(b({ host_id: null, vm_id: null, kind: "replication_lag" }), "abort"), null);
});

Deno.test("blocker decisions: acknowledge (with a reason) and recheck are for the replication gate only", () => {
  const lag: BlockerRow = {
    id: "b", job_id: "j", kind: "replication_lag", status: "open", host_id: null, vm_id: null, vm_exists: false, vm_host_id: null,
  };
  assert.equal(blockerProblem(lag, "acknowledge", "replica checked by hand, window closes at 06:00"), null);
  assert.equal(blockerProblem(lag, "acknowledge")?.code, "reason_required");
  assert.equal(blockerProblem(lag, "acknowledge", "   ")?.code, "reason_required");
  assert.equal(blockerProblem({ ...lag, kind: "usb_passthrough" }, "acknowledge", "because")?.code, "invalid_decision");
  // recheck: after waiting or a sync now, the gate runs again; no reason needed, replication_lag only
  assert.equal(blockerProblem(lag, "recheck"), null);
  assert.equal(blockerProblem({ ...lag, kind: "usb_passthrough" }, "recheck")?.code, "invalid_decision");
});
