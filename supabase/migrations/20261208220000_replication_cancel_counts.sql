-- rackpilot control plane: a cancelled scheduled replication_sync job counts as that
-- occurrence's attempt (issue 23).
--
-- A pair's next scheduled job is due at last_attempt_at + its schedule's interval
-- (schedule_replication_jobs, 20261206160000_replication.sql). last_attempt_at was written
-- only by the executor: when a job takes the pair (replication_begin) and when it records
-- the outcome (replication_record). A scheduled job cancelled before it took the pair -
-- an operator's cancel of a pending job, or a cancel requested before the handler reached
-- replication_begin - left last_attempt_at where it was, so the pair was still due and the
-- next scheduler round (within replication_poll_interval, 30 s by default) made it a new
-- job: the operator's cancel skipped nothing.
--
-- Now the cancel is the attempt: when a scheduled replication_sync job (details.scheduled,
-- set by schedule_replication_jobs only: create-job does not write details and users may
-- not update it) becomes cancelled, by whatever path (job-control as the operator, the
-- executor finishing a cancel it was asked for), each pair it names gets last_attempt_at =
-- the time of the cancel (never moved back), so the next job comes one interval later, as
-- after a run. A cancel that SQL turns back into pending (a job that owes its cleanup,
-- jobs_guard_cleanup) counts only once it really ends as cancelled: this is an AFTER
-- trigger and sees the final row. A cancelled "sync now" job (not scheduled) changes
-- nothing: the operator cancelled their own sync, not the schedule.

create or replace function public.replication_cancel_counts_as_attempt()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.replication_pairs p
     set last_attempt_at = greatest(coalesce(p.last_attempt_at, '-infinity'::timestamptz), now())
   where p.id in (select t.target_id from public.job_tasks t
                   where t.job_id = new.id and t.target_kind = 'replication_pair');
  return null;
end
$$;
comment on function public.replication_cancel_counts_as_attempt() is
  'Trigger: a scheduled replication_sync job that ends cancelled counts as its pairs'' attempt (last_attempt_at).';
revoke execute on function public.replication_cancel_counts_as_attempt() from public, anon, authenticated;

drop trigger if exists jobs_replication_cancel_counts on public.jobs;
create trigger jobs_replication_cancel_counts after update of status on public.jobs
  for each row
  when (new.status = 'cancelled' and old.status is distinct from new.status
        and new.type = 'replication_sync' and new.details ->> 'scheduled' = 'true')
  execute function public.replication_cancel_counts_as_attempt();
