// idm-login: directory (IDM/LDAP) sign-in. Called with the project's anon key (nobody is
// signed in yet); answers a normal Supabase session. docs/identity.md has the design.
//
// POST {action: "config", site}                      -> {site_id, mode}
//   Which path the site uses (public_config only: no URIs, no mapping).
// POST {action: "login", site, username, password}   -> {session, role, via: "direct"}
//   Direct path (directory_configs.mode = 'direct'): this function binds over LDAPS or
//   StartTLS itself. Refused for an executor-mode site: there the password must not reach
//   the control plane.
// POST {action: "begin", site}                       -> {request_id, challenge, key_id, public_key, expires_at}
// POST {action: "complete", request_id, envelope}    -> {session, role, via: "executor"}
//   Executor path: the console seals {username, password, challenge} to the executor key
//   "begin" named (the envelope of executor/secrets.py); "complete" stores the envelope
//   with this instance's ephemeral X25519 public key, waits for the executor's answer
//   (Realtime wakes it), checks the answer's MAC against the registered executor key, and
//   the challenge, request and site it names. A request is submitted once, answered once and
//   consumed once, and expires after directory_configs.request_ttl_s.
//
// Either way the groups are mapped to a role in SQL (idm_record_sign_in: highest mapped
// role; none -> refused), the auth user is provisioned through the Auth admin API, and the
// session comes from Auth (see _shared/identity.ts). Groups a caller sends are never read:
// they come from this function's own bind or from the MAC'd executor answer.

import { actionOf, badRequest, checkBody, guard, json, readJsonObject, requireMethod } from "../_shared/api.ts";
import { sql } from "../_shared/db.ts";
import { parsePublicKey } from "../_shared/envelope.ts";
import { HttpError } from "../_shared/http.ts";
import { clientOf, issueSession, newVerifier, provisionUser, verifyAnswer } from "../_shared/identity.ts";
import { type DirectoryConfig, DirectoryError, directorySignIn, type DirectoryUser } from "../_shared/ldap.ts";
import type { Schema } from "../_shared/validate.ts";

const ACTIONS = ["config", "login", "begin", "complete"] as const;
const MAX_BODY_BYTES = 16 * 1024; // a sign-in is small
const POLL_MS = 25; // first wait between looks for the executor's answer (milliseconds)
const POLL_MAX_MS = 250; // the wait grows to this while the executor is slow (milliseconds)
const SITE = { type: "string", minLength: 1, maxLength: 128 };

const CONFIG: Schema = {
  type: "object", additionalProperties: false, required: ["action", "site"],
  properties: { action: { const: "config" }, site: SITE },
};
const LOGIN: Schema = {
  type: "object", additionalProperties: false, required: ["action", "site", "username", "password"],
  properties: {
    action: { const: "login" }, site: SITE,
    username: { type: "string", minLength: 1, maxLength: 256 },
    password: { type: "string", minLength: 1, maxLength: 1024 },
  },
};
const BEGIN: Schema = {
  type: "object", additionalProperties: false, required: ["action", "site"],
  properties: { action: { const: "begin" }, site: SITE },
};
const COMPLETE: Schema = {
  type: "object", additionalProperties: false, required: ["action", "request_id", "envelope"],
  properties: {
    action: { const: "complete" }, request_id: { type: "string", format: "uuid" },
    envelope: { type: "object" },
  },
};

const DIRECTORY_STATUS: Record<string, [number, string]> = {
  invalid_credentials: [401, "invalid username or password"],
  account_locked: [403, "the directory account is locked"],
  account_disabled: [403, "the directory account is disabled"],
  user_not_found: [401, "invalid username or password"],
  directory_unreachable: [503, "the directory cannot be reached; try again, or use break-glass access in an emergency"],
  directory_error: [502, "the directory refused the request"],
  bad_request: [400, "the sign-in request could not be read by the executor"],
  stale_request: [409, "the sign-in request is stale or was replayed; start again"],
};

// A wrong password, a locked, disabled or unknown account: counted per (site, client address);
// identity_policy.sign_in_failures_per_client_per_min of them in a minute and that address
// is refused (429) on that site, before any bind, until the minute is over
// (20261206170100_identity.sql). The right password of a user in no mapped group
// is not a guess and is not counted.
const CREDENTIAL_FAILURES = new Set(["invalid_credentials", "account_locked", "account_disabled", "user_not_found"]);

async function refuseIfLimited(siteId: string, client: string): Promise<void> {
  const [row] = await sql()<{ limited: boolean }[]>`select public.idm_client_limited(${siteId}, ${client}) as limited`;
  if (row?.limited) {
    throw new HttpError(429, "rate_limited", "too many failed sign-ins from this address; try again in a minute");
  }
}

async function countFailure(siteId: string, client: string, username: string | null, code: string,
                            via: "direct" | "executor"): Promise<void> {
  if (!CREDENTIAL_FAILURES.has(code)) return;
  await sql()`select public.idm_client_failed(${siteId}, ${client}, ${username}, ${code}, ${via})`;
}

function directoryError(code: string): HttpError {
  const [status, message] = DIRECTORY_STATUS[code] ?? [502, "the directory refused the request"];
  return new HttpError(status, code in DIRECTORY_STATUS ? code : "directory_error", message);
}

interface ConfigRow extends DirectoryConfig {
  site_id: string;
  mode: "direct" | "executor";
  enabled: boolean;
}

async function siteConfig(site: string): Promise<ConfigRow> {
  const [row] = await sql()<ConfigRow[]>`
    select c.* from public.sites s join public.directory_configs c on c.site_id = s.id
     where (s.name = ${site} or s.id::text = ${site.toLowerCase()}) and c.enabled`;
  if (!row) throw new HttpError(404, "not_configured", "directory sign-in is not configured for this site");
  return row;
}

function synthesizedEmail(subject: string): Promise<string> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(subject.toLowerCase())).then((d) =>
    `idm-${[...new Uint8Array(d)].slice(0, 10).map((b) => b.toString(16).padStart(2, "0")).join("")}@idm.rackpilot.invalid`
  );
}

/** Map, provision, record and issue: the end of both paths. */
async function finish(siteId: string, who: DirectoryUser, via: "direct" | "executor"): Promise<Response> {
  const db = sql();
  const [existing] = await db<{ user_id: string; email: string | null }[]>`
    select d.user_id, u.email from public.directory_identities d join auth.users u on u.id = d.user_id
     where d.subject = public.idm_norm_dn(${who.subject})`;
  const [{ role: mapped }] = await db<{ role: string | null }[]>`
    select public.idm_role_for_groups(${siteId}, ${who.groups}::text[])::text as role`;
  if (!mapped) {
    if (existing) {
      // takes away the role an earlier sign-in gave, and ends the user's sessions
      await db`select public.idm_record_sign_in(${existing.user_id}, ${siteId}, ${who.subject}, ${who.username},
                                                ${who.groups}::text[], ${via})`;
    } else {
      await db`select public.idm_audit('idm.sign_in_refused', 'directory_identities', null,
                 ${db.json({ username: who.username, site_id: siteId, via, reason: "no_mapped_group" })}, null)`;
    }
    throw new HttpError(403, "no_mapped_group",
      "your directory account is in no group that maps to a rackpilot role; ask an admin");
  }
  const email = existing?.email || who.email?.toLowerCase() || await synthesizedEmail(who.subject);
  const userId = await provisionUser(existing?.user_id ?? null, email,
    { provider: "rackpilot-idm", site_id: siteId }, { username: who.username, display_name: who.display_name });
  const [{ role }] = await db<{ role: string | null }[]>`
    select public.idm_record_sign_in(${userId}, ${siteId}, ${who.subject}, ${who.username}, ${who.groups}::text[],
                                     ${via})::text as role`;
  if (!role) throw new HttpError(403, "no_mapped_group", "your directory account is in no group that maps to a rackpilot role");
  const session = await issueSession(email);
  return json({ session, role, via, username: who.username });
}

async function waitForAnswer(requestId: string, deadline: number) {
  const db = sql();
  let pause = POLL_MS;
  while (true) {
    const rows = await db<{ answer: string; answer_mac: string; public_key: string; key_id: string; challenge: string;
      site_id: string }[]>`select * from public.idm_take_answer(${requestId})`;
    if (rows.length) return rows[0];
    if (Date.now() > deadline) throw directoryError("stale_request");
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(POLL_MAX_MS, Math.round(pause * 1.25));
  }
}

export const handler = guard("idm-login", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const raw = await readJsonObject(req, MAX_BODY_BYTES);
  const action = actionOf(raw, ACTIONS);

  if (action === "config") {
    const b = checkBody<{ site: string }>(CONFIG, raw, "idm-login config");
    const cfg = await siteConfig(b.site);
    return json({ site_id: cfg.site_id, mode: cfg.mode });
  }

  if (action === "login") {
    const b = checkBody<{ site: string; username: string; password: string }>(LOGIN, raw, "idm-login login");
    const cfg = await siteConfig(b.site);
    if (cfg.mode !== "direct") {
      throw badRequest("wrong_path",
        "this site signs in through its executor: seal the password to the executor's key (begin, complete)");
    }
    const client = clientOf(req);
    await refuseIfLimited(cfg.site_id, client);
    let who: DirectoryUser;
    try {
      who = await directorySignIn(cfg, b.username, b.password);
    } catch (err) {
      if (err instanceof DirectoryError) {
        await countFailure(cfg.site_id, client, b.username, err.code, "direct");
        throw directoryError(err.code);
      }
      throw err;
    }
    return await finish(cfg.site_id, who, "direct");
  }

  if (action === "begin") {
    const b = checkBody<{ site: string }>(BEGIN, raw, "idm-login begin");
    const cfg = await siteConfig(b.site);
    if (cfg.mode !== "executor") throw badRequest("wrong_path", "this site signs in directly: use action login");
    await refuseIfLimited(cfg.site_id, clientOf(req));
    const [row] = await sql()`select * from public.idm_begin_login(${cfg.site_id}, ${clientOf(req)})`;
    return json({
      request_id: row.request_id, challenge: row.challenge, executor_id: row.executor_id, key_id: row.key_id,
      public_key: row.public_key, expires_at: row.expires_at,
    });
  }

  // complete
  const b = checkBody<{ request_id: string; envelope: Record<string, unknown> }>(COMPLETE, raw, "idm-login complete");
  const requestId = b.request_id.toLowerCase();
  const verifier = await newVerifier();
  const [submitted] = await sql()<{ expires_at: Date; key_id: string }[]>`
    select expires_at, key_id from public.idm_submit_login(${requestId}, ${JSON.stringify(b.envelope)}, ${verifier.publicB64})`;
  if (b.envelope.kid !== submitted.key_id) {
    throw badRequest("wrong_key", "the envelope is not sealed to the key this request named");
  }
  const ans = await waitForAnswer(requestId, new Date(submitted.expires_at).getTime() + 1000);
  const ok = await verifyAnswer(verifier, parsePublicKey(ans.public_key), requestId, ans.answer, ans.answer_mac);
  if (!ok) {
    await sql()`select public.idm_audit('idm.forged_answer', 'idm_login_requests', ${requestId}, null,
                 'an executor answer failed its MAC check')`;
    throw new HttpError(502, "bad_signature", "the executor's answer failed verification; the sign-in was refused");
  }
  let answer: Record<string, unknown>;
  try {
    answer = JSON.parse(ans.answer);
  } catch {
    throw new HttpError(502, "bad_signature", "the executor's answer is not readable");
  }
  if (answer.request_id !== requestId || answer.challenge !== ans.challenge || answer.site_id !== ans.site_id) {
    throw new HttpError(502, "bad_signature", "the executor's answer is for another request");
  }
  if (answer.ok !== true) {
    const code = String(answer.error ?? "directory_error");
    await countFailure(ans.site_id, clientOf(req), null, code, "executor");
    throw directoryError(code);
  }
  const groups = Array.isArray(answer.groups) ? answer.groups.filter((g): g is string => typeof g === "string") : [];
  if (typeof answer.subject !== "string" || typeof answer.username !== "string") {
    throw new HttpError(502, "bad_signature", "the executor's answer is incomplete");
  }
  return await finish(ans.site_id, {
    subject: answer.subject, username: answer.username,
    email: typeof answer.email === "string" ? answer.email : null,
    display_name: typeof answer.display_name === "string" ? answer.display_name : null,
    groups,
  }, "executor");
});
