// Sealing credentials (the format executor/secrets.py opens): a WebCrypto opener written
// from the format description checks the sealer; tests/integration/test_functions_credentials.py
// checks the same envelopes against the executor's Python opener.
import assert from "node:assert/strict";
import { ALG, b64u, type Bytes, keyId, parsePublicKey, seal, unb64u } from "../_shared/envelope.ts";

async function keyPair() {
  const kp = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey)) as Bytes;
  return { priv: kp.privateKey, raw };
}

async function open(priv: CryptoKey, recipientRaw: Bytes, env: Record<string, string | number>) {
  const epk = unb64u(env.epk as string);
  const peer = await crypto.subtle.importKey("raw", epk, { name: "X25519" }, false, []);
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: peer }, priv, 256);
  const salt = new Uint8Array(64);
  salt.set(epk, 0);
  salt.set(recipientRaw, 32);
  const hk = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: new TextEncoder().encode("rackpilot-credential-v1") },
    hk, { name: "AES-GCM", length: 256 }, false, ["decrypt"]);
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: unb64u(env.nonce as string), additionalData: new TextEncoder().encode(`rackpilot-credential-v1|${env.kid}`) },
    key, unb64u(env.ct as string));
  return JSON.parse(new TextDecoder().decode(plain));
}

Deno.test("an envelope opens with the recipient's key and carries the documented fields", async () => {
  const r = await keyPair();
  const env = await seal(r.raw, { username: "root", password: "calvin-unit" });
  assert.equal(env.v, 1);
  assert.equal(env.alg, ALG);
  assert.equal(env.kid, await keyId(r.raw));
  assert.match(env.kid, /^x25519:[A-Za-z0-9_-]{16}$/);
  assert.equal(unb64u(env.epk).length, 32);
  assert.equal(unb64u(env.nonce).length, 12);
  assert.ok(!JSON.stringify(env).includes("calvin-unit"));
  assert.deepEqual(await open(r.priv, r.raw, env as never), { username: "root", password: "calvin-unit" });
});

Deno.test("another key, a tampered ciphertext or a changed key id do not open", async () => {
  const r = await keyPair();
  const other = await keyPair();
  const env = await seal(r.raw, { username: "root", password: "x" });
  await assert.rejects(() => open(other.priv, other.raw, env as never));
  const ct = unb64u(env.ct);
  ct[0] ^= 1;
  await assert.rejects(() => open(r.priv, r.raw, { ...env, ct: b64u(ct) } as never));
  await assert.rejects(() => open(r.priv, r.raw, { ...env, kid: "x25519:AAAAAAAAAAAAAAAA" } as never));
});

Deno.test("two seals of one secret differ (fresh ephemeral key and nonce)", async () => {
  const r = await keyPair();
  const a = await seal(r.raw, { password: "same" });
  const b = await seal(r.raw, { password: "same" });
  assert.notEqual(a.epk, b.epk);
  assert.notEqual(a.ct, b.ct);
});

Deno.test("public keys are read as base64url, base64 or SPKI PEM, and nothing else", () => {
  const raw = new Uint8Array(32).map((_, i) => i + 1) as Bytes;
  const b64 = btoa(String.fromCharCode(...raw));
  assert.deepEqual(parsePublicKey(b64u(raw)), raw);
  assert.deepEqual(parsePublicKey(b64), raw);
  const spki = new Uint8Array([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00, ...raw]);
  const pem = `-----BEGIN PUBLIC KEY-----\n${btoa(String.fromCharCode(...spki))}\n-----END PUBLIC KEY-----\n`;
  assert.deepEqual(parsePublicKey(pem), raw);
  assert.throws(() => parsePublicKey(b64u(raw.slice(0, 31))));
  assert.throws(() => parsePublicKey("not base64 !"));
  const rsaish = `-----BEGIN PUBLIC KEY-----\n${btoa("x".repeat(60))}\n-----END PUBLIC KEY-----`;
  assert.throws(() => parsePublicKey(rsaish));
});
