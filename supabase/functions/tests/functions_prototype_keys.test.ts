// Prototype keys ("__proto__", "constructor", "prototype") anywhere in a request body are a
// 400 naming the key, for every function (the shared readers refuse them before any code
// looks at the body), and never reach the schema validator or the job planner, where
// "__proto__" used to crash create-job into a 500 and "constructor" slipped past
// additionalProperties: false.
import assert from "node:assert/strict";
import { handler as createJob } from "../create-job/handler.ts";
import { handler as jobControl } from "../job-control/handler.ts";
import { handler as resolveBlockers } from "../resolve-blockers/handler.ts";
import { handler as windows } from "../maintenance-windows/handler.ts";
import { handler as credentials } from "../encrypt-credentials/handler.ts";
import { handler as notifications } from "../notification-settings/handler.ts";
import { handler as hello } from "./functions/hello/handler.ts";
import { findPrototypeKey, HttpError } from "../_shared/http.ts";
import { checkRequest } from "../_shared/jobs.ts";
import { validate } from "../_shared/validate.ts";

const SECRET = "unit-test-jwt-secret-0123456789abcdef";
Deno.env.set("SUPABASE_JWT_SECRET", SECRET);

const HANDLERS: Record<string, (r: Request) => Promise<Response>> = {
  "create-job": createJob,
  "job-control": jobControl,
  "resolve-blockers": resolveBlockers,
  "maintenance-windows": windows,
  "encrypt-credentials": credentials,
  "notification-settings": notifications,
  "hello": hello,
};

const b64u = (b: Uint8Array) => btoa(String.fromCharCode(...b)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const enc = (o: unknown) => b64u(new TextEncoder().encode(JSON.stringify(o)));

async function jwt(claims: Record<string, unknown>): Promise<string> {
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc(claims);
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(SECRET), { name: "HMAC", hash: "SHA-256" },
    false, ["sign"]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${head}.${body}`)));
  return `${head}.${body}.${b64u(sig)}`;
}

const USER = { sub: "7d0b5c4e-6c55-4b2e-9e0e-0a1b2c3d4e5f", role: "authenticated", exp: Math.floor(Date.now() / 1000) + 600 };
const S1 = "7d0b5c4e-6c55-4b2e-9e0e-0a1b2c3d4e5f";

// Raw JSON text: JSON.stringify of an object literal cannot produce an own "__proto__" key.
const BODIES: [string, string, string][] = [
  // [json text, key, path of the object holding it]
  [`{"__proto__": {"isAdmin": true}, "type": "scp_backup", "params": {"server_ids": ["${S1}"]}}`, "__proto__", ""],
  [`{"type": "scp_backup", "params": {"server_ids": ["${S1}"], "__proto__": {"x": 1}}}`, "__proto__", "/params"],
  [`{"type": "scp_backup", "params": {"server_ids": ["${S1}"], "constructor": {"prototype": {}}}}`, "constructor", "/params"],
  [`{"type": "firmware_update", "params": {"firmware": {"prototype": 1}, "server_ids": ["${S1}"]}}`, "prototype",
    "/params/firmware"],
  [`{"action": "pause", "job_id": "${S1}", "x": [{"a": [{"__proto__": null}]}]}`, "__proto__", "/x/0/a/0"],
];

async function call(name: string, text: string) {
  const token = await jwt(USER);
  const res = await HANDLERS[name](new Request(`http://fn/${name}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: text,
  }));
  return { status: res.status, json: JSON.parse(await res.text()) };
}

Deno.test("every function answers a body holding a prototype key with 400 forbidden_key naming the key", async () => {
  for (const name of Object.keys(HANDLERS)) {
    for (const [text, key, path] of BODIES) {
      const r = await call(name, text);
      assert.equal(r.status, 400, `${name} ${text}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.code, "forbidden_key", `${name}: ${JSON.stringify(r.json)}`);
      assert.ok(String(r.json.error).includes(JSON.stringify(key)), `${name}: the message names ${key}: ${r.json.error}`);
      assert.deepEqual(r.json.details, { key, path });
    }
  }
});

Deno.test("findPrototypeKey: found at any depth, in arrays too, and not fooled by values or look-alikes", () => {
  assert.deepEqual(findPrototypeKey(JSON.parse('{"a": {"b": [1, {"__proto__": 2}]}}')), { key: "__proto__", path: "/a/b/1" });
  assert.deepEqual(findPrototypeKey(JSON.parse('[{"x/y": {"constructor": 1}}]')), { key: "constructor", path: "/0/x~1y" });
  assert.equal(findPrototypeKey(JSON.parse('{"a": "__proto__", "b": ["constructor"], "proto": 1, "Prototype": 2}')), null);
  assert.equal(findPrototypeKey("__proto__"), null);
  // deep nesting cannot overflow the stack (the walk is iterative)
  const deep = "[".repeat(100_000) + '{"prototype": 1}' + "]".repeat(100_000);
  assert.equal(findPrototypeKey(JSON.parse(deep))?.key, "prototype");
});

Deno.test("checkRequest refuses prototype keys in params read back from the database (job-control retry)", () => {
  for (const [text, key, path] of BODIES.slice(0, 4)) {
    try {
      checkRequest(JSON.parse(text));
      assert.fail(`accepted ${text}`);
    } catch (e) {
      assert.ok(e instanceof HttpError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.code, "forbidden_key");
      assert.deepEqual(e.details, { key, path });
    }
  }
});

Deno.test("the validator looks up own properties only: 'constructor' is an unknown property, not a schema", () => {
  const schema = { type: "object", additionalProperties: false, required: ["toString"], properties: { a: { type: "string" } } };
  const issues = validate(schema, JSON.parse('{"constructor": 1, "a": "x"}'));
  assert.deepEqual(issues.map((i) => i.path).sort(), ["/constructor", "/toString"]);
});
