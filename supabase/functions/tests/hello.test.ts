// Unit tests of the hello function's handler, called directly (no router, no gateway).
// The authenticated path needs Auth; it is covered by contract.test.ts against a stack,
// and here only its failure when Auth cannot be reached (a closed loopback port).

import assert from "node:assert/strict";
import { handler } from "./functions/hello/handler.ts";

const ENV_KEYS = ["SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY"];

function b64url(obj: unknown): string {
  return btoa(JSON.stringify(obj)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function token(claims: Record<string, unknown>): string {
  return `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.signature`;
}
const ANON = token({ role: "anon" });
const SERVICE = token({ role: "service_role" });

/** Runs `fn` with the given env, restoring the process env afterwards (other test files read it). */
async function withEnv(env: Record<string, string | undefined>, fn: () => Promise<void>): Promise<void> {
  const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, Deno.env.get(k)]));
  try {
    for (const [k, v] of Object.entries(env)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}
// Port 9 (discard) is closed on loopback: a real, unreachable Auth.
const OFFLINE = { SUPABASE_URL: "http://127.0.0.1:9", SUPABASE_ANON_KEY: ANON, SUPABASE_SERVICE_ROLE_KEY: SERVICE };

function call(method: string, auth: string | null, body?: string): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (auth) headers.authorization = `Bearer ${auth}`;
  return handler(new Request("http://127.0.0.1/hello", { method, headers, body }));
}

Deno.test("hello: the anon key (or no token) is anonymous", () =>
  withEnv(OFFLINE, async () => {
    for (const auth of [ANON, null]) {
      const r = await call("POST", auth);
      assert.equal(r.status, 200);
      assert.deepEqual(await r.json(), { message: "Hello, anonymous!", role: "anon", anonymous: true, user: null });
    }
    const named = await call("POST", ANON, JSON.stringify({ name: "  Ada  " }));
    assert.equal((await named.json()).message, "Hello, Ada!");
    const get = await call("GET", ANON);
    assert.equal((await get.json()).anonymous, true);
  }));

Deno.test("hello: the service key is recognised by value, not by its claims", () =>
  withEnv(OFFLINE, async () => {
    const r = await call("POST", SERVICE, JSON.stringify({ name: "ops" }));
    assert.deepEqual(await r.json(), { message: "Hello, ops!", role: "service_role", anonymous: false, user: null });
    // Same claims, different token: not the service key, so merely anonymous.
    const other = await call("POST", token({ role: "service_role", x: 1 }));
    assert.equal((await other.json()).role, "anon");
  }));

Deno.test("hello: bad input gets specific 4xx errors", () =>
  withEnv(OFFLINE, async () => {
    const cases: Array<[string, string | undefined, number, string]> = [
      ["POST", '{"name": ', 400, "bad_json"],
      ["POST", "[1, 2]", 400, "invalid_body"],
      ["POST", '{"name": 5}', 400, "invalid_name"],
      ["POST", '{"name": "   "}', 400, "invalid_name"],
      ["POST", JSON.stringify({ name: "x".repeat(101) }), 400, "invalid_name"],
      ["POST", JSON.stringify({ pad: "x".repeat(17 * 1024) }), 413, "body_too_large"],
      ["PUT", "{}", 405, "method_not_allowed"],
      ["DELETE", undefined, 405, "method_not_allowed"],
    ];
    for (const [method, body, status, code] of cases) {
      const r = await call(method, ANON, body);
      assert.equal(r.status, status, `${method} ${body?.slice(0, 20)}`);
      const json = await r.json();
      assert.equal(json.code, code);
      assert.equal(typeof json.error, "string");
    }
    const notJwt = await call("POST", "not-a-jwt");
    assert.equal(notJwt.status, 401);
    assert.equal((await notJwt.json()).code, "bad_jwt");
  }));

Deno.test("hello: a user token while Auth is unreachable is a 502, not the caller's fault", () =>
  withEnv(OFFLINE, async () => {
    const r = await call("POST", token({ role: "authenticated", sub: crypto.randomUUID() }));
    assert.equal(r.status, 502);
    assert.equal((await r.json()).code, "auth_unavailable");
  }));

Deno.test("hello: missing configuration is a 500 naming only the variable", () =>
  withEnv({ ...OFFLINE, SUPABASE_ANON_KEY: undefined }, async () => {
    const r = await call("POST", ANON);
    assert.equal(r.status, 500);
    assert.deepEqual(await r.json(), {
      error: "the function is not configured: SUPABASE_ANON_KEY is not set",
      code: "config_missing",
      details: { variable: "SUPABASE_ANON_KEY" },
    });
  }));
