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
--    credential or site columns change, so users need no EXECUTE on it (none holds it:
--    20261128010600_access.sql).
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

-- 1. no direct INSERT (the API roles never held one: 20261128010600_access.sql) -------------
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

-- 2. the state machine (jobs_guard, 20261128010200_jobs.sql) and 3. the claim (claim_jobs,
-- 20261128010300_executor_rpcs.sql) hold the changes described above ---------------------

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
