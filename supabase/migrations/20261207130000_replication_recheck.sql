-- rackpilot control plane: "recheck", the operator's decision on a replication_lag blocker
-- after waiting or syncing the pair now (docs/replication.md#gating).
--
-- A job paused by the replication gate could be resumed only by overriding it (acknowledge)
-- or by skipping the host: job-control's resume is refused while blockers are open, and the
-- other decisions are about VMs. recheck resolves the blocker without overriding anything:
-- the job resumes, the gate runs again, and a pair still beyond its allowed lag pauses the
-- job with a new blocker. resolve-blockers accepts it for replication_lag blockers only
-- (supabase/functions/_shared/policy.ts).
alter type public.resolution_action add value if not exists 'recheck';
