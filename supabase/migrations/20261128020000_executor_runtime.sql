-- rackpilot executor runtime: what the executor service needs beyond the core RPCs.
--
--   release_job(executor, job, epoch)        hand a job back at a safe point (SIGTERM)
--   executor_recover_leases(executor)        recover_expired_leases, one executor at a time
--   report_executor_metrics(executor, json)  the heartbeat's metrics, shown in executor health
--
-- Same conventions as the core executor RPCs: service role only, SECURITY DEFINER with an
-- empty search_path, fenced by public.fence_job.

-- A running job goes back to pending, keeping its steps and checkpoints; the epoch moves
-- on so nothing the releasing executor might still send is accepted.
create function public.release_job(p_executor_id uuid, p_job_id uuid, p_epoch bigint)
returns public.jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  update public.jobs j set status = 'pending', lease_epoch = j.lease_epoch + 1
   where j.id = p_job_id
  returning * into v_job;
  return v_job;
end
$$;

-- Every executor calls this periodically; a transaction-scoped advisory try-lock lets one
-- of them do the work at a time and the others return at once with nothing.
create function public.executor_recover_leases(p_executor_id uuid)
returns table (job_id uuid, outcome text, lease_epoch bigint)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.executor_row(p_executor_id);
  if not pg_try_advisory_xact_lock(hashtextextended('rackpilot.recover_expired_leases', 0)) then
    return;
  end if;
  return query select r.job_id, r.outcome, r.lease_epoch from public.recover_expired_leases() r;
end
$$;

create function public.report_executor_metrics(p_executor_id uuid, p_metrics jsonb)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.executor_row(p_executor_id);
  if p_metrics is null or jsonb_typeof(p_metrics) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: metrics must be a JSON object';
  end if;
  if pg_column_size(p_metrics) > 65536 then
    raise exception using errcode = '22023', message = 'invalid_argument: metrics are limited to 64 KiB';
  end if;
  update public.executors e set metrics = p_metrics, metrics_at = now() where e.id = p_executor_id;
end
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.release_job(uuid, uuid, bigint)',
    'public.executor_recover_leases(uuid)',
    'public.report_executor_metrics(uuid, jsonb)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;

-- notification outbox delivery --------------------------------------------------------------
-- Every executor drains the outbox (its own site's job messages, and those about no job);
-- a row is handed to one of them at a time by a lease
-- (FOR UPDATE SKIP LOCKED + claimed_by token + lease_expires_at). A sender that dies
-- mid-send leaves the row to be taken again once its lease ran out; a finished send is
-- recorded only by the holder of the current claim token, so a late answer from an
-- expired claim cannot overwrite the newer one.
create function public.executor_claim_notifications(p_executor_id uuid, p_max integer default 20,
                                                    p_lease_seconds integer default 60)
returns table (id bigint, channel public.notification_channel, destination text, event text, payload jsonb,
               job_id uuid, attempts integer, claim_token text)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_exec public.executors%rowtype;
begin
  v_exec := public.executor_row(p_executor_id);
  if p_max is null or p_max < 1 or p_max > 1000 or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception using errcode = '22023', message = 'invalid_argument: p_max 1..1000 and p_lease_seconds >= 1';
  end if;
  return query
  with due as (
    select o.id
      from public.notification_outbox o
     where o.status = 'pending' and o.next_attempt_at <= now()
       and (o.lease_expires_at is null or o.lease_expires_at < now())
       -- a job's messages go out from its own site (whose network reaches its Teams/SMTP);
       -- messages about no job (maintenance windows...) from any site
       and (o.job_id is null
            or exists (select 1 from public.jobs j where j.id = o.job_id and j.site_id = v_exec.site_id))
     order by o.next_attempt_at, o.id
     limit p_max
     for update skip locked
  ),
  claimed as (
    update public.notification_outbox o
       set claimed_by = p_executor_id::text || ':' || extensions.gen_random_uuid()::text,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           attempts = o.attempts + 1
      from due
     where o.id = due.id
    returning o.*
  )
  select c.id, s.channel, s.target, c.event_kind::text, c.payload, c.job_id, c.attempts, c.claimed_by
    from claimed c
    left join public.notification_settings s on s.id = c.setting_id
   order by c.id;
end
$$;

-- p_error null: sent. Otherwise retry after p_retry_in_seconds, or dead once attempts
-- reached p_max_attempts. Returns the row's new status, or null when the claim was stale.
create function public.executor_complete_notification(p_id bigint, p_claim_token text, p_error text default null,
                                                      p_retry_in_seconds double precision default 60,
                                                      p_max_attempts integer default 8)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_status public.outbox_status;
begin
  if p_id is null or p_claim_token is null or p_max_attempts is null or p_max_attempts < 1 then
    raise exception using errcode = '22023', message = 'invalid_argument: id, claim token and max attempts are required';
  end if;
  update public.notification_outbox o
     set status = case when p_error is null then 'sent'::public.outbox_status
                       when o.attempts >= p_max_attempts then 'dead'::public.outbox_status
                       else 'pending'::public.outbox_status end,
         sent_at = case when p_error is null then now() end,
         last_error = left(p_error, 4000),
         next_attempt_at = case when p_error is null then o.next_attempt_at
                                else now() + make_interval(secs => greatest(coalesce(p_retry_in_seconds, 60), 0)) end,
         claimed_by = null,
         lease_expires_at = null
   where o.id = p_id and o.claimed_by = p_claim_token and o.status = 'pending'
  returning o.status into v_status;
  return v_status::text;
end
$$;

-- "Running longer than usual" comes from the executor (only it knows a step's expected
-- duration); it is fenced like every other job write and fans out like the trigger's events.
create function public.job_notice(p_executor_id uuid, p_job_id uuid, p_epoch bigint, p_event text,
                                  p_payload jsonb default '{}'::jsonb)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
  v_n integer;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_event is distinct from 'job_slow' then
    raise exception using errcode = '22023', message = 'invalid_argument: the executor sends only job_slow notices';
  end if;
  if p_payload is null or jsonb_typeof(p_payload) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: payload must be a JSON object';
  end if;
  insert into public.notification_outbox (setting_id, event_kind, payload, job_id)
  select s.id, 'job_slow', p_payload || jsonb_build_object('job_id', v_job.id, 'type', v_job.type,
                                                           'status', v_job.status, 'site_id', v_job.site_id),
         v_job.id
    from public.notification_settings s
   where s.enabled and 'job_slow' = any (s.events)
     and (s.site_id is null or s.site_id = v_job.site_id)
     and (s.job_types is null or v_job.type = any (s.job_types));
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.executor_claim_notifications(uuid, integer, integer)',
    'public.executor_complete_notification(bigint, text, text, double precision, integer)',
    'public.job_notice(uuid, uuid, bigint, text, jsonb)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
