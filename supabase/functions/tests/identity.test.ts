// Unit tests of the directory sign-in and break-glass helpers: RFC 4514/4515 escaping, the
// executor answer's MAC (against the Python executor's construction, recomputed here),
// and the scrypt secret check.

import assert from "node:assert/strict";
import { createHmac, scryptSync } from "node:crypto";
import { guard } from "../_shared/api.ts";
import { checkSecret } from "../break-glass/handler.ts";
import { b64u } from "../_shared/envelope.ts";
import { ANSWER_INFO, newVerifier, verifyAnswer } from "../_shared/identity.ts";
import { checkUsername, DirectoryError, escapeDnValue, escapeFilterValue, fill } from "../_shared/ldap.ts";

Deno.test("usernames are escaped per RFC 4514 in DNs and RFC 4515 in filters", () => {
  assert.equal(escapeDnValue("alice"), "alice");
  assert.equal(escapeDnValue('a,b+c"d\\e<f>g;h=i'), 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i');
  assert.equal(escapeDnValue(" #lead"), "\\ #lead");
  assert.equal(escapeDnValue("#x"), "\\#x");
  assert.equal(escapeDnValue("trail "), "trail\\ ");
  assert.equal(escapeDnValue("nul\0"), "nul\\00");
  assert.equal(escapeFilterValue("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
  assert.equal(escapeFilterValue("a\\b"), "a\\5cb");
  assert.equal(escapeFilterValue("é*"), "é\\2a");
  assert.equal(fill("(&(objectClass=person)(uid={username}))", "*)(|(uid=*", escapeFilterValue),
    "(&(objectClass=person)(uid=\\2a\\29\\28|\\28uid=\\2a))");
  assert.equal(fill("uid={username},ou=people,dc=x", "a,ou=admins", escapeDnValue), "uid=a\\,ou\\=admins,ou=people,dc=x");
});

Deno.test("control characters and empty or huge usernames are refused before any bind", () => {
  for (const bad of ["", "a\nb", "x".repeat(257), 5 as unknown as string]) {
    assert.throws(() => checkUsername(bad), DirectoryError);
  }
  assert.equal(checkUsername("o'hara (ops)"), "o'hara (ops)");
});

Deno.test("an executor answer verifies only with the executor key and only unchanged", async () => {
  const v = await newVerifier();
  const exec = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const execPub = new Uint8Array(await crypto.subtle.exportKey("raw", exec.publicKey));
  // the executor's side, as executor/identity.py computes it
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: await crypto.subtle.importKey("raw",
    v.publicRaw, { name: "X25519" }, false, []) }, exec.privateKey, 256);
  const salt = new Uint8Array([...v.publicRaw, ...execPub]);
  const hk = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const key = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: new TextEncoder().encode(ANSWER_INFO) }, hk, 256));
  const answer = '{"ok":true,"groups":["cn=a"]}';
  const mac = b64u(new Uint8Array(createHmac("sha256", key).update(`${ANSWER_INFO}|req-1|${answer}`).digest()));
  assert.equal(await verifyAnswer(v, execPub, "req-1", answer, mac), true);
  assert.equal(await verifyAnswer(v, execPub, "req-2", answer, mac), false);
  assert.equal(await verifyAnswer(v, execPub, "req-1", answer.replace("cn=a", "cn=b"), mac), false);
  const other = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const otherPub = new Uint8Array(await crypto.subtle.exportKey("raw", other.publicKey));
  assert.equal(await verifyAnswer(v, otherPub, "req-1", answer, mac), false);
  assert.equal(await verifyAnswer(v, execPub, "req-1", answer, "not base64 !"), false);
});

Deno.test("break-glass secrets check against scrypt hashes in the provisioning format", async () => {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const hash = scryptSync("s3cret-value", salt, 32, { N: 1024, r: 8, p: 1 });
  const stored = `scrypt$1024$8$1$${b64u(salt)}$${b64u(new Uint8Array(hash))}`;
  assert.equal(await checkSecret("s3cret-value", stored), true);
  assert.equal(await checkSecret("s3cret-valuE", stored), false);
  assert.equal(await checkSecret("s3cret-value", stored.replace("scrypt$1024", "scrypt$1000")), false); // not a power of 2
  assert.equal(await checkSecret("s3cret-value", stored.replace("scrypt$1024", `scrypt$${1 << 22}`)), false); // too costly
  assert.equal(await checkSecret("s3cret-value", "bcrypt$x"), false);
});

Deno.test("a sign-in limit is answered 429 rate_limited, a moment's contention 409 busy", async () => {
  // idm_begin_login's refusals (20261209110000): the per-address limit says "in a minute",
  // the site's in-flight cap and a locked row clear in moments (the console retries busy)
  const answer = async (err: Record<string, string>) => {
    const res = await guard("t", () => Promise.reject(err))(new Request("http://fn/", { method: "POST" }));
    const body = await res.json();
    return [res.status, body.code, body.error];
  };
  assert.deepEqual(
    await answer({ code: "P0001", message: "rate_limited: too many sign-ins from this address; try again in a minute" }),
    [429, "rate_limited", "too many sign-ins from this address; try again in a minute"],
  );
  assert.deepEqual(
    await answer({ code: "P0001", message: "busy: too many sign-ins in flight for this site; retry shortly" }),
    [409, "busy", "too many sign-ins in flight for this site; retry shortly"],
  );
  assert.deepEqual((await answer({ code: "55P03", message: "could not obtain lock on row" })).slice(0, 2), [409, "busy"]);
});
