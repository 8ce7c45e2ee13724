// Sealing credentials to an executor's X25519 public key, with WebCrypto only.
//
// The format is the one executor/secrets.py documents and opens (version 1):
//   {"v":1, "alg":"X25519-HKDF-SHA256-A256GCM", "kid", "epk", "nonce", "ct"}
// binary fields base64url without padding;
//   shared = X25519(ephemeral_private, executor_public)
//   key    = HKDF-SHA256(ikm=shared, salt=epk || executor_public, info="rackpilot-credential-v1", 32 bytes)
//   ct     = AES-256-GCM(key, nonce, plaintext, aad="rackpilot-credential-v1|" + kid)
// kid = "x25519:" + base64url(SHA-256(raw public key))[:16].
//
// One envelope per recipient key: a site with two executors gets two envelopes of the
// same secret. The control plane never holds a key that opens any of them.

export const ALG = "X25519-HKDF-SHA256-A256GCM";
const INFO = new TextEncoder().encode("rackpilot-credential-v1");
const AAD_PREFIX = "rackpilot-credential-v1|";

export interface Envelope {
  v: 1;
  alg: typeof ALG;
  kid: string;
  epk: string;
  nonce: string;
  ct: string;
}

export class KeyFormatError extends Error {}

export function b64u(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export type Bytes = Uint8Array<ArrayBuffer>;

export function unb64u(text: string): Bytes {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new KeyFormatError("not base64url");
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function concat(...parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/** The 32 raw bytes of an executor public key given as base64url/base64 or as an SPKI PEM. */
export function parsePublicKey(text: string): Bytes {
  const t = text.trim();
  let raw: Bytes;
  if (t.startsWith("-----BEGIN PUBLIC KEY-----")) {
    const body = t.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
    const der = unb64u(body.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, ""));
    // SPKI of X25519 is a fixed 12-byte prefix (OID 1.3.101.110) followed by the key.
    const prefix = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];
    if (der.length !== 44 || prefix.some((b, i) => der[i] !== b)) throw new KeyFormatError("not an X25519 SPKI key");
    raw = der.slice(12);
  } else {
    raw = unb64u(t.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, ""));
  }
  if (raw.length !== 32) throw new KeyFormatError("an X25519 public key has 32 bytes");
  return raw;
}

export async function keyId(publicRaw: Bytes): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", publicRaw));
  return "x25519:" + b64u(digest).slice(0, 16);
}

/** Seal a JSON object to one executor public key: the secret's fields as strings, and
 * ``endpoints``, where the executor may present them (executor/secrets.py, executor/binding.py). */
export async function seal(publicRaw: Bytes, secret: Record<string, string | unknown[]>): Promise<Envelope> {
  const recipient = await crypto.subtle.importKey("raw", publicRaw, { name: "X25519" }, false, []);
  const eph = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const epk = new Uint8Array(await crypto.subtle.exportKey("raw", eph.publicKey));
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: recipient }, eph.privateKey, 256);
  const hkdfKey = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const aesKey = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: concat(epk, publicRaw), info: INFO },
    hkdfKey,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt"],
  );
  const kid = await keyId(publicRaw);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const plaintext = new TextEncoder().encode(JSON.stringify(secret));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: new TextEncoder().encode(AAD_PREFIX + kid), tagLength: 128 },
      aesKey,
      plaintext,
    ),
  );
  plaintext.fill(0); // best effort: do not leave the secret's bytes in a buffer we own
  return { v: 1, alg: ALG, kid, epk: b64u(epk), nonce: b64u(nonce), ct: b64u(ct) };
}
