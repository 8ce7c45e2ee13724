// job-control: pause, resume, cancel, retry and force-resume a job.
//
// POST {action, job_id, reason?, maintenance_window_id?, scheduled_for?}
// - pause: asks a running job to pause at its next safe point (pause_requested_at);
// - resume: a paused job goes back to pending for a fresh claim (the database refuses
//   while blockers are open, and for executor_lost, which needs force-resume);
// - cancel: a pending or paused job is cancelled at once (one that owes its cleanup goes
//   back to an executor for that cleanup first); for a running job it is a
//   request the executor honours at its next safe point, never in the middle of a flash;
// - retry: a failed job is planned again from its params (targets, site and safety are
//   checked anew) and created as a new job whose scope.retry_of names the old one;
// - force_resume (admin, reason required): a job paused for any reason, or running with an
//   expired lease, goes back to pending under a new epoch; done by public.force_resume
//   (data model), which checks the admin role and writes the reason to the audit log.
// Every action runs in one transaction as the caller.

import { actionOf, badRequest, checkBody, guard, json, notFound, readJsonObject, requireMethod } from "../_shared/api.ts";
import { appRole, asCaller, callerOf, type Tx } from "../_shared/db.ts";
import { checkRequest, insertJob, planJob } from "../_shared/jobs.ts";
import { controlProblem, type JobState, requireRole } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";
import { HttpError } from "../_shared/http.ts";

const ACTIONS = ["pause", "resume", "cancel", "retry", "force_resume"] as const;
type Action = typeof ACTIONS[number];

const UUID = { type: "string", format: "uuid" };
const SCHEMA: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "job_id"],
  properties: {
    action: { enum: [...ACTIONS] },
    job_id: UUID,
    reason: { type: "string", minLength: 1, maxLength: 2000 },
    // retry only: the old job's window may be over
    maintenance_window_id: { anyOf: [UUID, { type: "null" }] },
    scheduled_for: { anyOf: [{ type: "string", format: "date-time" }, { type: "null" }] },
  },
};

interface Body {
  action: Action;
  job_id: string;
  reason?: string;
  maintenance_window_id?: string | null;
  scheduled_for?: string | null;
}

interface JobRow extends JobState {
  id: string;
  type: string;
  site_id: string;
  params: Record<string, unknown>;
  priority: number;
  description: string;
  maintenance_window_id: string | null;
}

async function lockJob(tx: Tx, id: string): Promise<JobRow> {
  const [job] = await tx<JobRow[]>`
    select id, type::text, status::text, pause_reason::text, cancel_requested_at, pause_requested_at,
           lease_expires_at, site_id, params, priority, description, maintenance_window_id
      from public.jobs where id = ${id} for update`;
  if (!job) throw notFound("job_not_found", "the job does not exist or is not visible to you");
  return job;
}

export const handler = guard("job-control", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const raw = await readJsonObject(req);
  const action = actionOf(raw, ACTIONS) as Action;
  const body = checkBody<Body>(SCHEMA, raw, "job-control");
  if (action === "force_resume" && !body.reason?.trim()) {
    throw badRequest("reason_required", "force_resume needs a reason; it is written to the audit log");
  }
  const jobId = body.job_id.toLowerCase();
  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "job-control", action);
    const job = await lockJob(tx, jobId);
    const problem = controlProblem(action, job, new Date());
    if (problem) throw new HttpError(409, problem.code, problem.message, { status: job.status });

    switch (action) {
      case "pause": {
        await tx`update public.jobs set pause_requested_at = now() where id = ${jobId}`;
        return json({ job_id: jobId, action, status: job.status, requested: true });
      }
      case "resume": {
        const [row] = await tx`update public.jobs set status = 'pending' where id = ${jobId} returning status::text`;
        return json({ job_id: jobId, action, status: row.status, requested: false });
      }
      case "cancel": {
        if (job.status === "running") {
          await tx`update public.jobs set cancel_requested_at = now() where id = ${jobId}`;
          return json({ job_id: jobId, action, status: job.status, requested: true });
        }
        // a job that owes its cleanup (HA/DRS relaxed, say) stays pending with its cancel
        // requested until an executor has run that cleanup (jobs_guard_cleanup)
        const [row] = await tx`update public.jobs set status = 'cancelled' where id = ${jobId} returning status::text`;
        return json({ job_id: jobId, action, status: row.status, requested: row.status !== "cancelled" });
      }
      case "force_resume": {
        const [row] = await tx`select (public.force_resume(${jobId}, ${body.reason!.trim()})).status::text as status`;
        return json({ job_id: jobId, action, status: row.status, requested: false });
      }
      case "retry": {
        const request = checkRequest({
          type: job.type,
          params: job.params,
          site_id: job.site_id,
          maintenance_window_id: "maintenance_window_id" in body ? body.maintenance_window_id : job.maintenance_window_id,
          ...(body.scheduled_for ? { scheduled_for: body.scheduled_for } : {}),
          priority: job.priority,
          description: job.description,
        });
        const plan = await planJob(tx, request, new Date());
        const newId = await insertJob(tx, plan, { retry_of: jobId });
        plan.scope = { ...plan.scope, retry_of: jobId } as typeof plan.scope;
        return json({ job_id: newId, retry_of: jobId, action, status: "pending", requested: false, plan }, 201);
      }
    }
  });
});
