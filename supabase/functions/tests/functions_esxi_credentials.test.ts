// Which ESXi SSH credential set create-job attaches to a job (no database: the choice is
// made from the site's sets of kind esxi, which planJob reads as the caller).
import assert from "node:assert/strict";
import { esxiCredentialFor, ESXI_SSH_JOB_TYPES, JOB_TYPES } from "../_shared/jobs.ts";
import { HttpError } from "../_shared/http.ts";

const SITE = "5a1e0c9b-2d3f-4e5a-8b6c-7d8e9f0a1b2c";
const A = { id: "7d0b5c4e-6c55-4b2e-9e0e-0a1b2c3d4e5f", name: "esxi-root" };
const B = { id: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", name: "esxi-root-old" };

function refusal(fn: () => unknown): HttpError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof HttpError, `expected HttpError, got ${e}`);
    return e;
  }
  throw new Error("accepted");
}

Deno.test("esxi_upgrade takes the site's one esxi credential set", () => {
  assert.equal(esxiCredentialFor("esxi_upgrade", SITE, [A]), A.id);
});

Deno.test("only job types that log in over SSH need an esxi set, and they are known job types", () => {
  for (const t of ESXI_SSH_JOB_TYPES) assert.ok(JOB_TYPES.includes(t), t);
  for (const t of JOB_TYPES.filter((t) => !ESXI_SSH_JOB_TYPES.has(t))) {
    assert.equal(esxiCredentialFor(t, SITE, []), null, t);
    assert.equal(esxiCredentialFor(t, SITE, [A, B]), null, t);
  }
});

Deno.test("a site without an esxi set is a 422 no_esxi_credentials naming the site", () => {
  const e = refusal(() => esxiCredentialFor("esxi_upgrade", SITE, []));
  assert.equal(e.status, 422);
  assert.equal(e.code, "no_esxi_credentials");
  assert.deepEqual(e.details, { site_id: SITE, kind: "esxi" });
});

Deno.test("several esxi sets are refused rather than guessed, listing them by id and name", () => {
  const e = refusal(() => esxiCredentialFor("esxi_upgrade", SITE, [A, B]));
  assert.equal(e.status, 422);
  assert.equal(e.code, "ambiguous_esxi_credentials");
  assert.deepEqual(e.details, { site_id: SITE, kind: "esxi", credential_sets: [A, B] });
});
