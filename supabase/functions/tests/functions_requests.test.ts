// Bad requests to the rackpilot functions are answered {"error","code","details"} with a
// 4xx before any database work: every case here fails in authentication or body checks,
// which run before a connection is opened (without a database a later failure would be a 500).
import assert from "node:assert/strict";
import { handler as createJob } from "../create-job/handler.ts";
import { handler as jobControl } from "../job-control/handler.ts";
import { handler as resolveBlockers } from "../resolve-blockers/handler.ts";
import { handler as windows } from "../maintenance-windows/handler.ts";
import { handler as credentials } from "../encrypt-credentials/handler.ts";
import { handler as notifications } from "../notification-settings/handler.ts";
import { handler as schedules } from "../schedules/handler.ts";

const SECRET = "unit-test-jwt-secret-0123456789abcdef";
Deno.env.set("SUPABASE_JWT_SECRET", SECRET);

const HANDLERS: Record<string, (r: Request) => Promise<Response>> = {
  "create-job": createJob,
  "job-control": jobControl,
  "resolve-blockers": resolveBlockers,
  "maintenance-windows": windows,
  "encrypt-credentials": credentials,
  "notification-settings": notifications,
  schedules,
};

const b64u = (b: Uint8Array) => btoa(String.fromCharCode(...b)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const enc = (o: unknown) => b64u(new TextEncoder().encode(JSON.stringify(o)));

async function jwt(claims: Record<string, unknown>, secret = SECRET): Promise<string> {
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc(claims);
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${head}.${body}`)));
  return `${head}.${body}.${b64u(sig)}`;
}

const USER = { sub: "7d0b5c4e-6c55-4b2e-9e0e-0a1b2c3d4e5f", role: "authenticated", exp: Math.floor(Date.now() / 1000) + 600 };

async function call(name: string, body: BodyInit | null, token?: string | null, method = "POST") {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await HANDLERS[name](new Request(`http://fn/${name}`, { method, headers, body }));
  const text = await res.text();
  const json = text ? JSON.parse(text) : {};
  return { status: res.status, json };
}

function assertError(r: { status: number; json: Record<string, unknown> }, status: number, code: string) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(r.json.code, code);
  assert.equal(typeof r.json.error, "string");
  assert.ok("details" in r.json);
  assert.ok(!/at .*\.ts:\d+|select |insert |update /i.test(JSON.stringify(r.json)), "no stack or SQL in the answer");
}

Deno.test("every function: missing, forged, expired and non-user tokens are 401", async () => {
  const good = await jwt(USER);
  const forged = await jwt(USER, "another-secret-another-secret-00");
  const expired = await jwt({ ...USER, exp: Math.floor(Date.now() / 1000) - 5 });
  const anon = await jwt({ role: "anon", exp: USER.exp });
  const noSub = await jwt({ role: "authenticated", exp: USER.exp });
  for (const name of Object.keys(HANDLERS)) {
    assertError(await call(name, "{}", null), 401, "unauthorized");
    assertError(await call(name, "{}", "not-a-jwt"), 401, "unauthorized");
    assertError(await call(name, "{}", forged), 401, "unauthorized");
    assertError(await call(name, "{}", expired), 401, "unauthorized");
    assertError(await call(name, "{}", anon), 401, "unauthorized");
    assertError(await call(name, "{}", noSub), 401, "unauthorized");
    // a good token gets past authentication to the body checks
    assert.equal((await call(name, "[]", good)).status, 400);
  }
});

Deno.test("every function: invalid JSON, non-objects, oversize bodies, wrong methods", async () => {
  const t = await jwt(USER);
  for (const name of Object.keys(HANDLERS)) {
    assertError(await call(name, "{not json", t), 400, "invalid_json");
    assertError(await call(name, "", t), 400, "invalid_json");
    assertError(await call(name, "[1,2]", t), 400, "invalid_body");
    assertError(await call(name, '"x"', t), 400, "invalid_body");
    assertError(await call(name, JSON.stringify({ pad: "x".repeat(70 * 1024) }), t), 413, "payload_too_large");
    assertError(await call(name, JSON.stringify({ a: "bad\u0000nul" }), t), 400, "invalid_text");
    assertError(await call(name, null, t, "GET"), 405, "method_not_allowed");
    assert.equal((await call(name, null, t, "OPTIONS")).status, 204);
  }
});

Deno.test("multi-action functions refuse unknown actions and wrong fields", async () => {
  const t = await jwt(USER);
  for (const name of ["job-control", "maintenance-windows", "encrypt-credentials", "notification-settings"]) {
    assertError(await call(name, JSON.stringify({ action: "explode" }), t), 400, "unknown_action");
  }
  assertError(await call("job-control", JSON.stringify({ action: "pause", job_id: "nope" }), t), 400, "invalid_request");
  assertError(await call("job-control", JSON.stringify({ action: "force_resume", job_id: USER.sub }), t), 400, "reason_required");
  assertError(await call("job-control", JSON.stringify({ action: "force_resume", job_id: USER.sub, reason: "  " }), t), 400,
    "reason_required");
  assertError(await call("resolve-blockers", JSON.stringify({ job_id: USER.sub, decisions: [] }), t), 400, "invalid_request");
  assertError(await call("resolve-blockers", JSON.stringify({
    job_id: USER.sub, decisions: [{ blocker_id: USER.sub, decision: "ignore" }],
  }), t), 400, "invalid_request");
  assertError(await call("resolve-blockers", JSON.stringify({
    job_id: USER.sub, decisions: [{ blocker_id: USER.sub, decision: "skip_host" }, { blocker_id: USER.sub, decision: "abort" }],
  }), t), 400, "duplicate_blocker");
  const past = { action: "create", site_id: USER.sub, title: "t", starts_at: "2020-01-01T00:00:00Z", ends_at: "2020-01-01T04:00:00Z" };
  assertError(await call("maintenance-windows", JSON.stringify(past), t), 400, "window_in_past");
  const inverted = { ...past, starts_at: "2099-01-01T04:00:00Z", ends_at: "2099-01-01T00:00:00Z" };
  assertError(await call("maintenance-windows", JSON.stringify(inverted), t), 400, "window_inverted");
  assertError(await call("maintenance-windows", JSON.stringify({ action: "approve" }), t), 400, "invalid_request");
  assertError(await call("notification-settings", JSON.stringify({ action: "upsert", settings: [{}] }), t), 400, "invalid_request");
  assertError(await call("create-job", JSON.stringify({ type: "nope", params: {} }), t), 400, "unknown_job_type");
});

Deno.test("schedules: a user saves (create-job's checks first) and never fires", async () => {
  const t = await jwt(USER);
  const save = { action: "save", site_id: USER.sub, name: "nightly", recurrence: "@daily" };
  assertError(await call("schedules", JSON.stringify({ action: "fire" }), t), 403, "forbidden");
  assertError(await call("schedules", JSON.stringify({ action: "explode" }), t), 400, "unknown_action");
  assertError(await call("schedules", JSON.stringify({ ...save, job_type: "vcenter_sync" }), t), 400, "invalid_request");
  assertError(await call("schedules", JSON.stringify({ ...save, job_type: "vcenter_sync", params: {}, owner_id: USER.sub }),
    t), 400, "invalid_request");
  assertError(await call("schedules", JSON.stringify({ ...save, name: "../x", job_type: "vcenter_sync", params: {} }), t),
    400, "invalid_request");
  assertError(await call("schedules", JSON.stringify({ ...save, job_type: "nope", params: {} }), t), 400,
    "unknown_job_type");
  assertError(await call("schedules", JSON.stringify({ ...save, job_type: "vm_operation",
    params: { vm_ids: ["not-a-uuid"], action: "delete" } }), t), 400, "invalid_params");
  assertError(await call("schedules", `{"action":"save","site_id":"${USER.sub}","name":"n","recurrence":"@daily",` +
    `"job_type":"vcenter_sync","params":{"__proto__":{"polluted":1}}}`, t), 400, "forbidden_key");
  // a service-role token with a forged signature is refused, as is a user who says fire
  const service = await jwt({ role: "service_role", exp: USER.exp }, "another-secret-another-secret-00");
  assertError(await call("schedules", JSON.stringify({ action: "fire" }), service), 401, "unauthorized");
});

Deno.test("encrypt-credentials never echoes the secret, even in validation errors", async () => {
  const t = await jwt(USER);
  const secret = "Tr0ub4dor&3-unit";
  for (const body of [
    { action: "seal", site_id: "nope", name: "n", kind: "idrac", username: "root", secret },
    { action: "seal", site_id: USER.sub, name: "n", kind: "toaster", username: "root", secret },
    { action: "reseal", credential_set_id: USER.sub, secret, extra: secret },
    { action: "seal", site_id: USER.sub, name: "n", kind: "idrac", username: "root", secret: secret.repeat(400) },
  ]) {
    const r = await call("encrypt-credentials", JSON.stringify(body), t);
    assert.equal(r.status, 400);
    assert.ok(!JSON.stringify(r.json).includes(secret), JSON.stringify(r.json));
  }
  const big = await call("encrypt-credentials", JSON.stringify({ action: "seal", secret: secret.repeat(2000) }), t);
  assertError(big, 413, "payload_too_large");
});
