// resolve-blockers: the operator's decisions on what keeps hosts from entering maintenance.
//
// POST {job_id, decisions: [{blocker_id, decision, note?}], resume?}
// decision: power_off_vm (the executor powers the VM off and back on after the host),
//           migrate_manually_done (the operator moved the VM), skip_host (leave the host
//           out of this job), abort (cancel the job), acknowledge (override a
//           replication_lag blocker; needs a note with the reason, docs/replication.md),
//           recheck (replication_lag: the gate runs again once the job resumes).
// In one transaction as the caller:
// - the job must be paused for blockers, every named blocker must be one of its blockers
//   and still open, and the facts a decision rests on must still hold (the VM exists and,
//   for power_off_vm, still runs on the blocked host) — otherwise 409 and nothing written;
// - decisions are recorded (the database marks each blocker resolved);
// - abort cancels the job; otherwise the job resumes (back to pending) only when every
//   blocker of the paused phase has a decision. With resume: true the request fails (409
//   unresolved_blockers, nothing written) unless it completes the set.

import { badRequest, checkBody, conflict, guard, json, notFound, readJsonObject, requireMethod } from "../_shared/api.ts";
import { appRole, asCaller, callerOf } from "../_shared/db.ts";
import { type BlockerRow, blockerProblem, type Decision, DECISIONS, requireRole } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";
import { HttpError } from "../_shared/http.ts";

const MAX_DECISIONS = 500; // blockers decided in one request

const SCHEMA: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["job_id", "decisions"],
  properties: {
    job_id: { type: "string", format: "uuid" },
    resume: { type: "boolean" },
    decisions: {
      type: "array",
      minItems: 1,
      maxItems: MAX_DECISIONS,
      items: {
        type: "object",
        additionalProperties: false,
        required: ["blocker_id", "decision"],
        properties: {
          blocker_id: { type: "string", format: "uuid" },
          decision: { enum: [...DECISIONS] },
          note: { type: "string", maxLength: 2000 },
        },
      },
    },
  },
};

interface Body {
  job_id: string;
  resume?: boolean;
  decisions: { blocker_id: string; decision: Decision; note?: string }[];
}

export const handler = guard("resolve-blockers", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const body = checkBody<Body>(SCHEMA, await readJsonObject(req), "resolve-blockers");
  const jobId = body.job_id.toLowerCase();
  const decisions = body.decisions.map((d) => ({ ...d, blocker_id: d.blocker_id.toLowerCase() }));
  const ids = decisions.map((d) => d.blocker_id);
  if (new Set(ids).size !== ids.length) throw badRequest("duplicate_blocker", "each blocker may be decided once per request");

  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "resolve-blockers", "resolve");
    const [job] = await tx<{ status: string; pause_reason: string | null }[]>`
      select status::text, pause_reason::text from public.jobs where id = ${jobId} for update`;
    if (!job) throw notFound("job_not_found", "the job does not exist or is not visible to you");
    if (job.status !== "paused" || job.pause_reason !== "blockers") {
      throw conflict("job_not_paused_for_blockers", `the job is ${job.status}${job.pause_reason ? ` (${job.pause_reason})` : ""}, not paused for blockers`);
    }
    const blockers = await tx<BlockerRow[]>`
      select b.id, b.job_id, b.kind::text, b.status::text, b.host_id, b.vm_id,
             (v.id is not null) as vm_exists, v.host_id as vm_host_id
        from public.job_blockers b left join public.vms v on v.id = b.vm_id
       where b.job_id = ${jobId} and (b.status = 'open' or b.id = any(${ids}::uuid[]))
       order by b.detected_at, b.id`;
    // No FOR UPDATE on job_blockers (users hold no UPDATE on it): the job row lock above
    // serialises requests for this job, and the database's resolution trigger locks each
    // blocker and refuses one that is no longer open.
    const byId = new Map(blockers.map((b) => [b.id, b]));
    const unknown = ids.filter((id) => !byId.has(id));
    if (unknown.length) {
      throw new HttpError(422, "blocker_not_found", "these blockers are not blockers of this job", { blocker_ids: unknown });
    }
    const problems = decisions.map((d) => blockerProblem(byId.get(d.blocker_id)!, d.decision, d.note)).filter((p) => p !== null);
    if (problems.length) throw conflict(problems[0]!.code, problems[0]!.message, { problems });

    // the database fills job_id and resolved_by and marks each blocker resolved
    const rows = decisions.map((d) => ({ blocker_id: d.blocker_id, action: d.decision, note: d.note ?? "" }));
    await tx`insert into public.blocker_resolutions ${tx(rows, "blocker_id", "action", "note")}`;

    const decided = new Set(ids);
    const stillOpen = blockers.filter((b) => b.status === "open" && !decided.has(b.id)).map((b) => b.id);
    const aborted = decisions.some((d) => d.decision === "abort");
    if (aborted) {
      const [row] = await tx`update public.jobs set status = 'cancelled' where id = ${jobId} returning status::text`;
      return json({ job_id: jobId, recorded: rows.length, status: row.status, resumed: false, open_blockers: stillOpen });
    }
    if (stillOpen.length) {
      if (body.resume === true) {
        throw conflict("unresolved_blockers", `${stillOpen.length} blocker(s) of the paused phase have no decision yet`, {
          blocker_ids: stillOpen,
        });
      }
      return json({ job_id: jobId, recorded: rows.length, status: job.status, resumed: false, open_blockers: stillOpen });
    }
    if (body.resume === false) {
      return json({ job_id: jobId, recorded: rows.length, status: job.status, resumed: false, open_blockers: [] });
    }
    const [row] = await tx`update public.jobs set status = 'pending' where id = ${jobId} returning status::text`;
    return json({ job_id: jobId, recorded: rows.length, status: row.status, resumed: true, open_blockers: [] });
  });
});
