// notification-settings (admin): where job and window events are sent.
//
// POST {action: "list", site_id?}
// POST {action: "upsert", settings: [{id?, site_id?, name, channel, target, events, job_types?, enabled?}]}
// POST {action: "delete", ids: [...]}
// channel "teams" and "webhook" take an https URL (a Teams incoming webhook URL for
// Teams); "email" takes one address per setting. events are the database's
// notification_event values (job_started, job_failed, window_requested, ...), read from
// the enum at request time so the function never drifts from the schema. Everything in one
// transaction as the caller; the table is admin-only under RLS, and changes are audited by
// the data model's triggers.

import { actionOf, badRequest, checkBody, guard, json, notFound, readJsonObject, requireMethod, unprocessable }
  from "../_shared/api.ts";
import { appRole, asCaller, callerOf, type Tx } from "../_shared/db.ts";
import { requireRole } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";

const ACTIONS = ["list", "upsert", "delete"] as const;
type Action = typeof ACTIONS[number];
const UUID = { type: "string", format: "uuid" };
const MAX_SETTINGS = 100; // settings written by one request

const SETTING: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["name", "channel", "target", "events"],
  properties: {
    id: UUID,
    site_id: { anyOf: [UUID, { type: "null" }] },
    name: { type: "string", minLength: 1, maxLength: 128 },
    channel: { enum: ["teams", "email", "webhook"] },
    target: { type: "string", minLength: 3, maxLength: 2048 },
    events: { type: "array", minItems: 1, maxItems: 32, uniqueItems: true, items: { type: "string", maxLength: 64 } },
    job_types: { anyOf: [{ type: "array", maxItems: 32, uniqueItems: true, items: { type: "string", maxLength: 64 } }, { type: "null" }] },
    enabled: { type: "boolean" },
  },
};
const SCHEMAS: Record<Action, Schema> = {
  list: { type: "object", additionalProperties: false, required: ["action"], properties: { action: { const: "list" }, site_id: UUID } },
  upsert: {
    type: "object",
    additionalProperties: false,
    required: ["action", "settings"],
    properties: { action: { const: "upsert" }, settings: { type: "array", minItems: 1, maxItems: MAX_SETTINGS, items: SETTING } },
  },
  delete: {
    type: "object",
    additionalProperties: false,
    required: ["action", "ids"],
    properties: { action: { const: "delete" }, ids: { type: "array", minItems: 1, maxItems: MAX_SETTINGS, uniqueItems: true, items: UUID } },
  },
};

interface Setting {
  id?: string;
  site_id?: string | null;
  name: string;
  channel: "teams" | "email" | "webhook";
  target: string;
  events: string[];
  job_types?: string[] | null;
  enabled?: boolean;
}

// https only: webhook URLs carry tokens, which must not cross the network in the clear.
const HTTPS_URL = /^https:\/\/[A-Za-z0-9.-]+(?::\d{1,5})?(?:\/[!-~]*)?$/;
const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/** Problems with one setting that the JSON schema cannot express (empty = fine). */
export function settingProblems(s: Setting, events: string[], jobTypes: string[], at: string) {
  const out: { path: string; message: string }[] = [];
  if (s.channel === "email" ? !EMAIL.test(s.target) || s.target.length > 254 : !HTTPS_URL.test(s.target)) {
    out.push({ path: `${at}/target`, message: s.channel === "email" ? "must be an email address" : "must be an https URL" });
  }
  s.events.forEach((e, i) => {
    if (!events.includes(e)) out.push({ path: `${at}/events/${i}`, message: `unknown event; one of ${events.join(", ")}` });
  });
  (s.job_types ?? []).forEach((t, i) => {
    if (!jobTypes.includes(t)) out.push({ path: `${at}/job_types/${i}`, message: "unknown job type" });
  });
  return out;
}

async function enumValues(tx: Tx, type: "notification_event" | "job_type"): Promise<string[]> {
  const [row] = type === "notification_event"
    ? await tx<{ v: string[] }[]>`select enum_range(null::public.notification_event)::text[] as v`
    : await tx<{ v: string[] }[]>`select enum_range(null::public.job_type)::text[] as v`;
  return row.v;
}

const COLUMNS = "id, site_id, name, channel::text, target, events::text[], job_types::text[], enabled, created_by, created_at, updated_at";

export const handler = guard("notification-settings", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const raw = await readJsonObject(req);
  const action = actionOf(raw, ACTIONS) as Action;
  const body = checkBody<{ site_id?: string; settings?: Setting[]; ids?: string[] }>(SCHEMAS[action], raw, `notification-settings ${action}`);

  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "notification-settings", action);
    if (action === "list") {
      const rows = body.site_id
        ? await tx.unsafe(`select ${COLUMNS} from public.notification_settings where site_id = $1 or site_id is null order by name, id`,
          [body.site_id.toLowerCase()])
        : await tx.unsafe(`select ${COLUMNS} from public.notification_settings order by name, id`);
      return json({ settings: rows });
    }
    if (action === "delete") {
      const ids = body.ids!.map((i) => i.toLowerCase());
      const gone = await tx<{ id: string }[]>`delete from public.notification_settings where id = any(${ids}::uuid[]) returning id`;
      if (gone.length !== ids.length) {
        const missing = ids.filter((i) => !gone.some((g) => g.id === i));
        throw notFound("setting_not_found", "some settings do not exist", { ids: missing });
      }
      return json({ deleted: gone.length });
    }
    const settings = body.settings!;
    const [events, jobTypes] = [await enumValues(tx, "notification_event"), await enumValues(tx, "job_type")];
    const issues = settings.flatMap((s, i) => settingProblems(s, events, jobTypes, `/settings/${i}`));
    if (issues.length) throw badRequest("invalid_setting", "some settings are not valid", { issues });
    const saved = [];
    for (const s of settings) {
      const siteId = s.site_id ? s.site_id.toLowerCase() : null;
      if (siteId) {
        const [site] = await tx`select id from public.sites where id = ${siteId}`;
        if (!site) throw unprocessable("site_not_found", "a setting names a site that does not exist", { name: s.name });
      }
      const values = [siteId, s.name, s.channel, s.target, s.events, s.job_types ?? null, s.enabled ?? true];
      const rows = s.id
        ? await tx.unsafe(
          `update public.notification_settings set site_id = $1, name = $2, channel = $3::public.notification_channel,
                  target = $4, events = $5::text[]::public.notification_event[], job_types = $6::text[]::public.job_type[],
                  enabled = $7 where id = $8 returning ${COLUMNS}`,
          [...values, s.id.toLowerCase()] as never[])
        : await tx.unsafe(
          `insert into public.notification_settings (site_id, name, channel, target, events, job_types, enabled, created_by)
           values ($1, $2, $3::public.notification_channel, $4, $5::text[]::public.notification_event[],
                   $6::text[]::public.job_type[], $7, auth.uid()) returning ${COLUMNS}`,
          values as never[]);
      if (!rows.length) throw notFound("setting_not_found", "the setting to update does not exist", { id: s.id });
      saved.push(rows[0]);
    }
    return json({ settings: saved });
  });
});
