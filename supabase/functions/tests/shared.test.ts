// Unit tests of the generic helpers in _shared (http.ts, env.ts, auth.ts).

import assert from "node:assert/strict";
import { bearerToken, unverifiedClaims } from "../_shared/auth.ts";
import { MissingEnvError, optionalEnv, requireEnv } from "../_shared/env.ts";
import { errorResponse, HttpError, jsonResponse, readJson, withErrors } from "../_shared/http.ts";

function post(body: BodyInit | null, headers: Record<string, string> = {}): Request {
  return new Request("http://fn.test/hello", { method: "POST", body, headers });
}

function b64url(obj: unknown): string {
  return btoa(JSON.stringify(obj)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

Deno.test("jsonResponse and errorResponse speak JSON with the {error, code, details} shape", async () => {
  const ok = jsonResponse({ a: 1 }, 201, { "x-extra": "1" });
  assert.equal(ok.status, 201);
  assert.equal(ok.headers.get("content-type"), "application/json; charset=utf-8");
  assert.equal(ok.headers.get("x-extra"), "1");
  assert.equal(ok.headers.get("access-control-allow-origin"), "*");
  assert.deepEqual(await ok.json(), { a: 1 });
  const err = errorResponse(409, "conflict", "already there", { id: 7 });
  assert.equal(err.status, 409);
  assert.deepEqual(await err.json(), { error: "already there", code: "conflict", details: { id: 7 } });
});

Deno.test("readJson parses, refuses bad JSON, non-UTF-8 and oversize bodies", async () => {
  assert.deepEqual(await readJson(post('{"x": [1, 2]}')), { x: [1, 2] });
  assert.equal(await readJson(post(""), { allowEmpty: true }), undefined);
  assert.equal(await readJson(post(null), { allowEmpty: true }), undefined);
  const cases: Array<[Request, number, string, { maxBytes?: number }]> = [
    [post(""), 400, "bad_json", {}],
    [post('{"x": '), 400, "bad_json", {}],
    [post(new Uint8Array([0x7b, 0xff, 0x7d])), 400, "bad_json", {}],
    [post("x".repeat(11)), 413, "body_too_large", { maxBytes: 10 }],
    // A Content-Length that claims more than the limit is refused before reading.
    [post("{}", { "content-length": "999999" }), 413, "body_too_large", { maxBytes: 10 }],
  ];
  for (const [req, status, code, opts] of cases) {
    await assert.rejects(readJson(req, opts), (e: unknown) => {
      assert.ok(e instanceof HttpError);
      assert.equal(e.status, status);
      assert.equal(e.code, code);
      return true;
    });
  }
  // A streamed body without a length is cut off at the limit too.
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 4; i++) c.enqueue(new TextEncoder().encode("aaaa"));
      c.close();
    },
  });
  await assert.rejects(readJson(post(stream), { maxBytes: 10 }), (e: unknown) => (e as HttpError).status === 413);
});

Deno.test("withErrors turns HttpError into its answer, hides anything else, answers preflights", async () => {
  const failing = withErrors((req) => {
    if (req.url.endsWith("/known")) throw new HttpError(422, "bad_thing", "that is not allowed", { field: "x" });
    throw new Error("secret-value-from-the-request");
  });
  const known = await failing(new Request("http://fn.test/known"));
  assert.equal(known.status, 422);
  assert.deepEqual(await known.json(), { error: "that is not allowed", code: "bad_thing", details: { field: "x" } });

  const errors: unknown[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args);
  try {
    const unknown = await failing(new Request("http://fn.test/other"));
    assert.equal(unknown.status, 500);
    const text = await unknown.text();
    assert.equal(JSON.parse(text).code, "internal_error");
    assert.ok(!text.includes("secret-value"), "the error's message must not reach the caller");
    assert.ok(!JSON.stringify(errors).includes("secret-value"), "nor the log");
  } finally {
    console.error = original;
  }
  const pre = await failing(new Request("http://fn.test/known", { method: "OPTIONS" }));
  assert.equal(pre.status, 204);
  assert.match(pre.headers.get("access-control-allow-headers") ?? "", /authorization/);
});

Deno.test("requireEnv names the missing variable and nothing else; optionalEnv falls back", () => {
  const name = `RACKPILOT_TEST_UNSET_${crypto.randomUUID().slice(0, 8)}`;
  assert.throws(() => requireEnv(name), (e: unknown) => {
    assert.ok(e instanceof MissingEnvError);
    assert.equal(e.status, 500);
    assert.equal(e.code, "config_missing");
    assert.deepEqual(e.details, { variable: name });
    return true;
  });
  assert.equal(optionalEnv(name, "dflt"), "dflt");
  Deno.env.set(name, "  ");
  try {
    assert.throws(() => requireEnv(name), MissingEnvError); // blank counts as missing
    Deno.env.set(name, "value");
    assert.equal(requireEnv(name), "value");
    assert.equal(optionalEnv(name, "dflt"), "value");
  } finally {
    Deno.env.delete(name);
  }
});

Deno.test("bearerToken and unverifiedClaims read what the caller sent", () => {
  const token = `${b64url({ alg: "HS256" })}.${b64url({ role: "authenticated", sub: "u1" })}.sig`;
  const req = (auth?: string) => new Request("http://fn.test/", { headers: auth ? { authorization: auth } : {} });
  assert.equal(bearerToken(req(`Bearer ${token}`)), token);
  assert.equal(bearerToken(req(`bearer   ${token}`)), token);
  assert.equal(bearerToken(req("Basic abc")), null);
  assert.equal(bearerToken(req()), null);
  assert.equal(unverifiedClaims(token).role, "authenticated");
  for (const bad of ["abc", "a.b", `x.${btoa("[1]")}.y`, "x.%%%.y"]) {
    assert.throws(() => unverifiedClaims(bad), (e: unknown) => e instanceof HttpError && e.status === 401);
  }
});
