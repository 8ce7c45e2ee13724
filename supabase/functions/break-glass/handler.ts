// break-glass: emergency sign-in that needs neither the directory nor an executor.
//
// POST {action: "sign_in", account, secret, reason, ttl_seconds?}
//   -> 200 {session, role, expires_at, breakglass_session_id}
//
// Called with the anon key. The account's secret (long, random, handed out once at
// provisioning) is checked against its scrypt hash here, in memory; the database only ever
// holds the hash. The account row stays locked while one attempt is checked, so parallel
// guesses queue; every failure counts, and identity_policy.breakglass_max_failures of them
// from one client address lock that address out of that account name for
// breakglass_lockout_s (breakglass_lockouts: a guesser locks out only itself, and unknown
// names lock the same way, so a 423 reveals nothing); an address over
// breakglass_failures_per_client failures across all names is refused (429) before any
// hash is computed. A reason is required. Success issues a normal
// session that carries the account's role only while its breakglass_sessions grant is live
// (current_app_role()), whose auth session cannot be refreshed past expires_at, and that is
// audited as critical and announced on every enabled notification channel
// (breakglass_grant). Admins list sessions (breakglass_sessions) and end one with
// revoke_breakglass_session.

import { scrypt, timingSafeEqual } from "node:crypto";
import { checkBody, guard, json, readJsonObject, requireMethod } from "../_shared/api.ts";
import { sql } from "../_shared/db.ts";
import { unb64u } from "../_shared/envelope.ts";
import { HttpError } from "../_shared/http.ts";
import { clientOf, issueSession, sessionIdOf } from "../_shared/identity.ts";
import type { Schema } from "../_shared/validate.ts";

const MAX_BODY_BYTES = 8 * 1024;
const MAX_SCRYPT_N = 1 << 20; // refuse hashes that would cost more than this work factor
const DUMMY_HASH = // a hash of nothing anyone knows: unknown accounts cost the same time as known ones
  "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

const SIGN_IN: Schema = {
  type: "object", additionalProperties: false, required: ["action", "account", "secret", "reason"],
  properties: {
    action: { const: "sign_in" },
    account: { type: "string", minLength: 1, maxLength: 64 },
    secret: { type: "string", minLength: 1, maxLength: 512 },
    reason: { type: "string", minLength: 10, maxLength: 2000 },
    ttl_seconds: { type: "integer", minimum: 1, maximum: 14400 },
  },
};

function scryptAsync(secret: string, salt: Uint8Array, n: number, r: number, p: number, len: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, len, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(new Uint8Array(key)))
  );
}

/** True when ``secret`` matches ``stored`` (scrypt$N$r$p$salt$hash, base64url fields). */
export async function checkSecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [n, r, p] = parts.slice(1, 4).map(Number);
  if (!Number.isInteger(n) || n < 2 || n > MAX_SCRYPT_N || (n & (n - 1)) !== 0 || !(r >= 1 && r <= 32) || !(p >= 1 && p <= 16)) {
    return false;
  }
  const salt = unb64u(parts[4]);
  const want = unb64u(parts[5]);
  const got = await scryptAsync(secret, salt, n, r, p, want.length);
  return got.length === want.length && timingSafeEqual(got, want);
}

interface Account {
  id: string;
  name: string;
  user_id: string;
  secret_hash: string;
  locked_until: Date | null;
  disabled_at: Date | null;
  email: string | null;
}

type Outcome =
  | { ok: true; body: Record<string, unknown> }
  | { ok: false; error: HttpError };

export const handler = guard("break-glass", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const raw = await readJsonObject(req, MAX_BODY_BYTES);
  const b = checkBody<{ account: string; secret: string; reason: string; ttl_seconds?: number }>(
    SIGN_IN, raw, "break-glass sign_in");
  if (b.reason.trim().length < 10) {
    throw new HttpError(400, "reason_required", "say why you need break-glass access (at least 10 characters)");
  }
  const client = clientOf(req);
  const refused = (status: number, code: string, message: string, details: unknown = null): Outcome =>
    ({ ok: false, error: new HttpError(status, code, message, details) });

  // An address that failed identity_policy.breakglass_failures_per_client times over all
  // names within the lockout window is refused before any scrypt is computed: a guesser
  // that changes the name every time would otherwise keep the function's CPU and memory busy.
  const [{ busy }] = await sql()<{ busy: boolean }[]>`select public.breakglass_client_busy(${client}) as busy`;
  if (busy) {
    await sql()`select public.idm_audit('breakglass.rate_limited', 'breakglass_accounts', ${b.account.slice(0, 64)},
                 ${sql().json({ severity: "high", name: b.account.slice(0, 64), client })},
                 'break-glass attempt from an address over its failure cap')`;
    throw new HttpError(429, "rate_limited", "too many failed break-glass attempts from this address; try again later");
  }

  // One transaction per attempt, holding the account's row (and the client's count row):
  // the failure count is exact.
  const outcome = await sql().begin(async (tx): Promise<Outcome> => {
    const [acc] = await tx<Account[]>`
      select a.id, a.name, a.user_id, a.secret_hash, a.locked_until, a.disabled_at, u.email
        from public.breakglass_accounts a join auth.users u on u.id = a.user_id
       where a.name = ${b.account} for update of a`;
    // The lockout is per (account name, client address), for unknown names alike: a guesser
    // locks out only itself, and a lockout says nothing about whether the account exists.
    const [{ locked_until: lockedUntil }] = await tx<{ locked_until: Date | null }[]>`
      select public.breakglass_client_locked(${b.account}, ${client}) as locked_until`;
    if (lockedUntil) {
      await tx`select public.idm_audit('breakglass.locked_out', 'breakglass_accounts', ${acc?.id ?? b.account},
                 ${tx.json({ severity: "high", name: b.account.slice(0, 64), client, locked_until: lockedUntil })},
                 'break-glass attempt from a locked-out client')`;
      return refused(423, "locked", "too many failed break-glass attempts from this address; try again later",
        { locked_until: lockedUntil });
    }
    const good = await checkSecret(b.secret, acc?.secret_hash ?? DUMMY_HASH);
    if (!acc || !good || acc.disabled_at) {
      const [{ locked_until }] = await tx<{ locked_until: Date | null }[]>`
        select public.breakglass_failed(${b.account}, ${client}) as locked_until`;
      if (locked_until && new Date(locked_until).getTime() > Date.now()) {
        return refused(423, "locked", "too many failed break-glass attempts from this address; try again later",
          { locked_until });
      }
      return refused(401, "invalid_credentials", "unknown break-glass account or wrong secret");
    }
    if (!acc.email) return refused(500, "account_broken", "the break-glass account has no auth user; re-provision it");
    await tx`select public.breakglass_client_cleared(${b.account}, ${client})`;
    const session = await issueSession(acc.email);
    const [grant] = await tx<{ id: string; role: string; expires_at: Date }[]>`
      select (g).id, (g).role::text as role, (g).expires_at
        from (select public.breakglass_grant(${acc.id}, ${sessionIdOf(session.access_token)}, ${b.reason},
                                             ${b.ttl_seconds ?? null}, ${client}) as g) x`;
    return {
      ok: true,
      body: {
        session, role: grant.role, expires_at: grant.expires_at, breakglass_session_id: grant.id,
        warning: "break-glass access is audited as critical and every notification channel has been told",
      },
    };
  });
  if (!outcome.ok) throw outcome.error;
  return json(outcome.body);
});
