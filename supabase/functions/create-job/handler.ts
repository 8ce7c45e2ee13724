// create-job: the only way an operator asks for work.
//
// POST {type, params, site_id?, maintenance_window_id?, scheduled_for?, priority?,
//       description?, dry_run?}
// 1. body and params are validated against the job type's schema (job-schemas.json,
//    generated from executor/jobparams.py);
// 2. as the caller, in one transaction: role check, targets exist and share one site,
//    tasks are planned, the safety policy holds (risk/window, per-cluster limits, no
//    second rolling update per cluster), then the job and its tasks are inserted. The job
//    names every credential set its executor may open: the targets' own (iDRAC of servers,
//    vCenter of hosts and clusters) and, for esxi_upgrade, the site's one set of kind esxi
//    for the SSH login (422 no_esxi_credentials / ambiguous_esxi_credentials otherwise).
// 201 {job_id, status, plan}; with dry_run 200 {dry_run: true, plan} and nothing written.

import { guard, json, readJsonObject, requireMethod } from "../_shared/api.ts";
import { appRole, asCaller, callerOf } from "../_shared/db.ts";
import { checkRequest, insertJob, planJob } from "../_shared/jobs.ts";
import { requireRole } from "../_shared/policy.ts";

export const handler = guard("create-job", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const body = await readJsonObject(req);
  const request = checkRequest(body);
  const dryRun = request.dry_run === true;
  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "create-job", dryRun ? "dry_run" : "create");
    const plan = await planJob(tx, request, new Date());
    if (dryRun) return json({ dry_run: true, plan });
    const jobId = await insertJob(tx, plan);
    return json({ job_id: jobId, status: "pending", plan }, 201);
  });
});
