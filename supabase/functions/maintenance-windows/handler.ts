// maintenance-windows: request, approve, reject and cancel the windows risky jobs run in.
//
// POST {action: "create", site_id, cluster_id?, title, reason?, starts_at, ends_at}
// POST {action: "approve" | "reject" | "cancel", window_id, note?}
// - create (operator): the window lies in the future, lasts at most a week, its cluster
//   belongs to the site, and it overlaps no requested or approved window of the same
//   scope (a site-wide window shares its scope with every cluster of the site);
// - approve / reject (approver): four eyes — never the requester; approval is refused for
//   a window that has ended or that now overlaps an approved one;
// - cancel (the requester, or an approver).
//
// Recurring windows (a series; migration 20261207120000_window_series.sql):
// POST {action: "create_series", site_id, cluster_id?, title, reason?, recurrence, timezone?,
//       duration_minutes, horizon_days?}
// POST {action: "approve_series" | "reject_series" | "cancel_series", series_id, note?}
// - create_series (operator): the recurrence in the schedules' cron/RRULE subset and a time
//   zone Postgres knows; its occurrences within horizon_days appear at once as requested
//   maintenance windows (one overlapping a requested or approved window is left out) and
//   are answered;
// - each occurrence is then decided like any window (approve/reject/cancel with its
//   window_id: four eyes, per occurrence), or the whole series is:
// - approve_series (approver, never the series' requester): every open occurrence, and
//   every later one as the horizon rolls on, is approved in the approver's name;
//   reject_series (approver) and cancel_series (the requester, or an approver) cancel the
//   occurrences that have not started.
// Overlap checks hold the site's advisory lock, so two concurrent requests cannot both
// pass. Every request and decision is written to the audit log in the same transaction
// by the data model's audit triggers on maintenance_windows (actor = the caller).

import { actionOf, badRequest, checkBody, conflict, guard, json, notFound, readJsonObject, requireMethod, unprocessable }
  from "../_shared/api.ts";
import { appRole, asCaller, callerOf, type Tx } from "../_shared/db.ts";
import { HttpError } from "../_shared/http.ts";
import { overlaps, requireRole, roleAtLeast, sameScope, windowTimeProblems } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";

const ACTIONS = ["create", "approve", "reject", "cancel", "create_series", "approve_series", "reject_series",
  "cancel_series"] as const;
type Action = typeof ACTIONS[number];
const UUID = { type: "string", format: "uuid" };
const TS = { type: "string", format: "date-time" };

const CREATE: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "site_id", "title", "starts_at", "ends_at"],
  properties: {
    action: { const: "create" },
    site_id: UUID,
    cluster_id: { anyOf: [UUID, { type: "null" }] },
    title: { type: "string", minLength: 1, maxLength: 200 },
    reason: { type: "string", maxLength: 4000 },
    starts_at: TS,
    ends_at: TS,
  },
};
const DECIDE: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "window_id"],
  properties: {
    action: { enum: ["approve", "reject", "cancel"] },
    window_id: UUID,
    note: { type: "string", maxLength: 4000 },
  },
};

const CREATE_SERIES: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "site_id", "title", "recurrence", "duration_minutes"],
  properties: {
    action: { const: "create_series" },
    site_id: UUID,
    cluster_id: { anyOf: [UUID, { type: "null" }] },
    title: { type: "string", minLength: 1, maxLength: 200 },
    reason: { type: "string", maxLength: 4000 },
    recurrence: { type: "string", minLength: 5, maxLength: 200 },
    timezone: { type: "string", minLength: 1, maxLength: 64 },
    duration_minutes: { type: "integer", minimum: 1, maximum: 10080 },
    horizon_days: { type: "integer", minimum: 1, maximum: 90 },
  },
};
const DECIDE_SERIES: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "series_id"],
  properties: {
    action: { enum: ["approve_series", "reject_series", "cancel_series"] },
    series_id: UUID,
    note: { type: "string", maxLength: 4000 },
  },
};

interface SeriesRow {
  id: string;
  site_id: string;
  status: string;
  requested_by: string | null;
}

interface Occurrence {
  window_id: string;
  starts_at: Date;
  ends_at: Date;
  status: string;
  approved_by: string | null;
}

async function occurrences(tx: Tx, seriesId: string): Promise<Occurrence[]> {
  return await tx<Occurrence[]>`
    select id as window_id, starts_at, ends_at, status::text, approved_by from public.maintenance_windows
     where series_id = ${seriesId} order by starts_at`;
}

interface WindowRow {
  id: string;
  site_id: string;
  cluster_id: string | null;
  status: string;
  starts_at: Date;
  ends_at: Date;
  requested_by: string | null;
}

async function lockSite(tx: Tx, siteId: string) {
  await tx`select pg_advisory_xact_lock(hashtextextended(${"rackpilot:windows:" + siteId}, 0))`;
}

async function clashes(tx: Tx, w: Omit<WindowRow, "id" | "status" | "requested_by">, statuses: string[], except?: string) {
  const rows = await tx<WindowRow[]>`
    select id, site_id, cluster_id, status::text, starts_at, ends_at, requested_by
      from public.maintenance_windows
     where site_id = ${w.site_id} and status::text = any(${statuses}) and starts_at < ${w.ends_at} and ends_at > ${w.starts_at}
       and id is distinct from ${except ?? null}::uuid`;
  return rows.filter((r) => sameScope(r, w) && overlaps(r, w)).map((r) => ({ id: r.id, status: r.status, starts_at: r.starts_at, ends_at: r.ends_at }));
}

export const handler = guard("maintenance-windows", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const raw = await readJsonObject(req);
  const action = actionOf(raw, ACTIONS) as Action;
  const now = new Date();

  if (action === "create") {
    const b = checkBody<{ site_id: string; cluster_id?: string | null; title: string; reason?: string; starts_at: string; ends_at: string }>(
      CREATE, raw, "maintenance window");
    const w = {
      site_id: b.site_id.toLowerCase(),
      cluster_id: b.cluster_id ? b.cluster_id.toLowerCase() : null,
      starts_at: new Date(b.starts_at),
      ends_at: new Date(b.ends_at),
    };
    const problems = windowTimeProblems(w.starts_at, w.ends_at, now);
    if (problems.length) throw badRequest(problems[0].code, problems[0].message, { problems });
    return await asCaller(caller, async (tx) => {
      requireRole(await appRole(tx), "maintenance-windows", "create");
      const [site] = await tx`select id from public.sites where id = ${w.site_id}`;
      if (!site) throw unprocessable("site_not_found", "the site does not exist or is not visible to you");
      if (w.cluster_id) {
        const [c] = await tx<{ site_id: string }[]>`select site_id from public.clusters where id = ${w.cluster_id}`;
        if (!c) throw unprocessable("cluster_not_found", "the cluster does not exist or is not visible to you");
        if (c.site_id !== w.site_id) throw unprocessable("cluster_wrong_site", "the cluster belongs to another site");
      }
      await lockSite(tx, w.site_id);
      const clash = await clashes(tx, w, ["requested", "approved"]);
      if (clash.length) throw conflict("window_overlap", "another window of the same scope overlaps this one", { windows: clash });
      const [row] = await tx<{ id: string; status: string; requested_by: string }[]>`
        insert into public.maintenance_windows (site_id, cluster_id, title, reason, starts_at, ends_at)
        values (${w.site_id}, ${w.cluster_id}, ${b.title}, ${b.reason ?? ""}, ${w.starts_at}, ${w.ends_at})
        returning id, status::text, requested_by`;
      return json({ window_id: row.id, status: row.status, requested_by: row.requested_by }, 201);
    });
  }

  if (action === "create_series") {
    const b = checkBody<{
      site_id: string;
      cluster_id?: string | null;
      title: string;
      reason?: string;
      recurrence: string;
      timezone?: string;
      duration_minutes: number;
      horizon_days?: number;
    }>(CREATE_SERIES, raw, "maintenance window series");
    const siteId = b.site_id.toLowerCase();
    const clusterId = b.cluster_id ? b.cluster_id.toLowerCase() : null;
    return await asCaller(caller, async (tx) => {
      requireRole(await appRole(tx), "maintenance-windows", action);
      const [site] = await tx`select id from public.sites where id = ${siteId}`;
      if (!site) throw unprocessable("site_not_found", "the site does not exist or is not visible to you");
      if (clusterId) {
        const [c] = await tx<{ site_id: string }[]>`select site_id from public.clusters where id = ${clusterId}`;
        if (!c) throw unprocessable("cluster_not_found", "the cluster does not exist or is not visible to you");
        if (c.site_id !== siteId) throw unprocessable("cluster_wrong_site", "the cluster belongs to another site");
      }
      await lockSite(tx, siteId);
      // the series' guard checks the recurrence and time zone (invalid_argument, 400) and
      // sets the requester; its after-trigger materialises the occurrences
      const [row] = await tx<{ id: string; status: string; requested_by: string }[]>`
        insert into public.maintenance_window_series
               (site_id, cluster_id, title, reason, recurrence, timezone, duration_minutes, horizon_days)
        values (${siteId}, ${clusterId}, ${b.title}, ${b.reason ?? ""}, ${b.recurrence}, ${b.timezone ?? "UTC"},
                ${b.duration_minutes}, ${b.horizon_days ?? 14})
        returning id, status::text, requested_by`;
      return json({
        series_id: row.id,
        status: row.status,
        requested_by: row.requested_by,
        occurrences: await occurrences(tx, row.id),
      }, 201);
    });
  }

  if (action === "approve_series" || action === "reject_series" || action === "cancel_series") {
    const b = checkBody<{ series_id: string; note?: string }>(DECIDE_SERIES, raw, "maintenance window series decision");
    const seriesId = b.series_id.toLowerCase();
    return await asCaller(caller, async (tx) => {
      const role = await appRole(tx);
      requireRole(role, "maintenance-windows", action);
      const [found] = await tx<SeriesRow[]>`select site_id from public.maintenance_window_series where id = ${seriesId}`;
      if (!found) throw notFound("series_not_found", "the window series does not exist or is not visible to you");
      await lockSite(tx, found.site_id);
      const [s] = await tx<SeriesRow[]>`
        select id, site_id, status::text, requested_by from public.maintenance_window_series
         where id = ${seriesId} for update`;
      if (action === "cancel_series") {
        if (!["requested", "approved"].includes(s.status)) {
          throw conflict("series_not_active", `the window series is already ${s.status}`);
        }
        if (s.requested_by !== caller.id && !roleAtLeast(role, "approver")) {
          throw new HttpError(403, "forbidden", "only the requester or an approver may cancel a window series");
        }
      } else {
        if (s.status !== "requested") throw conflict("series_not_requested", `the window series is already ${s.status}`);
        if (s.requested_by === caller.id) {
          throw new HttpError(403, "four_eyes", "a window series is decided by an approver other than its requester");
        }
      }
      const status = { approve_series: "approved", reject_series: "rejected", cancel_series: "cancelled" }[action];
      // the series' after-trigger approves its open occurrences, or cancels those not started
      const [row] = await tx<{ status: string; approved_by: string | null; decided_at: Date }[]>`
        update public.maintenance_window_series set status = ${status}::public.window_status,
               decision_note = ${b.note ?? ""}
         where id = ${seriesId} returning status::text, approved_by, decided_at`;
      return json({
        series_id: seriesId,
        status: row.status,
        approved_by: row.approved_by,
        decided_at: row.decided_at,
        occurrences: await occurrences(tx, seriesId),
      });
    });
  }

  const b = checkBody<{ window_id: string; note?: string }>(DECIDE, raw, "maintenance window decision");
  const windowId = b.window_id.toLowerCase();
  return await asCaller(caller, async (tx) => {
    const role = await appRole(tx);
    requireRole(role, "maintenance-windows", action);
    const [found] = await tx<WindowRow[]>`select site_id from public.maintenance_windows where id = ${windowId}`;
    if (!found) throw notFound("window_not_found", "the maintenance window does not exist or is not visible to you");
    await lockSite(tx, found.site_id);
    const [w] = await tx<WindowRow[]>`
      select id, site_id, cluster_id, status::text, starts_at, ends_at, requested_by
        from public.maintenance_windows where id = ${windowId} for update`;

    if (action === "approve" || action === "reject") {
      if (w.status !== "requested") throw conflict("window_not_requested", `the window is already ${w.status}`);
      if (w.requested_by === caller.id) {
        throw new HttpError(403, "four_eyes", "a maintenance window is decided by an approver other than its requester");
      }
      if (action === "approve") {
        if (w.ends_at.getTime() <= now.getTime()) throw conflict("window_over", "the window has already ended");
        const clash = await clashes(tx, w, ["approved"], w.id);
        if (clash.length) throw conflict("window_overlap", "an approved window of the same scope overlaps this one", { windows: clash });
      }
    } else {
      if (!["requested", "approved"].includes(w.status)) throw conflict("window_not_active", `the window is already ${w.status}`);
      if (w.requested_by !== caller.id && !roleAtLeast(role, "approver")) {
        throw new HttpError(403, "forbidden", "only the requester or an approver may cancel a window");
      }
    }
    const status = { approve: "approved", reject: "rejected", cancel: "cancelled" }[action];
    const [row] = await tx<{ status: string; approved_by: string | null; decided_at: Date; series_id: string | null }[]>`
      update public.maintenance_windows set status = ${status}::public.window_status, decision_note = ${b.note ?? ""}
       where id = ${windowId} returning status::text, approved_by, decided_at, series_id`;
    return json({
      window_id: windowId,
      status: row.status,
      approved_by: row.approved_by,
      decided_at: row.decided_at,
      series_id: row.series_id,
    });
  });
});
