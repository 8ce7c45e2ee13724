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

create or replace function public.cluster_lock_key(p_cluster_id uuid)
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

alter table public.jobs add column cleanup_owed_since timestamptz;
comment on column public.jobs.cleanup_owed_since is
  'Set while the job has changed target state its cleanup step must undo; no terminal status until cleared '
  '(by the executor after its cleanup completed, or by an admin''s audited abandon_cleanup).';

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

-- the claim: the lock through cluster_lock_key; a cancelled job that owes its cleanup is
-- handed out whatever the window says (it runs its cleanup only)
create or replace function public.claim_candidates(
  p_site_id uuid,
  p_job_types public.job_type[],
  p_window_types public.job_type[],
  p_capped_types public.job_type[],
  p_max integer
)
returns table (id uuid, cluster_id uuid, type public.job_type)
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
set enable_sort = off
as $$
#variable_conflict use_column
begin
  return query
    select j.id, j.cluster_id, j.type
      from public.jobs j
     where j.status = 'pending'
       and j.site_id = p_site_id
       and j.scheduled_for <= now()
       and (p_job_types is null or j.type = any (p_job_types))
       and (not j.type = any (p_window_types)
            or (j.cancel_requested_at is not null and j.cleanup_owed_since is not null) or exists (
             select 1 from public.maintenance_windows w
              where w.id = j.maintenance_window_id and w.status = 'approved'
                and w.site_id = j.site_id and (w.cluster_id is null or w.cluster_id = j.cluster_id)
                and now() >= w.starts_at and now() < w.ends_at))
       -- a cheap unlocked pre-check keeps full clusters from crowding out claimable jobs
       and (j.cluster_id is null or not j.type = any (p_capped_types)
            or (select count(*) from public.jobs a
                 where a.cluster_id = j.cluster_id and a.status in ('running', 'paused')
                   and a.type = any (p_capped_types))
               < (select p.max_concurrent_per_cluster from public.safety_policies p where p.job_type = j.type))
     order by j.priority desc, j.scheduled_for, j.id
     limit p_max
     for update of j skip locked;
end
$$;

create or replace function public.claim_jobs(p_executor_id uuid, p_max integer default 1)
returns table (
  job_id           uuid,
  type             public.job_type,
  site_id          uuid,
  cluster_id       uuid,
  params           jsonb,
  scope            jsonb,
  priority         smallint,
  lease_epoch      bigint,
  lease_expires_at timestamptz,
  attempts         integer,
  cancel_requested boolean,
  resume_from      jsonb,
  window_ends_at   timestamptz
)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_exec         public.executors%rowtype;
  v_window_types public.job_type[];
  v_capped_types public.job_type[];
  v_cand         record;
  v_take         uuid[] := '{}'::uuid[];
  v_held         uuid[] := '{}'::uuid[];
  v_busy         uuid[] := '{}'::uuid[];
  v_active       integer;
begin
  if p_max is null or p_max < 1 or p_max > 1000 then
    raise exception using errcode = '22023', message = 'invalid_argument: p_max must be between 1 and 1000';
  end if;
  v_exec := public.executor_row(p_executor_id);
  select coalesce(array_agg(p.job_type) filter (where p.requires_window or p.risk = 'high'), '{}'),
         coalesce(array_agg(p.job_type) filter (where p.max_concurrent_per_cluster is not null), '{}')
    into v_window_types, v_capped_types
    from public.safety_policies p;

  for v_cand in
    select c.id, c.cluster_id, c.type
      from public.claim_candidates(v_exec.site_id, v_exec.job_types, v_window_types, v_capped_types, p_max) c
  loop
    if v_cand.cluster_id is not null and v_cand.type = any (v_capped_types) then
      continue when v_cand.cluster_id = any (v_busy);
      if not v_cand.cluster_id = any (v_held) then
        if not pg_try_advisory_xact_lock(public.cluster_lock_key(v_cand.cluster_id)) then
          v_busy := v_busy || v_cand.cluster_id;
          continue;
        end if;
        v_held := v_held || v_cand.cluster_id;
      end if;
      select count(*) into v_active
        from public.jobs a
       where a.cluster_id = v_cand.cluster_id and a.type = any (v_capped_types)
         and (a.status in ('running', 'paused') or a.id = any (v_take));
      continue when v_active >= (select p.max_concurrent_per_cluster from public.safety_policies p
                                  where p.job_type = v_cand.type);
    end if;
    v_take := v_take || v_cand.id;
  end loop;

  if cardinality(v_take) = 0 then
    return;
  end if;

  return query
  with claimed as (
    update public.jobs j
       set status = 'running',
           claimed_by = p_executor_id,
           lease_expires_at = now() + make_interval(secs => p.lease_seconds),
           lease_epoch = j.lease_epoch + 1,
           attempts = j.attempts + 1,
           started_at = coalesce(j.started_at, now())
      from public.safety_policies p
     where j.id = any (v_take) and p.job_type = j.type
       and j.status = 'pending' and j.site_id = v_exec.site_id
       -- defence in depth: whatever the candidate query said, a risky job leaves pending
       -- only inside an approved, current window of its own site and cluster
       -- (a cancelled job that owes its cleanup is handed out to run that cleanup only)
       and (not (p.requires_window or p.risk = 'high')
            or (j.cancel_requested_at is not null and j.cleanup_owed_since is not null) or exists (
             select 1 from public.maintenance_windows w
              where w.id = j.maintenance_window_id and w.status = 'approved'
                and w.site_id = j.site_id and (w.cluster_id is null or w.cluster_id = j.cluster_id)
                and now() >= w.starts_at and now() < w.ends_at))
    returning j.*
  )
  select c.id, c.type, c.site_id, c.cluster_id, c.params, c.scope, c.priority, c.lease_epoch,
         c.lease_expires_at, c.attempts, c.cancel_requested_at is not null,
         (select jsonb_build_object('step_id', w.id, 'step_key', w.step_key, 'seq', w.seq,
                                    'status', w.status, 'checkpoint', w.checkpoint)
            from public.workflow_executions w where w.id = c.current_step_id),
         (select mw.ends_at from public.maintenance_windows mw
           where mw.id = c.maintenance_window_id and mw.status = 'approved')
    from claimed c
   order by c.priority desc, c.scheduled_for, c.id;
end
$$;

