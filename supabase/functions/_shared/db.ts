// Database access for rackpilot's edge functions: always AS THE CALLER.
//
// Choice: npm:postgres on SUPABASE_DB_URL, and inside every transaction
//   set_config('role', 'authenticated', true)            -- SET LOCAL ROLE
//   set_config('request.jwt.claims', <claims>, true)      -- what auth.uid()/auth.jwt() read
// rather than supabase-js with the caller's Authorization header. Why:
// - one operation = one transaction. create-job inserts a job and all of its tasks, and
//   resolve-blockers writes several resolutions and resumes the job; through PostgREST each
//   request is its own transaction, so a failure halfway would leave partial writes unless
//   every operation were pushed into an RPC. Here the function's own checks (targets,
//   site, safety policy) and its writes run in the same transaction and see one snapshot.
// - RLS still decides: statements run as `authenticated` with the caller's claims, so the
//   same policies that guard REST guard the functions, and auth.uid() is the caller.
// - SUPABASE_DB_URL is provided to edge functions by hosted Supabase, `supabase start`
//   and the local stack alike, so nothing here is local-only.
//
// The caller's token: the platform (hosted relay or the local gateway) verifies its
// signature because every rackpilot function has verify_jwt = true in config.toml. When
// SUPABASE_JWT_SECRET is present (local stack, self-hosting) the signature is verified
// here as well, as defence in depth. Either way the function then requires
// role=authenticated, a UUID `sub` and an unexpired `exp` before any claim reaches SQL.
//
// Nothing here bypasses RLS. The few writes a caller's role cannot make directly
// (audit rows, the executor-facing job state) go through SQL functions whose own checks
// run first; see supabase/migrations/*_functions_*.sql.

import postgres from "postgres";
import { bearerToken, unverifiedClaims } from "./auth.ts";
import { HttpError } from "./http.ts";
import { requireEnv } from "./env.ts";
import type { AppRole } from "./policy.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

export interface Caller {
  id: string; // auth.users.id
  email: string | null;
  claims: Record<string, unknown>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const STATEMENT_TIMEOUT_MS = 10_000; // one function's transaction may not run longer

const unauthorized = (msg: string) => new HttpError(401, "unauthorized", msg);

async function verifyHs256(token: string, secret: string): Promise<boolean> {
  const [h, p, s] = token.split(".");
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" },
    false, ["verify"]);
  let sig: Uint8Array<ArrayBuffer>;
  try {
    const b64 = s.replaceAll("-", "+").replaceAll("_", "/");
    sig = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  } catch {
    return false;
  }
  return crypto.subtle.verify("HMAC", key, sig, new TextEncoder().encode(`${h}.${p}`));
}

/** The signed-in user making the request; HttpError 401 for anything else. */
export async function callerOf(req: Request): Promise<Caller> {
  const token = bearerToken(req);
  if (!token) throw unauthorized("sign in: this function needs a user's access token");
  let claims: Record<string, unknown>;
  try {
    claims = unverifiedClaims(token);
  } catch {
    throw unauthorized("the bearer token is not a JWT");
  }
  const secret = Deno.env.get("SUPABASE_JWT_SECRET");
  if (secret && !(await verifyHs256(token, secret))) throw unauthorized("the access token's signature is invalid");
  if (claims.role !== "authenticated") throw unauthorized("sign in as a user: API keys cannot call this function");
  if (typeof claims.sub !== "string" || !UUID.test(claims.sub)) throw unauthorized("the access token has no user id");
  if (typeof claims.exp !== "number" || claims.exp * 1000 <= Date.now()) throw unauthorized("the access token has expired");
  return { id: claims.sub, email: typeof claims.email === "string" ? claims.email : null, claims };
}

let pool: Sql | null = null;

/** The shared connection pool (one per isolate). */
export function sql(): Sql {
  if (!pool) {
    pool = postgres(requireEnv("SUPABASE_DB_URL"), {
      max: 4,
      idle_timeout: 30,
      connect_timeout: 10,
      // Hosted projects may hand functions a transaction-mode pooler URL, which cannot
      // keep prepared statements across transactions; unnamed statements work everywhere.
      prepare: false,
      onnotice: () => {},
      // Values are never interpolated into SQL text: every query below is a tagged
      // template, which postgres.js sends as parameters.
      connection: { application_name: "rackpilot-functions" },
    });
  }
  return pool;
}

/** Run ``fn`` in one transaction as the caller (role authenticated + their JWT claims). */
export async function asCaller<T>(caller: Caller, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return await sql().begin(async (tx) => {
    await tx`select set_config('role', 'authenticated', true),
                    set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true),
                    set_config('statement_timeout', ${String(STATEMENT_TIMEOUT_MS)}, true)`;
    return await fn(tx);
  }) as T;
}

/** The caller's application role inside a transaction (null = none). */
export async function appRole(tx: Tx): Promise<AppRole | null> {
  const [row] = await tx`select public.current_app_role()::text as role`;
  return (row?.role ?? null) as AppRole | null;
}
