-- rackpilot control plane, part 4: the executor's RPCs (claim, lease, fencing).
--
-- The executor reaches these through the REST API (`POST /rest/v1/rpc/<name>`) with the
-- service key; no user role may execute them (grants at the end of migration 6). They run
-- as their owner (SECURITY DEFINER) with an empty search_path, so every name is qualified.
--
-- Fencing: claim_jobs hands out a lease and a new lease_epoch. Every later write about the
-- job names the executor, the job and that epoch. fence_job() refuses the write unless the
-- job is still running under exactly that executor and epoch:
--
--   SQLSTATE P0001, message 'stale_epoch: ...'   (hint 'rackpilot.fenced')
--
-- Other errors callers can tell apart (all SQLSTATE P0001 unless noted, matched by prefix):
--   unknown_executor:   no executor with that id           executor_disabled: an admin disabled it
--   job_not_found:      no job with that id                invalid_argument: (SQLSTATE 22023) bad input
--   not_resumable:      a non-resumable step from an earlier run may not start again
--   not_referenced:     (SQLSTATE 42501) the job does not reference that credential set
--   key_mismatch:       the credential set has no envelope for this executor's key
--                       (get_job_credential_envelope, 20261128030100_functions_credentials.sql)
--   forbidden:          (SQLSTATE 42501) force_resume is for admins
--
-- Lease recovery: recover_expired_leases() sends a running job whose lease ran out back to
-- pending when its current step is resumable (or it sits between steps) and attempts
-- remain; the step keeps its checkpoint and claim_jobs returns it as resume_from. Any
-- other expired job is paused as executor_lost and waits for an admin's force_resume.

create function public.fence_job(p_executor_id uuid, p_job_id uuid, p_epoch bigint)
returns public.jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
begin
  if p_executor_id is null or p_job_id is null or p_epoch is null then
    raise exception using errcode = '22023', message = 'invalid_argument: executor id, job id and epoch are required';
  end if;
  perform set_config('rackpilot.executor_id', p_executor_id::text, true);
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = format('job_not_found: no job %s', p_job_id);
  end if;
  if v_job.status <> 'running' or v_job.claimed_by is distinct from p_executor_id or v_job.lease_epoch <> p_epoch then
    raise exception using errcode = 'P0001',
      message = format('stale_epoch: job %s is %s at epoch %s; the lease of executor %s at epoch %s is no longer valid',
                       p_job_id, v_job.status, v_job.lease_epoch, p_executor_id, p_epoch),
      hint = 'rackpilot.fenced';
  end if;
  return v_job;
end
$$;

create function public.executor_row(p_executor_id uuid)
returns public.executors
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_exec public.executors%rowtype;
  v_sent text;
begin
  if p_executor_id is null then
    raise exception using errcode = '22023', message = 'invalid_argument: executor id is required';
  end if;
  select * into v_exec from public.executors e where e.id = p_executor_id;
  if not found then
    raise exception using errcode = 'P0001', message = format('unknown_executor: no executor %s', p_executor_id);
  end if;
  v_sent := nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-rackpilot-key-id';
  if v_sent is not null and v_sent <> v_exec.key_id then
    raise exception using errcode = 'P0001',
      message = format('executor_replaced: executor %s of this site is now bound to key %s (re-keyed %s); '
                       'this process holds key %s and may no longer act for it',
                       v_exec.name, v_exec.key_id, coalesce(v_exec.rekeyed_at::text, 'by an admin'), v_sent),
      hint = 'stop this process; the identity belongs to the executor holding the new key';
  end if;
  if v_exec.status <> 'active' then
    raise exception using errcode = 'P0001', message = format('executor_disabled: executor %s is disabled', p_executor_id);
  end if;
  perform set_config('rackpilot.executor_id', p_executor_id::text, true);
  return v_exec;
end
$$;

-- register / heartbeat -------------------------------------------------------------------
create function public.register_executor(
  p_site text,
  p_name text,
  p_public_key text,
  p_key_id text,
  p_version text default '',
  p_capabilities jsonb default '{}'::jsonb,
  p_job_types public.job_type[] default null
)
returns public.executors
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_site uuid;
  v_site_name text;
  v_exec public.executors%rowtype;
begin
  if p_site is null or p_name is null or p_public_key is null or p_key_id is null then
    raise exception using errcode = '22023', message = 'invalid_argument: site, name, public key and key id are required';
  end if;
  if jsonb_typeof(coalesce(p_capabilities, '{}'::jsonb)) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: capabilities must be a JSON object';
  end if;
  -- the site may be named by id or by name
  select s.id, s.name into v_site, v_site_name from public.sites s
   where s.name = p_site
      or (p_site ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' and s.id = p_site::uuid);
  if v_site is null then
    raise exception using errcode = 'P0001', message = format('unknown_site: no site %L', p_site);
  end if;

  select * into v_exec from public.executors e where e.site_id = v_site and e.name = p_name for update;
  if not found then
    insert into public.executors as e (site_id, name, public_key, key_id, version, capabilities, job_types)
    values (v_site, p_name, p_public_key, p_key_id, coalesce(p_version, ''), coalesce(p_capabilities, '{}'::jsonb),
            p_job_types)
    on conflict (site_id, name) do nothing
    returning * into v_exec;
    if not found then
      -- another registration of the same name won the race: judge this one against it
      select * into v_exec from public.executors e where e.site_id = v_site and e.name = p_name for update;
    else
      perform set_config('rackpilot.executor_id', v_exec.id::text, true);
      return v_exec;
    end if;
  end if;

  if v_exec.key_id is distinct from p_key_id or v_exec.public_key is distinct from p_public_key then
    if v_exec.rekey_requested_at is null or (v_exec.rekey_key_id is not null and v_exec.rekey_key_id <> p_key_id) then
      raise exception using errcode = 'P0001',
        message = format('identity_bound: executor %s of site %s is bound to key %s; this process holds key %s%s',
                         p_name, v_site_name, v_exec.key_id, p_key_id,
                         case when v_exec.rekey_requested_at is not null
                              then format(' (an admin re-keyed it for key %s only)', v_exec.rekey_key_id) else '' end),
        hint = format('if this host was rebuilt or its state folder lost, an admin re-keys the identity '
                      '(rackpilot executor rekey %s/%s --key-id %s) and restarts this executor; if another host '
                      'still runs %s, give this one its own RACKPILOT_EXECUTOR_NAME',
                      v_site_name, p_name, p_key_id, p_name);
    end if;
    perform set_config('rackpilot.audit_note',
                       format('rekey: identity %s/%s moves from key %s to key %s', v_site_name, p_name, v_exec.key_id,
                              p_key_id), true);
    update public.executors e
       set previous_key_id = e.key_id, public_key = p_public_key, key_id = p_key_id, rekeyed_at = now(),
           rekey_requested_at = null, rekey_key_id = null, rekey_requested_by = null
     where e.id = v_exec.id;
  end if;

  update public.executors e
     set version = coalesce(p_version, ''), capabilities = coalesce(p_capabilities, '{}'::jsonb),
         job_types = p_job_types, last_heartbeat_at = now()
   where e.id = v_exec.id
  returning * into v_exec;
  perform set_config('rackpilot.executor_id', v_exec.id::text, true);
  return v_exec;
end
$$;

-- p_leases: [{"job_id": "<uuid>", "epoch": <n>}, ...] for the jobs the executor works on.
-- Returns {"renewed": [...], "fenced": [...], "cancel_requested": [...], "pause_requested": [...],
-- "window_closed": [...]}: a fenced job must be dropped at once; the others tell the
-- executor what operators asked, and which jobs needing a window have lost theirs (ended,
-- or cancelled by an approver) and must pause as window_closed at their next safe point.
create function public.heartbeat(p_executor_id uuid, p_leases jsonb default '[]'::jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  perform public.executor_row(p_executor_id);
  if jsonb_typeof(coalesce(p_leases, '[]'::jsonb)) <> 'array'
     or exists (select 1 from jsonb_array_elements(coalesce(p_leases, '[]'::jsonb)) e
                where jsonb_typeof(e) <> 'object' or not (e ? 'job_id') or jsonb_typeof(e -> 'epoch') <> 'number') then
    raise exception using errcode = '22023',
      message = 'invalid_argument: leases must be an array of {"job_id": uuid, "epoch": integer}';
  end if;
  update public.executors e set last_heartbeat_at = now() where e.id = p_executor_id;

  with l as (
    select (e ->> 'job_id')::uuid as job_id, (e ->> 'epoch')::bigint as epoch
    from jsonb_array_elements(coalesce(p_leases, '[]'::jsonb)) e
  ),
  renewed as (
    update public.jobs j
       set lease_expires_at = now() + make_interval(secs => p.lease_seconds)
      from l, public.safety_policies p
     where j.id = l.job_id and j.lease_epoch = l.epoch and j.claimed_by = p_executor_id
       and j.status = 'running' and p.job_type = j.type
    returning j.id, j.cancel_requested_at, j.pause_requested_at,
              (p.requires_window and not exists (
                 select 1 from public.maintenance_windows w
                  where w.id = j.maintenance_window_id and w.status = 'approved'
                    and now() >= w.starts_at and now() < w.ends_at)) as window_closed
  )
  select jsonb_build_object(
    'renewed', coalesce((select jsonb_agg(r.id) from renewed r), '[]'::jsonb),
    'fenced', coalesce((select jsonb_agg(l.job_id) from l where l.job_id not in (select r.id from renewed r)), '[]'::jsonb),
    'cancel_requested', coalesce((select jsonb_agg(r.id) from renewed r where r.cancel_requested_at is not null), '[]'::jsonb),
    'pause_requested', coalesce((select jsonb_agg(r.id) from renewed r where r.pause_requested_at is not null), '[]'::jsonb),
    'window_closed', coalesce((select jsonb_agg(r.id) from renewed r where r.window_closed), '[]'::jsonb)
  ) into v_result;
  return v_result;
end
$$;

-- The candidate query of claim_jobs, on its own so that it can keep one cached plan per
-- session: its subqueries make planning it cost more than running it. With sorts disabled
-- that cached (generic) plan walks jobs_claim_idx in claim order and stops after p_max rows
-- whatever the site's share of the table; the rows come back locked (SKIP LOCKED: rows
-- other claimers hold are passed over, never waited for).
create function public.claim_candidates(
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

-- claim ------------------------------------------------------------------------------------
-- Hands out up to p_max pending jobs of the executor's site, in priority order, whose
-- schedule has come, whose type the executor takes, that hold an approved, current
-- maintenance window when the safety policy requires one, and whose cluster has room under
-- the policy's per-cluster concurrency. Rows are locked FOR UPDATE SKIP LOCKED, so
-- concurrent claimers never wait for each other and never get the same job. The cluster
-- check runs under a per-cluster advisory lock (try-lock: a cluster another claimer is
-- evaluating is skipped, never waited for), so two claimers cannot both take its last slot.
create function public.claim_jobs(p_executor_id uuid, p_max integer default 1)
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

-- progress ---------------------------------------------------------------------------------
create function public.report_step(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_step_key text,
  p_seq integer,
  p_name text,
  p_status public.step_status,
  p_resumable boolean default false,
  p_checkpoint jsonb default null,
  p_details jsonb default null,
  p_error text default null,
  p_task_id uuid default null
)
returns public.workflow_executions
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job  public.jobs%rowtype;
  v_old  public.workflow_executions%rowtype;
  v_step public.workflow_executions%rowtype;
  v_done boolean := p_status in ('completed', 'failed', 'skipped');
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_status is null or p_step_key is null or p_seq is null or p_name is null then
    raise exception using errcode = '22023', message = 'invalid_argument: step key, seq, name and status are required';
  end if;
  if p_details is not null and jsonb_typeof(p_details) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: details must be a JSON object';
  end if;
  if p_task_id is not null and not exists (select 1 from public.job_tasks t where t.id = p_task_id and t.job_id = p_job_id) then
    raise exception using errcode = '22023', message = 'invalid_argument: the task does not belong to this job';
  end if;

  select * into v_old from public.workflow_executions w where w.job_id = p_job_id and w.step_key = p_step_key for update;
  -- A step that began in an earlier run of this job and is not marked resumable must not
  -- start again unseen (a firmware flash, say); an operator decides via force_resume.
  if found and p_status = 'running' and not v_old.resumable
     and v_old.status in ('running', 'failed') and v_old.job_attempt <> v_job.attempts then
    raise exception using errcode = 'P0001',
      message = format('not_resumable: step %s of job %s started in an earlier run and is not resumable', p_step_key, p_job_id);
  end if;

  insert into public.workflow_executions as w
    (job_id, task_id, seq, step_key, name, status, resumable, checkpoint, details, error, attempts, job_attempt,
     started_at, finished_at)
  values (p_job_id, p_task_id, p_seq, p_step_key, p_name, p_status, coalesce(p_resumable, false), p_checkpoint,
          coalesce(p_details, '{}'::jsonb), p_error, case when p_status = 'pending' then 0 else 1 end, v_job.attempts,
          case when p_status <> 'pending' then now() end,
          case when v_done then now() end)
  on conflict (job_id, step_key) do update
     set seq = excluded.seq,
         name = excluded.name,
         task_id = coalesce(excluded.task_id, w.task_id),
         status = excluded.status,
         resumable = excluded.resumable,
         -- a report without a checkpoint keeps the last one
         checkpoint = coalesce(excluded.checkpoint, w.checkpoint),
         details = w.details || excluded.details,
         error = excluded.error,
         attempts = w.attempts + case when excluded.status = 'running' and w.status <> 'running' then 1 else 0 end,
         job_attempt = case when excluded.status = 'running' then excluded.job_attempt else w.job_attempt end,
         started_at = case when excluded.status = 'running' and w.status <> 'running' then now()
                           else coalesce(w.started_at, excluded.started_at) end,
         finished_at = excluded.finished_at
  returning * into v_step;

  if v_job.current_step_id is distinct from v_step.id then
    update public.jobs j set current_step_id = v_step.id where j.id = p_job_id;
  end if;
  return v_step;
end
$$;

create function public.update_task(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_target_kind public.task_target_kind,
  p_target_id uuid,
  p_status public.task_status,
  p_progress integer default null,
  p_details jsonb default null,
  p_result jsonb default null,
  p_error text default null,
  p_target_name text default null,
  p_seq integer default null
)
returns public.job_tasks
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_task public.job_tasks%rowtype;
  v_done boolean := p_status in ('completed', 'failed', 'skipped', 'cancelled');
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_target_kind is null or p_target_id is null or p_status is null then
    raise exception using errcode = '22023', message = 'invalid_argument: target kind, target id and status are required';
  end if;
  if p_progress is not null and (p_progress < 0 or p_progress > 100) then
    raise exception using errcode = '22023', message = 'invalid_argument: progress must be between 0 and 100';
  end if;
  if p_details is not null and jsonb_typeof(p_details) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: details must be a JSON object';
  end if;
  insert into public.job_tasks as t
    (job_id, target_kind, target_id, target_name, seq, status, progress, details, result, error, started_at, finished_at)
  values (p_job_id, p_target_kind, p_target_id, coalesce(p_target_name, ''), coalesce(p_seq, 0), p_status,
          coalesce(p_progress, case when p_status = 'completed' then 100 else 0 end),
          coalesce(p_details, '{}'::jsonb), p_result, p_error,
          case when p_status <> 'pending' then now() end, case when v_done then now() end)
  on conflict (job_id, target_kind, target_id) do update
     set status = excluded.status,
         target_name = case when p_target_name is null then t.target_name else excluded.target_name end,
         seq = case when p_seq is null then t.seq else excluded.seq end,
         progress = case when p_progress is not null then excluded.progress
                         when excluded.status = 'completed' then 100 else t.progress end,
         details = t.details || excluded.details,
         result = coalesce(excluded.result, t.result),
         error = excluded.error,
         started_at = coalesce(t.started_at, excluded.started_at),
         finished_at = excluded.finished_at
  returning * into v_task;
  return v_task;
end
$$;

-- p_blockers: [{"kind": blocker_kind, "description": text, "host_id"?, "vm_id"?, "server_id"?,
-- "details"?: {}}]; required (non-empty) when the reason is 'blockers'.
create function public.pause_job(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_reason public.pause_reason,
  p_blockers jsonb default '[]'::jsonb,
  p_details jsonb default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids jsonb;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_reason is null or p_reason = 'executor_lost' then
    raise exception using errcode = '22023',
      message = 'invalid_argument: an executor pauses for blockers, operator or window_closed';
  end if;
  if jsonb_typeof(coalesce(p_blockers, '[]'::jsonb)) <> 'array' then
    raise exception using errcode = '22023', message = 'invalid_argument: blockers must be a JSON array';
  end if;
  if (p_reason = 'blockers') <> (jsonb_array_length(coalesce(p_blockers, '[]'::jsonb)) > 0) then
    raise exception using errcode = '22023',
      message = 'invalid_argument: blockers are given exactly when the reason is blockers';
  end if;
  if p_details is not null and jsonb_typeof(p_details) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: details must be a JSON object';
  end if;

  with ins as (
    insert into public.job_blockers (job_id, kind, description, host_id, vm_id, server_id, details)
    select p_job_id, (b ->> 'kind')::public.blocker_kind, b ->> 'description',
           (b ->> 'host_id')::uuid, (b ->> 'vm_id')::uuid, (b ->> 'server_id')::uuid,
           coalesce(b -> 'details', '{}'::jsonb)
      from jsonb_array_elements(coalesce(p_blockers, '[]'::jsonb)) b
    returning id
  )
  select coalesce(jsonb_agg(ins.id), '[]'::jsonb) into v_ids from ins;

  update public.jobs j
     set status = 'paused', pause_reason = p_reason,
         details = j.details || coalesce(p_details, '{}'::jsonb)
   where j.id = p_job_id;
  return jsonb_build_object('job_id', p_job_id, 'status', 'paused', 'pause_reason', p_reason, 'blocker_ids', v_ids);
end
$$;

create function public.finish_job(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_status public.job_status,
  p_result jsonb default null,
  p_error text default null,
  p_details jsonb default null
)
returns public.jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_status is null or p_status not in ('completed', 'failed', 'cancelled') then
    raise exception using errcode = '22023', message = 'invalid_argument: a job finishes as completed, failed or cancelled';
  end if;
  if p_status = 'failed' and coalesce(p_error, '') = '' then
    raise exception using errcode = '22023', message = 'invalid_argument: a failed job needs an error';
  end if;
  if p_status = 'cancelled' and v_job.cancel_requested_at is null then
    raise exception using errcode = '22023', message = 'invalid_argument: only a job whose cancel was requested finishes as cancelled';
  end if;
  if p_details is not null and jsonb_typeof(p_details) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: details must be a JSON object';
  end if;
  update public.jobs j
     set status = p_status, result = p_result, error = p_error,
         details = j.details || coalesce(p_details, '{}'::jsonb)
   where j.id = p_job_id
  returning * into v_job;
  return v_job;
end
$$;

-- artifacts ---------------------------------------------------------------------------------
create function public.put_artifact(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_kind public.artifact_kind,
  p_content_base64 text,
  p_sha256 text,
  p_content_type text default 'application/octet-stream',
  p_server_id uuid default null
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_content bytea;
  v_id uuid;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_kind is null or p_content_base64 is null or p_sha256 is null then
    raise exception using errcode = '22023', message = 'invalid_argument: kind, content and sha256 are required';
  end if;
  begin
    v_content := decode(p_content_base64, 'base64');
  exception when others then
    raise exception using errcode = '22023', message = 'invalid_argument: content is not valid base64';
  end;
  if encode(extensions.digest(v_content, 'sha256'), 'hex') <> lower(p_sha256) then
    raise exception using errcode = '22023', message = 'invalid_argument: sha256 does not match the content';
  end if;
  insert into public.artifacts (job_id, server_id, kind, content_type, sha256, size_bytes, content)
  values (p_job_id, p_server_id, p_kind, coalesce(p_content_type, 'application/octet-stream'), lower(p_sha256),
          octet_length(v_content), v_content)
  returning id into v_id;
  return v_id;
end
$$;

-- recovery ---------------------------------------------------------------------------------
create function public.recover_expired_leases()
returns table (job_id uuid, outcome text, lease_epoch bigint)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  return query
  with expired as (
    select j.id,
           (j.attempts < p.max_attempts
            and (w.id is null or w.status in ('pending', 'completed', 'skipped') or w.resumable)) as requeue
      from public.jobs j
      join public.safety_policies p on p.job_type = j.type
      left join public.workflow_executions w on w.id = j.current_step_id
     where j.status = 'running' and j.lease_expires_at < now()
     for update of j skip locked
  ),
  moved as (
    update public.jobs j
       set status = case when e.requeue then 'pending'::public.job_status else 'paused'::public.job_status end,
           pause_reason = case when e.requeue then null else 'executor_lost'::public.pause_reason end,
           lease_epoch = j.lease_epoch + 1
      from expired e
     where j.id = e.id
    returning j.id, j.status, j.lease_epoch
  )
  select m.id, case when m.status = 'pending' then 'requeued' else 'paused_executor_lost' end, m.lease_epoch
    from moved m;
end
$$;

-- Admin break-glass: put a paused (any reason) or running job back to pending under a new
-- epoch, fencing out whoever held it. Audited with the admin as actor and the note given.
create function public.force_resume(p_job_id uuid, p_note text)
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
      raise exception using errcode = '42501', message = 'forbidden: force_resume is for admins';
    end if;
  elsif coalesce(auth.role(), '') <> 'service_role' and session_user <> 'postgres' then
    raise exception using errcode = '42501', message = 'forbidden: force_resume is for admins';
  end if;
  if p_job_id is null or coalesce(btrim(p_note), '') = '' then
    raise exception using errcode = '22023', message = 'invalid_argument: a job id and a note saying why are required';
  end if;
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = format('job_not_found: no job %s', p_job_id);
  end if;
  if v_job.status not in ('paused', 'running') then
    raise exception using errcode = 'P0001',
      message = format('illegal_transition: force_resume takes a paused or running job, not %s', v_job.status);
  end if;
  perform set_config('rackpilot.audit_note', 'force_resume: ' || p_note, true);
  -- the admin vouches that the interrupted step may run again
  update public.workflow_executions w
     set resumable = true, details = w.details || jsonb_build_object('force_resumed_at', now(), 'force_resume_note', p_note)
   where w.id = v_job.current_step_id and w.status in ('running', 'failed') and not w.resumable;
  update public.jobs j set status = 'pending', lease_epoch = j.lease_epoch + 1
   where j.id = p_job_id
  returning * into v_job;
  return v_job;
end
$$;
