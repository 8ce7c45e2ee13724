-- Jobs are created only through create-job; SQL refuses to hand out a risky job outside an
-- approved, current maintenance window however the row got there (DESIGN §4, §5.5).
--
-- Before this migration an operator could INSERT into public.jobs straight through
-- /rest/v1 with any type and params, and none of create-job's checks ran (planning, tasks,
-- window rules, parameter validation). Now:
--
-- 1. The API roles hold no INSERT on jobs. create-job (and job-control's retry) write
--    through ONE function, public.functions_create_job, after all their checks, in the
--    caller's transaction. It is SECURITY DEFINER and executable by the service role only:
--    the edge function switches its own transaction to service_role for that one call,
--    with the caller's JWT claims still set, so the row is stamped and audited with the
--    user. A signed-in user calling /rest/v1/rpc/functions_create_job is refused (42501),
--    so the REST hole does not simply move to an RPC. The function itself re-checks what
--    SQL can know: the operator role, no test-only type, the window of a risky type, and
--    that the scope names the job's targets (one job_tasks row each).
--
-- 2. UPDATE stays as it was (checked): the API roles may write only status,
--    cancel_requested_at, pause_requested_at, priority, scheduled_for and
--    maintenance_window_id (column grants), never type, params, scope, site, cluster or
--    credentials; jobs_guard lets a user only cancel a pending/paused job, resume a paused
--    one (not executor_lost, not with open blockers) and request a pause or cancel. What
--    this migration adds: a user may point a waiting job only at a maintenance window of
--    the job's own site (and cluster), and credentials_in_site is evaluated only when the
--    credential or site columns change, so users need no EXECUTE on it (migration
--    20261206110100 takes it away).
--
-- 3. claim_jobs checks the window twice: claim_candidates filters on it (as before), and
--    the UPDATE that hands out the lease re-checks it against the locked row, so a
--    regression in the cached candidate query cannot hand out a risky job. "Risky" is
--    safety_policies.requires_window or risk = 'high' (policies/safety.yaml, mirrored by
--    migration; a CHECK already ties high risk to requires_window).
--
-- 4. A risky job whose window is missing, not approved, for another scope, not yet open
--    or over STAYS PENDING: an approver may still approve the window, or an operator may
--    attach another one (maintenance_window_id is writable while the job waits) or cancel
--    the job. Failing it would lose the request for a condition that is often temporary.
--    Operators see why in public.v_job_waits: one row per pending job with a stable
--    waiting_for code (the same codes create-job answers with) and a sentence.

-- 1. no direct INSERT --------------------------------------------------------------------
revoke insert on public.jobs from anon, authenticated;
drop policy if exists jobs_insert_operator on public.jobs;

create function public.functions_create_job(
  p_type                  public.job_type,
  p_site_id               uuid,
  p_cluster_id            uuid,
  p_params                jsonb,
  p_scope                 jsonb,
  p_priority              smallint,
  p_description           text,
  p_scheduled_for         timestamptz,
  p_maintenance_window_id uuid,
  p_credential_set_ids    uuid[]
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid    uuid := auth.uid();
  v_policy public.safety_policies%rowtype;
  v_window public.maintenance_windows%rowtype;
  v_job    uuid;
  v_count  integer;
begin
  if v_uid is null or not public.has_role('operator') then
    raise exception using errcode = '42501',
      message = 'forbidden: jobs are created by operators, through create-job';
  end if;
  if p_type is null or p_site_id is null then
    raise exception using errcode = '22023', message = 'invalid_argument: a job needs a type and a site';
  end if;
  if p_type = 'selftest' then
    raise exception using errcode = '22023',
      message = 'invalid_argument: selftest is the executor''s own test job, not an operator job';
  end if;
  select * into v_policy from public.safety_policies p where p.job_type = p_type;
  if not found then
    raise exception using errcode = '22023', message = format('invalid_argument: no safety policy for %s', p_type);
  end if;
  if p_maintenance_window_id is not null or v_policy.requires_window or v_policy.risk = 'high' then
    select * into v_window from public.maintenance_windows w where w.id = p_maintenance_window_id;
    if not found then
      raise exception using errcode = 'P0001',
        message = format('window_required: %s is a %s-risk job and needs an approved maintenance window',
                         p_type, v_policy.risk);
    end if;
    if v_window.status <> 'approved' then
      raise exception using errcode = 'P0001',
        message = format('window_not_approved: the maintenance window is %s, not approved', v_window.status);
    end if;
    if v_window.site_id <> p_site_id
       or (v_window.cluster_id is not null and v_window.cluster_id is distinct from p_cluster_id) then
      raise exception using errcode = 'P0001',
        message = 'window_wrong_scope: the maintenance window covers another site or cluster';
    end if;
    if v_window.ends_at <= greatest(now(), coalesce(p_scheduled_for, now())) then
      raise exception using errcode = 'P0001', message = 'window_over: the maintenance window ends before the job may start';
    end if;
  end if;
  if jsonb_typeof(p_scope -> 'targets') is distinct from 'array' or jsonb_array_length(p_scope -> 'targets') = 0 then
    raise exception using errcode = '22023', message = 'invalid_argument: the job scope names no targets';
  end if;

  insert into public.jobs (type, site_id, cluster_id, params, scope, priority, description, scheduled_for,
                           maintenance_window_id, credential_set_ids, created_by)
  values (p_type, p_site_id, p_cluster_id, coalesce(p_params, '{}'::jsonb), p_scope, coalesce(p_priority, 50),
          coalesce(p_description, ''), coalesce(p_scheduled_for, now()), p_maintenance_window_id,
          coalesce(p_credential_set_ids, '{}'), v_uid)
  returning id into v_job;

  insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq)
  select v_job, (t.value ->> 'kind')::public.task_target_kind, (t.value ->> 'id')::uuid,
         left(coalesce(t.value ->> 'name', ''), 255), (t.ordinality - 1)::integer
    from jsonb_array_elements(p_scope -> 'targets') with ordinality t;
  get diagnostics v_count = row_count;
  return v_job;
end
$$;
comment on function public.functions_create_job(public.job_type, uuid, uuid, jsonb, jsonb, smallint, text, timestamptz,
                                                uuid, uuid[]) is
  'create-job''s one write: a planned job and one job_tasks row per scope target. Service role only '
  '(the edge function calls it with the operator''s JWT claims set, after all its checks).';
revoke execute on function public.functions_create_job(public.job_type, uuid, uuid, jsonb, jsonb, smallint, text,
                                                       timestamptz, uuid, uuid[]) from public, anon, authenticated;
grant execute on function public.functions_create_job(public.job_type, uuid, uuid, jsonb, jsonb, smallint, text,
                                                      timestamptz, uuid, uuid[]) to service_role;

-- create-job's former second step, for a job the caller had inserted itself: gone with the
-- INSERT grant (functions_create_job writes the tasks).
drop function if exists public.functions_create_job_tasks(uuid);

-- 2. the state machine, with the two changes described above ------------------------------
create or replace function public.jobs_guard()
returns trigger
language plpgsql
as $$
declare
  v_user boolean := public.is_user_context();
begin
  if tg_op = 'INSERT' then
    if v_user then
      new.created_by := auth.uid();
    end if;
    if new.status <> 'pending' or new.claimed_by is not null or new.lease_epoch <> 0 or new.attempts <> 0 then
      raise exception using errcode = 'P0001',
        message = 'illegal_transition: a job is created pending, unclaimed, with epoch 0';
    end if;
    if not public.credentials_in_site(new.credential_set_ids, new.site_id) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: a job may reference only credential sets of its own site';
    end if;
    return new;
  end if;

  if old.status in ('completed', 'failed', 'cancelled') then
    raise exception using errcode = 'P0001',
      message = format('illegal_transition: job %s is %s and never changes again', old.id, old.status);
  end if;
  new.updated_at := now();
  -- nested, so that the helper is reached only when those columns change (never for a user)
  if (new.credential_set_ids, new.site_id) is distinct from (old.credential_set_ids, old.site_id) then
    if not public.credentials_in_site(new.credential_set_ids, new.site_id) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: a job may reference only credential sets of its own site';
    end if;
  end if;

  if new.status is distinct from old.status then
    if not public.job_transition_allowed(old.status, new.status) then
      raise exception using errcode = 'P0001',
        message = format('illegal_transition: job %s cannot go from %s to %s', old.id, old.status, new.status);
    end if;
    if v_user then
      if not ((old.status in ('pending', 'paused') and new.status = 'cancelled')
              or (old.status = 'paused' and new.status = 'pending')) then
        raise exception using errcode = 'P0001',
          message = format('forbidden_transition: users may cancel pending or paused jobs and resume paused ones, not %s -> %s',
                           old.status, new.status);
      end if;
      if old.status = 'paused' and new.status = 'pending' and old.pause_reason = 'executor_lost' then
        raise exception using errcode = 'P0001',
          message = 'forbidden_transition: a job paused as executor_lost is resumed only by an admin (force_resume)';
      end if;
      if new.status = 'cancelled' then
        new.cancel_requested_at := coalesce(old.cancel_requested_at, now());
        new.cancel_requested_by := coalesce(old.cancel_requested_by, auth.uid());
      end if;
    end if;
    if old.status = 'paused' and old.pause_reason = 'blockers' and new.status = 'pending'
       and exists (select 1 from public.job_blockers b where b.job_id = old.id and b.status = 'open') then
      raise exception using errcode = 'P0001',
        message = format('open_blockers: job %s has unresolved blockers', old.id);
    end if;
    -- bookkeeping that follows from the new status
    if new.status <> 'paused' then
      new.pause_reason := null;
    end if;
    if new.status <> 'running' then
      new.claimed_by := null;
      new.lease_expires_at := null;
    end if;
    if new.status = 'pending' then
      new.pause_requested_at := null;
    end if;
    if new.status in ('completed', 'failed', 'cancelled') then
      new.finished_at := coalesce(new.finished_at, now());
    end if;
  elsif new.status = 'paused' and new.pause_reason is distinct from old.pause_reason then
    raise exception using errcode = 'P0001', message = 'illegal_transition: pause_reason changes only with the status';
  end if;

  if v_user then
    -- requests are one-way flags stamped by the database, not by the caller
    if new.cancel_requested_at is distinct from old.cancel_requested_at and new.status <> 'cancelled' then
      if old.cancel_requested_at is not null then
        raise exception using errcode = 'P0001', message = 'illegal_transition: a cancel request cannot be withdrawn';
      end if;
      new.cancel_requested_at := now();
      new.cancel_requested_by := auth.uid();
    end if;
    if new.cancel_requested_by is distinct from old.cancel_requested_by
       and new.cancel_requested_at is not distinct from old.cancel_requested_at then
      raise exception using errcode = 'P0001', message = 'illegal_transition: cancel_requested_by is set by the database';
    end if;
    if new.pause_requested_at is distinct from old.pause_requested_at and new.status = old.status then
      if old.status <> 'running' or new.pause_requested_at is null then
        raise exception using errcode = 'P0001',
          message = 'illegal_transition: a pause can be requested only for a running job, and not withdrawn';
      end if;
      new.pause_requested_at := coalesce(old.pause_requested_at, now());
    end if;
    if (new.scheduled_for, new.priority, new.maintenance_window_id)
       is distinct from (old.scheduled_for, old.priority, old.maintenance_window_id)
       and old.status not in ('pending', 'paused') then
      raise exception using errcode = 'P0001',
        message = 'illegal_transition: schedule, priority and window change only while a job waits';
    end if;
    -- a user may attach only a window of the job's own site (and cluster); the claim still
    -- decides whether that window is approved and open
    if new.maintenance_window_id is distinct from old.maintenance_window_id and new.maintenance_window_id is not null
       and not exists (select 1 from public.maintenance_windows w
                        where w.id = new.maintenance_window_id and w.site_id = new.site_id
                          and (w.cluster_id is null or w.cluster_id = new.cluster_id)) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: the maintenance window does not cover the job''s site and cluster';
    end if;
  end if;
  return new;
end
$$;

-- 3. claim_jobs: the window re-checked on the locked row ---------------------------------
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
        if not pg_try_advisory_xact_lock(hashtextextended('rackpilot.cluster:' || v_cand.cluster_id::text, 0)) then
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
       and (not (p.requires_window or p.risk = 'high') or exists (
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

-- 4. why a pending job is not being claimed ------------------------------------------------
-- waiting_for (null: nothing on the job's side; it waits for an executor of its site that
-- takes its type, or for a free slot in its cluster):
--   scheduled            scheduled_for is still ahead
--   window_required      a risky job names no maintenance window
--   window_not_approved  its window is requested, rejected or cancelled
--   window_wrong_scope   its window covers another site or cluster
--   window_not_started   its approved window opens later
--   window_over          its approved window has ended (attach another one or cancel)
create view public.v_job_waits with (security_invoker = true) as
select j.id as job_id, j.type, j.site_id, j.cluster_id, j.scheduled_for, j.maintenance_window_id,
       p.risk, (p.requires_window or p.risk = 'high') as requires_window,
       w.status as window_status, w.starts_at as window_starts_at, w.ends_at as window_ends_at,
       x.waiting_for,
       case x.waiting_for
         when 'scheduled' then 'the job is scheduled for later'
         when 'window_required' then format('a %s-risk job runs only inside an approved maintenance window; '
                                            'it names none', p.risk)
         when 'window_not_approved' then format('its maintenance window is %s, not approved', w.status)
         when 'window_wrong_scope' then 'its maintenance window covers another site or cluster'
         when 'window_not_started' then 'its maintenance window has not opened yet'
         when 'window_over' then 'its maintenance window has ended; attach another one or cancel the job'
       end as reason
  from public.jobs j
  join public.safety_policies p on p.job_type = j.type
  left join public.maintenance_windows w on w.id = j.maintenance_window_id
 cross join lateral (
   select case
     when j.scheduled_for > now() then 'scheduled'
     when not (p.requires_window or p.risk = 'high') then null
     when w.id is null then 'window_required'
     when w.status <> 'approved' then 'window_not_approved'
     when w.site_id <> j.site_id or (w.cluster_id is not null and w.cluster_id is distinct from j.cluster_id)
       then 'window_wrong_scope'
     when now() < w.starts_at then 'window_not_started'
     when now() >= w.ends_at then 'window_over'
   end as waiting_for
 ) x
 where j.status = 'pending';
comment on view public.v_job_waits is
  'Pending jobs and what each waits for (schedule, maintenance window); claim_jobs hands out none that waits.';
revoke all on public.v_job_waits from anon, authenticated;
grant select on public.v_job_waits to authenticated;
