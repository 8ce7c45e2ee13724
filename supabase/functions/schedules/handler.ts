// schedules: save job schedules and fire the due ones, both through create-job's own checks.
//
// POST {action: "save", id?, site_id, name, job_type, params, recurrence, priority?,
//       description?, timezone?, missed_policy?, enabled?, window_series_id?}  -- operators.
// The only way a schedule's template is written (migration
// 20261209160000_schedules_saved_through_function.sql: no direct INSERT, and no UPDATE of
// job_type, params, site_id or window_series_id, through /rest/v1). Runs create-job's request
// checks (checkRequest: the params against their job type's schema, prototype keys; then, as
// the caller, checkStoredRequest: the targets exist, are visible and belong to site_id, and
// the credential sets the params name are of that site) and checks the window series is of
// the site; not the executor-availability and window checks, which each occurrence makes
// when it fires. Then public.functions_save_schedule writes the row with the caller as its
// owner. Without id a new schedule (201); with id that schedule of site_id is rewritten, with
// the optional fields it does not give kept (200). Answers {schedule: <row>}.
//
// POST {action: "fire", site_id?, max?}  -- service role only (the site's executors call it on
// their poll loop; hosted projects may also call it from pg_cron + pg_net). Answers
// {fired: [{schedule_id, occurrence_at, status, job_id?, code?, error?}]}.
//
// Each due schedule is fired in ONE transaction (see migration 20261206200200_job_schedules.sql):
// take the row (FOR UPDATE SKIP LOCKED), decide missed/overlap, then as the schedule's owner
// (role authenticated with the owner's claims) run checkRequest + planJob + insertJob exactly
// as create-job does (functions_create_job re-checks the owner's operator role), record the
// occurrence and move next_run_at on. Two callers never fire one occurrence twice; a crash
// before the commit leaves the occurrence due for the next caller.

import { actionOf, checkBody, guard, json, notFound, readJsonObject, requireMethod, unprocessable }
  from "../_shared/api.ts";
import { bearerToken, unverifiedClaims } from "../_shared/auth.ts";
import { appRole, asCaller, type Caller, callerOf, sql, type Tx } from "../_shared/db.ts";
import { HttpError } from "../_shared/http.ts";
import { checkRequest, checkStoredRequest, insertJob, planJob } from "../_shared/jobs.ts";
import { requireRole } from "../_shared/policy.ts";
import type { AppRole } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";

/** An occurrence later than this (seconds) was missed: its schedule's missed_policy applies. */
export const MISSED_AFTER_S = 300;
const MAX_PER_CALL = 50; // schedules fired per request (count)
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Schedule {
  id: string;
  site_id: string;
  name: string;
  job_type: string;
  params: Record<string, unknown>;
  priority: number;
  description: string;
  missed_policy: "skip" | "run_once";
  owner_id: string | null;
  window_series_id: string | null;
  next_run_at: Date;
  last_job_id: string | null;
}

export interface Fired {
  schedule_id: string;
  occurrence_at: string;
  status: "created" | "skipped_running" | "missed" | "failed";
  job_id?: string;
  code?: string;
  error?: string;
}

async function verifyHs256(token: string, secret: string): Promise<boolean> {
  const [h, p, s] = token.split(".");
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" },
    false, ["verify"]);
  try {
    const b64 = s.replaceAll("-", "+").replaceAll("_", "/");
    const sig = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return await crypto.subtle.verify("HMAC", key, sig, new TextEncoder().encode(`${h}.${p}`));
  } catch {
    return false;
  }
}

/** HttpError 401/403 unless the request carries the service role's key. */
export async function requireServiceRole(req: Request): Promise<void> {
  const token = bearerToken(req);
  if (!token) throw new HttpError(401, "unauthorized", "the service role's key is required");
  const claims = unverifiedClaims(token);
  const secret = Deno.env.get("SUPABASE_JWT_SECRET");
  if (secret && !(await verifyHs256(token, secret))) {
    throw new HttpError(401, "unauthorized", "the token's signature is invalid");
  }
  if (claims.role !== "service_role") {
    throw new HttpError(403, "forbidden", "schedules are fired by the executors (service role), not by users");
  }
}

async function fireOne(siteId: string | null, now: Date): Promise<Fired | null> {
  return await sql().begin(async (tx: Tx) => {
    await tx`select set_config('role', 'service_role', true), set_config('statement_timeout', '10000', true)`;
    const [s] = await tx<Schedule[]>`select * from public.schedules_take_due(${siteId}::uuid)`;
    if (!s) return null;
    const occurrence = s.next_run_at;
    const record = async (f: Omit<Fired, "schedule_id" | "occurrence_at">): Promise<Fired> => {
      await tx`select set_config('role', 'service_role', true)`;
      await tx`select public.schedule_record_run(${s.id}::uuid, ${occurrence}::timestamptz, ${f.status},
                                                 ${f.job_id ?? null}::uuid, ${f.code ?? null}, ${f.error ?? null})`;
      return { schedule_id: s.id, occurrence_at: occurrence.toISOString(), ...f };
    };
    const late = (now.getTime() - occurrence.getTime()) / 1000;
    if (late > MISSED_AFTER_S && s.missed_policy === "skip") {
      return await record({ status: "missed", code: "missed", error: `due ${Math.round(late)} s ago; missed_policy skip` });
    }
    if (s.last_job_id) {
      const [last] = await tx<{ status: string }[]>`select status::text from public.jobs where id = ${s.last_job_id}`;
      if (last && ["pending", "running", "paused"].includes(last.status)) {
        return await record({
          status: "skipped_running",
          code: "previous_job_unfinished",
          error: `the previous job ${s.last_job_id} is still ${last.status}`,
        });
      }
    }
    if (!s.owner_id) {
      return await record({ status: "failed", code: "no_owner", error: "the schedule has no owner; an operator saves it" });
    }
    // a schedule that names a window series: its job takes the series' occurrence that
    // contains this occurrence, or else the next one (migration 20261207120000); create-job's
    // window rules then decide, and the claim re-checks the window on the locked row
    let windowId: string | null = null;
    if (s.window_series_id) {
      const [w] = await tx<{ id: string }[]>`
        select id from public.maintenance_windows
         where series_id = ${s.window_series_id}::uuid and status in ('requested', 'approved')
           and ends_at > greatest(${occurrence}::timestamptz, now())
         order by starts_at limit 1`;
      if (!w) {
        return await record({
          status: "failed",
          code: "window_required",
          error: "the schedule's window series has no occurrence ahead",
        });
      }
      windowId = w.id;
    }
    const claims = { sub: s.owner_id, role: "authenticated", aud: "authenticated", schedule_id: s.id };
    try {
      const jobId = await tx.savepoint(async (sp) => {
        await sp`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${
          JSON.stringify(claims)
        }, true)`;
        const [r] = await sp`select public.current_app_role()::text as role`;
        requireRole((r?.role ?? null) as AppRole | null, "create-job", "create");
        const request = checkRequest({
          type: s.job_type,
          params: s.params,
          site_id: s.site_id,
          priority: s.priority,
          description: (s.description || `scheduled: ${s.name}`).slice(0, 2000),
          ...(windowId ? { maintenance_window_id: windowId } : {}),
        });
        const plan = await planJob(sp as unknown as Tx, request, now);
        return await insertJob(sp as unknown as Tx, plan, { schedule_id: s.id, occurrence_at: occurrence.toISOString() });
      });
      return await record({ status: "created", job_id: jobId });
    } catch (e) {
      if (e instanceof HttpError) return await record({ status: "failed", code: e.code, error: e.message });
      // functions_create_job's own refusals (window_*, forbidden) arrive as database errors;
      // the savepoint is rolled back and the occurrence is recorded as failed, not retried
      const pg = e as { name?: string; code?: string; message?: string };
      if (pg?.name === "PostgresError") {
        return await record({ status: "failed", code: String(pg.code ?? "db_error"), error: String(pg.message ?? "") });
      }
      throw e;
    }
  });
}

const UUID_S = { type: "string", format: "uuid" };

/** The save request: a schedule's whole template (id: the schedule to rewrite). */
export const SAVE_SCHEMA: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "site_id", "name", "job_type", "params", "recurrence"],
  properties: {
    action: { const: "save" },
    id: UUID_S,
    site_id: UUID_S,
    name: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$" },
    job_type: { type: "string", maxLength: 64 },
    params: { type: "object" },
    recurrence: { type: "string", minLength: 5, maxLength: 200 },
    priority: { type: "integer", minimum: 0, maximum: 100 },
    description: { type: "string", maxLength: 2000 },
    timezone: { type: "string", minLength: 1, maxLength: 64 },
    missed_policy: { enum: ["skip", "run_once"] },
    enabled: { type: "boolean" },
    window_series_id: { anyOf: [UUID_S, { type: "null" }] },
  },
};

interface SaveBody {
  id?: string;
  site_id: string;
  name: string;
  job_type: string;
  params: Record<string, unknown>;
  recurrence: string;
  priority?: number;
  description?: string;
  timezone?: string;
  missed_policy?: "skip" | "run_once";
  enabled?: boolean;
  window_series_id?: string | null;
}

interface StoredTemplate {
  site_id: string;
  priority: number;
  description: string;
  timezone: string;
  missed_policy: "skip" | "run_once";
  enabled: boolean;
  window_series_id: string | null;
}

// a new schedule's optional fields: the column defaults of public.job_schedules
// (20261206200200_job_schedules.sql; tests/integration/test_hostile_review.py compares them)
const SAVE_DEFAULTS: Omit<StoredTemplate, "site_id"> = {
  priority: 40,
  description: "",
  timezone: "UTC",
  missed_policy: "skip",
  enabled: true,
  window_series_id: null,
};

async function save(caller: Caller, raw: Record<string, unknown>): Promise<Response> {
  const b = checkBody<SaveBody>(SAVE_SCHEMA, raw, "schedule");
  const siteId = b.site_id.toLowerCase();
  const id = b.id ? b.id.toLowerCase() : null;
  // create-job's structural checks (the params against the job type's schema, prototype
  // keys), before any database work; priority and description are SAVE_SCHEMA's
  const request = checkRequest({ type: b.job_type, params: b.params, site_id: siteId });
  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "schedules", "save");
    const [site] = await tx`select id from public.sites where id = ${siteId}`;
    if (!site) throw unprocessable("site_not_found", "the site does not exist or is not visible to you");
    let base: Omit<StoredTemplate, "site_id"> = SAVE_DEFAULTS;
    if (id) {
      const [old] = await tx<StoredTemplate[]>`
        select site_id, priority, description, timezone, missed_policy, enabled, window_series_id
          from public.job_schedules where id = ${id}`;
      if (!old || old.site_id !== siteId) throw notFound("schedule_not_found", "the site has no such schedule");
      base = old;
    }
    const t = {
      priority: b.priority ?? base.priority,
      description: b.description ?? base.description,
      timezone: b.timezone ?? base.timezone,
      missed_policy: b.missed_policy ?? base.missed_policy,
      enabled: b.enabled ?? base.enabled,
      window_series_id: b.window_series_id === undefined
        ? base.window_series_id
        : (b.window_series_id?.toLowerCase() ?? null),
    };
    // create-job's checks of the targets, against the schedule's site, without the moment's
    // (executor, window, cluster): a template create-job would refuse is never stored
    await checkStoredRequest(tx, request);
    if (t.window_series_id) {
      const [w] = await tx<{ site_id: string }[]>`
        select site_id from public.maintenance_window_series where id = ${t.window_series_id}`;
      if (!w) throw unprocessable("window_series_not_found", "the window series does not exist or is not visible to you");
      if (w.site_id !== siteId) throw unprocessable("window_series_wrong_site", "the window series belongs to another site");
    }
    // the one write (service role only; the caller's claims stay set, so it checks the
    // operator role and makes the caller the owner), then back to the caller
    await tx`select set_config('role', 'service_role', true)`;
    const [w] = await tx<{ id: string }[]>`
      select public.functions_save_schedule(
        ${id}::uuid, ${siteId}::uuid, ${b.name}, ${request.type}::public.job_type,
        ${tx.json(request.params as never)}, ${t.priority}::smallint, ${t.description}, ${b.recurrence.trim()},
        ${t.timezone}, ${t.missed_policy}, ${t.enabled}, ${t.window_series_id}::uuid) as id`;
    await tx`select set_config('role', 'authenticated', true)`;
    const [row] = await tx`select * from public.job_schedules where id = ${w.id}`;
    return json({ schedule: row }, id ? 200 : 201);
  });
}

export const handler = guard("schedules", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const token = bearerToken(req);
  let isService = false;
  try {
    isService = token !== null && unverifiedClaims(token).role === "service_role";
  } catch {
    isService = false; // not a JWT: callerOf answers 401
  }
  // users save; the service role (the executors) fires. Who the caller is decides before
  // anything is read, so no body reaches a check its caller may not make.
  if (!isService) {
    const caller = await callerOf(req);
    const raw = await readJsonObject(req);
    if (raw.action === "fire") {
      throw new HttpError(403, "forbidden", "schedules are fired by the executors (service role), not by users");
    }
    actionOf(raw, ["save"]);
    return await save(caller, raw);
  }
  await requireServiceRole(req);
  const body = await readJsonObject(req);
  if (body.action !== "fire") throw new HttpError(400, "unknown_action", "the service role fires schedules: action fire");
  const siteId = typeof body.site_id === "string" ? body.site_id : null;
  if (siteId !== null && !UUID.test(siteId)) throw new HttpError(400, "invalid_request", "site_id must be a uuid");
  const max = typeof body.max === "number" && body.max >= 1 ? Math.min(body.max, MAX_PER_CALL) : MAX_PER_CALL;
  // roll the recurring maintenance windows' horizon forward (each series at most every 10 min)
  await sql().begin(async (tx: Tx) => {
    await tx`select set_config('role', 'service_role', true)`;
    await tx`select public.window_series_sync_due(${siteId}::uuid)`;
  });
  const fired: Fired[] = [];
  for (let i = 0; i < max; i++) {
    const f = await fireOne(siteId, new Date());
    if (!f) break;
    fired.push(f);
  }
  return json({ fired });
});
