// Shared by idm-login and break-glass: issuing a normal Supabase session for a user this
// function has authenticated itself, and the executor path's answer check.
//
// Sessions: the user is provisioned (or updated) through the Auth admin API, a single-use
// magic-link token is generated for it (admin generate_link) and exchanged at once for a
// session (verify with token_hash). Nothing is e-mailed; the token never leaves this
// function. The result is the same session a password sign-in gives, so REST, Realtime,
// functions and refresh work unchanged.
//
// The executor's answer: the function makes an ephemeral X25519 key pair per request and
// stores only its public half with the request; the executor MACs its answer with
//   key = HKDF-SHA256(ikm = X25519(executor_private, verifier_public),
//                     salt = verifier_public || executor_public, info = "rackpilot-idm-answer-v1")
//   mac = HMAC-SHA256(key, "rackpilot-idm-answer-v1|" + request_id + "|" + answer)
// Only the holder of the registered executor key - or this function instance, which keeps
// the ephemeral private key in memory for the request's few seconds - can compute it.

import { createClient, type Session, type SupabaseClient } from "@supabase/supabase-js";
import { b64u, type Bytes, unb64u } from "./envelope.ts";
import { supabaseEnv } from "./env.ts";
import { HttpError } from "./http.ts";

export const ANSWER_INFO = "rackpilot-idm-answer-v1";

let admin: SupabaseClient | null = null;

function adminClient(): SupabaseClient {
  if (!admin) {
    const env = supabaseEnv();
    admin = createClient(env.url, env.serviceRoleKey, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    });
  }
  return admin;
}

function concat(a: Uint8Array, b: Uint8Array): Bytes {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

export interface Verifier {
  publicB64: string;
  privateKey: CryptoKey;
  publicRaw: Bytes;
}

export async function newVerifier(): Promise<Verifier> {
  const pair = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { publicB64: b64u(publicRaw), privateKey: pair.privateKey, publicRaw };
}

/** True when ``mac`` is the executor's MAC of ``answer`` for this request. */
export async function verifyAnswer(v: Verifier, executorPublic: Bytes, requestId: string, answer: string,
  mac: string): Promise<boolean> {
  let macBytes: Bytes;
  try {
    macBytes = unb64u(mac);
  } catch {
    return false;
  }
  const peer = await crypto.subtle.importKey("raw", executorPublic, { name: "X25519" }, false, []);
  const shared = await crypto.subtle.deriveBits({ name: "X25519", public: peer }, v.privateKey, 256);
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: concat(v.publicRaw, executorPublic), info: new TextEncoder().encode(ANSWER_INFO) },
    ikm, { name: "HMAC", hash: "SHA-256", length: 256 }, false, ["verify"]);
  return await crypto.subtle.verify("HMAC", key, macBytes,
    new TextEncoder().encode(`${ANSWER_INFO}|${requestId}|${answer}`));
}

export interface SessionOut {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  expires_at: number | undefined;
  token_type: string;
  user: Session["user"];
}

/** An auth user for ``email`` (created confirmed when missing) with these metadata. */
export async function provisionUser(existingId: string | null, email: string, appMeta: Record<string, unknown>,
  userMeta: Record<string, unknown>): Promise<string> {
  const a = adminClient().auth.admin;
  if (existingId) {
    const { error } = await a.updateUserById(existingId, { app_metadata: appMeta, user_metadata: userMeta });
    if (error) throw new HttpError(502, "auth_unavailable", "Auth refused to update the user", { code: error.code ?? null });
    return existingId;
  }
  const { data, error } = await a.createUser({ email, email_confirm: true, app_metadata: appMeta, user_metadata: userMeta });
  if (error || !data.user) {
    if (error?.code === "email_exists" || error?.status === 422) {
      throw new HttpError(409, "identity_conflict",
        "an account with this e-mail address exists and is not this directory entry; an admin must resolve it");
    }
    throw new HttpError(502, "auth_unavailable", "Auth refused to create the user", { code: error?.code ?? null });
  }
  return data.user.id;
}

/** A fresh session for the user with this e-mail address (see the header). */
export async function issueSession(email: string): Promise<SessionOut> {
  const { data, error } = await adminClient().auth.admin.generateLink({ type: "magiclink", email });
  if (error || !data?.properties?.hashed_token) {
    throw new HttpError(502, "auth_unavailable", "Auth could not issue a session", { code: error?.code ?? null });
  }
  const env = supabaseEnv();
  const anon = createClient(env.url, env.anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const verified = await anon.auth.verifyOtp({ token_hash: data.properties.hashed_token, type: "magiclink" });
  const s = verified.data.session;
  if (verified.error || !s) {
    throw new HttpError(502, "auth_unavailable", "Auth could not issue a session", { code: verified.error?.code ?? null });
  }
  return {
    access_token: s.access_token, refresh_token: s.refresh_token, expires_in: s.expires_in, expires_at: s.expires_at,
    token_type: s.token_type, user: s.user,
  };
}

/** The session id inside an access token this function just received from Auth. */
export function sessionIdOf(accessToken: string): string {
  const payload = accessToken.split(".")[1] ?? "";
  const claims = JSON.parse(new TextDecoder().decode(unb64u(payload)));
  if (typeof claims.session_id !== "string") throw new HttpError(502, "auth_unavailable", "the session has no id");
  return claims.session_id;
}

/** The client's address as the platform's proxy reports it: the LAST X-Forwarded-For entry,
 * the one the proxy appended (earlier entries are whatever the client sent). Used for audit
 * entries and the per-address sign-in limit, never to grant anything. */
export function clientOf(req: Request): string {
  const hops = (req.headers.get("x-forwarded-for") ?? "").split(",").map((h) => h.trim()).filter(Boolean);
  return (hops.at(-1) || req.headers.get("x-real-ip") || "unknown").slice(0, 64);
}
