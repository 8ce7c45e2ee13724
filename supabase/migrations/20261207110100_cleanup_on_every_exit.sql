-- Cleanup on every exit path (DESIGN §5.2), and one name for the cluster lock.
--
-- 1. public.cluster_lock_key(cluster) is the one declaration of the per-cluster advisory
--    lock key. create-job (supabase/functions/_shared/jobs.ts) and claim_jobs both take it
--    through this function; before, create-job locked 'rackpilot:cluster:<id>' and the
--    claim 'rackpilot.cluster:<id>', two locks that never excluded each other.
--
-- 2. jobs.cleanup_owed_since: set by the executor (set_cleanup_owed, fenced) before a step
--    whose cleanup step must run on every exit (the step a cleanup step's only_if_started
--    names: relaxing HA/DRS, disabling a guard), cleared by it only once every cleanup step
--    of the job is recorded completed. While it is set, SQL refuses every terminal state:
--    - a cancel of a pending or paused job (paused for any reason, executor_lost included)
--      leaves the job pending with its cancel requested, so an executor claims it, runs no
--      main step and runs the cleanup, then finishes it as cancelled; such a job is handed
--      out outside a maintenance window too (it restores, it changes nothing new);
--    - an executor's finish_job is refused until the cleanup is done; a cleanup that fails
--      pauses the job as cleanup_failed (resume runs the cleanup again);
--    - the only other way out is public.abandon_cleanup(job, reason): admins only, reason
--      required, written to the audit log.
--    Only these functions write the column (trigger jobs_guard_cleanup, which runs after
--    jobs_guard: triggers of one event fire in name order).
--
-- 3. The claim (claim_jobs, claim_candidates in 20261128010300_executor_rpcs.sql) takes the
--    lock through cluster_lock_key, and hands out a cancelled job that owes its cleanup
--    whatever the window says (it runs its cleanup only). The column is in the jobs table.

create function public.cluster_lock_key(p_cluster_id uuid)
returns bigint
language sql
immutable
parallel safe
set search_path = ''
as $$
  select hashtextextended('rackpilot.cluster:' || p_cluster_id::text, 0)
$$;
comment on function public.cluster_lock_key(uuid) is
  'The per-cluster advisory lock key that create-job and claim_jobs both take (one declaration).';
revoke execute on function public.cluster_lock_key(uuid) from public;
grant execute on function public.cluster_lock_key(uuid) to authenticated, service_role;

create function public.jobs_guard_cleanup()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.cleanup_owed_since is distinct from old.cleanup_owed_since
     and coalesce(current_setting('rackpilot.cleanup_write', true), '') <> 'on' then
    raise exception using errcode = 'P0001',
      message = 'illegal_transition: cleanup_owed_since is written by set_cleanup_owed and abandon_cleanup only';
  end if;
  if old.cleanup_owed_since is null or new.cleanup_owed_since is null
     or new.status not in ('completed', 'failed', 'cancelled') then
    return new;
  end if;
  if old.status in ('pending', 'paused') and new.status = 'cancelled' then
    -- cancel while waiting: the job goes back to an executor, which runs the cleanup only
    new.status := 'pending';
    new.pause_reason := null;
    new.finished_at := null;
    new.pause_requested_at := null;
    new.cancel_requested_at := coalesce(new.cancel_requested_at, old.cancel_requested_at, now());
    return new;
  end if;
  raise exception using errcode = 'P0001',
    message = format('cleanup_owed: job %s changed target state; it becomes %s only after its cleanup step '
                     'completed (or an admin abandons the cleanup with a reason)', old.id, new.status);
end
$$;
revoke execute on function public.jobs_guard_cleanup() from public;
create trigger jobs_guard_cleanup before update on public.jobs
  for each row execute function public.jobs_guard_cleanup();

-- executor: the job now owes its cleanup (p_owed true), or its cleanup completed (false)
create function public.set_cleanup_owed(p_executor_id uuid, p_job_id uuid, p_epoch bigint, p_owed boolean)
returns timestamptz
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
  v_open text;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_owed is null then
    raise exception using errcode = '22023', message = 'invalid_argument: p_owed is required';
  end if;
  if not p_owed and v_job.cleanup_owed_since is not null then
    select string_agg(w.step_key || ' ' || w.status::text, ', ') into v_open
      from public.workflow_executions w
     where w.job_id = p_job_id and w.details ->> 'cleanup' = 'true'
       and (w.status <> 'completed' or w.finished_at < v_job.cleanup_owed_since);
    if v_open is not null or not exists (select 1 from public.workflow_executions w
                                          where w.job_id = p_job_id and w.details ->> 'cleanup' = 'true') then
      raise exception using errcode = 'P0001',
        message = format('cleanup_not_done: job %s owes its cleanup (%s)', p_job_id, coalesce(v_open, 'no cleanup step recorded'));
    end if;
  end if;
  perform set_config('rackpilot.cleanup_write', 'on', true);
  update public.jobs j
     set cleanup_owed_since = case when p_owed then coalesce(j.cleanup_owed_since, now()) end
   where j.id = p_job_id
  returning j.cleanup_owed_since into v_job.cleanup_owed_since;
  perform set_config('rackpilot.cleanup_write', '', true);
  return v_job.cleanup_owed_since;
end
$$;
revoke execute on function public.set_cleanup_owed(uuid, uuid, bigint, boolean) from public;
grant execute on function public.set_cleanup_owed(uuid, uuid, bigint, boolean) to service_role;

-- admin break-glass: end a job whose cleanup cannot complete (the target is gone, say);
-- the admin takes over restoring by hand. Audited with the admin and the reason.
create function public.abandon_cleanup(p_job_id uuid, p_reason text)
returns public.jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
begin
  if auth.uid() is not null then
    if not public.has_role('admin') then
      raise exception using errcode = '42501', message = 'forbidden: abandon_cleanup is for admins';
    end if;
  elsif coalesce(auth.role(), '') <> 'service_role' and session_user <> 'postgres' then
    raise exception using errcode = '42501', message = 'forbidden: abandon_cleanup is for admins';
  end if;
  if p_job_id is null or coalesce(btrim(p_reason), '') = '' then
    raise exception using errcode = '22023', message = 'invalid_argument: a job id and a reason are required';
  end if;
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = format('job_not_found: no job %s', p_job_id);
  end if;
  if v_job.cleanup_owed_since is null then
    raise exception using errcode = 'P0001', message = format('illegal_transition: job %s owes no cleanup', p_job_id);
  end if;
  if v_job.status not in ('pending', 'paused') then
    raise exception using errcode = 'P0001',
      message = format('illegal_transition: abandon_cleanup takes a pending or paused job, not %s', v_job.status);
  end if;
  perform set_config('rackpilot.audit_note', 'abandon_cleanup: ' || p_reason, true);
  perform set_config('rackpilot.cleanup_write', 'on', true);
  update public.jobs j
     set status = 'cancelled', cleanup_owed_since = null,
         cancel_requested_at = coalesce(j.cancel_requested_at, now()),
         cancel_requested_by = coalesce(j.cancel_requested_by, auth.uid()),
         lease_epoch = j.lease_epoch + 1,
         details = j.details || jsonb_build_object('cleanup_abandoned', jsonb_build_object(
           'at', now(), 'by', auth.uid(), 'reason', p_reason, 'owed_since', j.cleanup_owed_since))
   where j.id = p_job_id
  returning * into v_job;
  perform set_config('rackpilot.cleanup_write', '', true);
  return v_job;
end
$$;
revoke execute on function public.abandon_cleanup(uuid, text) from public;
grant execute on function public.abandon_cleanup(uuid, text) to authenticated, service_role;
