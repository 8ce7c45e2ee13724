-- A fleet in, and on record: discovery by IP range, the BMC call log, and the inventory
-- and compliance job types as operator jobs.
--
-- 1. Safety policies for the two new job types (policies/safety.yaml holds the same rows):
--    discovery_scan and catalog_refresh only read, so they are low risk, need no window and
--    take no host out of service.
--
-- 2. discovery_results: one row per probed address and scan (job): what answered, what it
--    is (model, service tag, iDRAC generation and firmware), and what the scan did with it
--    (registered, updated, unchanged; in a dry run would_register / would_update) or why it
--    was skipped (no_answer, not_redfish, not_dell, wrong_credentials, credential_not_allowed,
--    duplicate_service_tag, session_limit, error). Written only by
--    executor_record_discovery, fenced by the job's lease; every signed-in user reads it
--    (it names addresses and models, as servers does), admins may delete it.
--
--    How discovery squares with credential binding. A credential set is presented only to
--    the endpoints sealed inside its envelope (executor/binding.py); an envelope may name an
--    IP network in CIDR form. Discovery probes each address first WITHOUT a credential
--    (GET /redfish/v1, the service root is public); it then tries the scan's credential sets
--    in priority order, and a set is presented to an address only when one of its sealed
--    endpoints allows that scheme, host, port and TLS trust. The TLS trust the scan uses for
--    an address is the one sealed for it. A set whose envelope does not cover the address is
--    never sent there: the address is recorded as credential_not_allowed. A registered
--    server gets that credential set and that trust, so the binding discovery writes is one
--    an admin already sealed; discovery never changes an existing server's address, TLS
--    trust or credential (only an admin does, migration 20261206100000), it fills them only
--    where they are empty.
--
-- 3. bmc_calls: every Redfish and OME request a job makes (method, path, HTTP status,
--    duration, Dell MessageId, error class, job, step, target). No request body that could
--    carry a secret is kept: session logins and account changes never, other bodies only
--    redacted by the executor (executor/calllog.py) and cut to 2 KB. Rows are written in
--    batches by executor_record_bmc_calls, which also prunes rows older than the site's
--    retention (sites.bmc_call_retention_days, default 30, admins change it). Operators
--    read it (the first place to look when an iDRAC misbehaves), admins may delete.

-- 1. safety policies -------------------------------------------------------------------------
insert into public.safety_policies
  (job_type, risk, requires_window, takes_hosts_out, max_hosts_out_per_cluster, max_concurrent_per_cluster,
   lease_seconds, step_timeout_seconds, job_timeout_seconds, max_attempts)
values
  ('discovery_scan',  'low', false, false, null, null, 60, 1800, 7200, 5),
  ('catalog_refresh', 'low', false, false, null, null, 60, 900,  3600, 5)
on conflict (job_type) do nothing;

-- 2. discovery --------------------------------------------------------------------------------
create table public.discovery_results (
  id                bigint generated always as identity primary key,
  job_id            uuid not null references public.jobs (id) on delete cascade,
  site_id           uuid not null references public.sites (id) on delete cascade,
  address           text not null constraint discovery_results_address_check check (length(address) between 1 and 300),
  outcome           text not null constraint discovery_results_outcome_check check (outcome in ('registered', 'updated', 'unchanged', 'would_register',
                                                     'would_update', 'skipped')),
  reason            text constraint discovery_results_reason_check check (reason in ('no_answer', 'not_redfish', 'not_dell', 'wrong_credentials',
                                           'credential_not_allowed', 'duplicate_service_tag', 'session_limit',
                                           'error')),
  server_id         uuid references public.servers (id) on delete set null,
  service_tag       text constraint discovery_results_service_tag_check check (length(service_tag) <= 32),
  model             text constraint discovery_results_model_check check (length(model) <= 128),
  idrac_generation  text constraint discovery_results_idrac_generation_check check (length(idrac_generation) <= 64),
  firmware_version  text constraint discovery_results_firmware_version_check check (length(firmware_version) <= 64),
  credential_set_id uuid references public.credential_sets (id) on delete set null,
  message           text not null default '' constraint discovery_results_message_check check (length(message) <= 2000),
  details           jsonb not null default '{}'::jsonb constraint discovery_results_details_check check (jsonb_typeof(details) = 'object'),
  created_at        timestamptz not null default now(),
  unique (job_id, address),
  constraint discovery_results_skip_reason_check check ((outcome = 'skipped') = (reason is not null))
);
create index discovery_results_site_idx on public.discovery_results (site_id, created_at desc);
alter table public.discovery_results enable row level security;
revoke all on public.discovery_results from anon, authenticated;
revoke all on sequence public.discovery_results_id_seq from anon, authenticated;
grant select, delete on public.discovery_results to authenticated;
create policy discovery_results_select_viewer on public.discovery_results for select to authenticated
  using ((select public.has_role('viewer')));
create policy discovery_results_delete_admin on public.discovery_results for delete to authenticated
  using ((select public.has_role('admin')));

-- Record one batch of probe results and register what answered. p_results: array of
--   {address, idrac_address, reason?, message?, server_id?, service_tag?, model?, idrac_generation?,
--    firmware_version?, credential_set_id?, tls?, details?}
-- An element with a reason was skipped by the executor. The rest identify a BMC; this
-- function decides, under a site-wide lock so that two scans of one site never race:
--   - server_id given (the executor matched the address to a registered server): update
--     its facts (model, tag, iDRAC firmware), 'updated' or 'unchanged';
--   - a server of the site already at idrac_address: the same;
--   - the service tag held by another server (any site): skipped duplicate_service_tag;
--   - otherwise insert a server bound to the credential set and TLS trust that
--     authenticated ('registered').
-- In a dry run nothing but the results is written (would_register / would_update).
create function public.executor_record_discovery(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_dry_run boolean,
  p_results jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job     public.jobs%rowtype;
  v_el      jsonb;
  v_srv     public.servers%rowtype;
  v_other   public.servers%rowtype;
  v_tag     text;
  v_outcome text;
  v_reason  text;
  v_msg     text;
  v_sid     uuid;
  v_cred    uuid;
  v_changed boolean;
  v_counts  jsonb := '{}'::jsonb;
  v_key     text;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if jsonb_typeof(coalesce(p_results, 'null'::jsonb)) <> 'array' then
    raise exception using errcode = '22023', message = 'invalid_argument: results must be a JSON array';
  end if;
  -- one scan of a site at a time decides registrations (a second waits, then sees the first's rows)
  perform pg_advisory_xact_lock(hashtextextended('rackpilot.discovery:' || v_job.site_id::text, 0));
  for v_el in select e from jsonb_array_elements(p_results) e loop
    if jsonb_typeof(v_el) <> 'object' or coalesce(v_el ->> 'address', '') = '' then
      raise exception using errcode = '22023', message = 'invalid_argument: each result needs an address';
    end if;
    v_outcome := null; v_reason := v_el ->> 'reason'; v_msg := coalesce(v_el ->> 'message', '');
    v_sid := null; v_srv := null; v_other := null;
    v_tag := case when upper(v_el ->> 'service_tag') ~ '^[A-Z0-9]{5,10}$' then upper(v_el ->> 'service_tag') end;
    v_cred := nullif(v_el ->> 'credential_set_id', '')::uuid;
    if v_cred is not null and not (v_cred = any (v_job.credential_set_ids)) then
      raise exception using errcode = '22023',
        message = format('invalid_argument: credential set %s is not one of the job''s', v_cred);
    end if;
    if v_reason is null then
      if v_tag is null then
        v_reason := 'error';
        v_msg := 'the BMC reported no usable service tag';
      end if;
    end if;
    if v_reason is null then
      if jsonb_typeof(v_el -> 'server_id') = 'string' then
        select * into v_srv from public.servers s
         where s.id = (v_el ->> 'server_id')::uuid and s.site_id = v_job.site_id for update;
      end if;
      if v_srv.id is null then
        select * into v_srv from public.servers s
         where s.site_id = v_job.site_id and s.idrac_address = v_el ->> 'idrac_address' for update;
      end if;
      select * into v_other from public.servers s
       where s.service_tag = v_tag and s.id is distinct from v_srv.id limit 1;
      if v_other.id is not null then
        v_reason := 'duplicate_service_tag';
        v_msg := format('service tag %s is already registered as %s (%s)', v_tag, v_other.name, v_other.idrac_address);
        v_sid := v_other.id;
      elsif v_srv.id is not null then
        v_sid := v_srv.id;
        v_changed := (v_srv.model, v_srv.service_tag, v_srv.idrac_version)
                     is distinct from (coalesce(nullif(v_el ->> 'model', ''), v_srv.model), v_tag,
                                       coalesce(v_el ->> 'firmware_version', v_srv.idrac_version))
                     or (v_srv.credential_set_id is null and v_cred is not null);
        if p_dry_run then
          v_outcome := case when v_changed then 'would_update' else 'unchanged' end;
        else
          update public.servers s
             set model = coalesce(nullif(v_el ->> 'model', ''), s.model),
                 service_tag = v_tag,
                 idrac_version = coalesce(v_el ->> 'firmware_version', s.idrac_version),
                 -- binding only where there is none: the credential's envelope allows this address
                 credential_set_id = coalesce(s.credential_set_id, v_cred),
                 details = case when s.credential_set_id is null and not (s.details ? 'tls') and v_el ? 'tls'
                                then s.details || jsonb_build_object('tls', v_el -> 'tls') else s.details end
                           || jsonb_build_object('idrac_generation', v_el ->> 'idrac_generation'),
                 last_seen_at = now()
           where s.id = v_srv.id;
          v_outcome := case when v_changed then 'updated' else 'unchanged' end;
        end if;
      elsif p_dry_run then
        v_outcome := 'would_register';
      else
        insert into public.servers (site_id, name, idrac_address, service_tag, model, idrac_version, lc_version,
                                    credential_set_id, last_seen_at, details)
        values (v_job.site_id, lower(v_tag), v_el ->> 'idrac_address', v_tag, coalesce(v_el ->> 'model', ''),
                v_el ->> 'firmware_version', v_el ->> 'firmware_version', v_cred, now(),
                jsonb_build_object('tls', coalesce(v_el -> 'tls', '{}'::jsonb), 'discovered_by', p_job_id,
                                   'idrac_generation', v_el ->> 'idrac_generation'))
        returning id into v_sid;
        v_outcome := 'registered';
      end if;
    end if;
    if v_reason is not null then
      v_outcome := 'skipped';
    end if;
    insert into public.discovery_results (job_id, site_id, address, outcome, reason, server_id, service_tag, model,
                                          idrac_generation, firmware_version, credential_set_id, message, details)
    values (p_job_id, v_job.site_id, left(v_el ->> 'address', 300), v_outcome, v_reason, v_sid,
            left(v_el ->> 'service_tag', 32), left(v_el ->> 'model', 128), left(v_el ->> 'idrac_generation', 64),
            left(v_el ->> 'firmware_version', 64), v_cred, left(v_msg, 2000),
            coalesce(case when jsonb_typeof(v_el -> 'details') = 'object' then v_el -> 'details' end, '{}'::jsonb))
    on conflict (job_id, address) do update
      set outcome = excluded.outcome, reason = excluded.reason, server_id = excluded.server_id,
          service_tag = excluded.service_tag, model = excluded.model, idrac_generation = excluded.idrac_generation,
          firmware_version = excluded.firmware_version, credential_set_id = excluded.credential_set_id,
          message = excluded.message, details = excluded.details, created_at = now();
    v_key := coalesce(v_reason, v_outcome);
    v_counts := jsonb_set(v_counts, array[v_key], to_jsonb(coalesce((v_counts ->> v_key)::integer, 0) + 1));
  end loop;
  return v_counts;
end
$$;
comment on function public.executor_record_discovery(uuid, uuid, bigint, boolean, jsonb) is
  'discovery_scan: record probe results and register or update the servers that answered (fenced).';

-- 3. the BMC call log -------------------------------------------------------------------------
create table public.bmc_calls (
  id            bigint generated always as identity primary key,
  job_id        uuid not null references public.jobs (id) on delete cascade,
  site_id       uuid not null references public.sites (id) on delete cascade,
  executor_id   uuid references public.executors (id) on delete set null,
  step          text constraint bmc_calls_step_check check (length(step) <= 128),
  target        text not null constraint bmc_calls_target_check check (length(target) <= 300),
  protocol      text not null constraint bmc_calls_protocol_check check (protocol in ('redfish', 'ome')),
  method        text not null constraint bmc_calls_method_check check (method ~ '^[A-Z]{3,7}$'),
  path          text not null constraint bmc_calls_path_check check (length(path) <= 1000),
  status        smallint constraint bmc_calls_status_check check (status between 100 and 599),
  duration_ms   integer not null constraint bmc_calls_duration_ms_check check (duration_ms >= 0),
  message_id    text constraint bmc_calls_message_id_check check (length(message_id) <= 128),
  error         text constraint bmc_calls_error_check check (length(error) <= 500),
  request_body  jsonb,
  response_note text constraint bmc_calls_response_note_check check (length(response_note) <= 1000),
  at            timestamptz not null,
  recorded_at   timestamptz not null default now(),
  constraint bmc_calls_request_body_check check (request_body is null or length(request_body::text) <= 2048)
);
create index bmc_calls_job_idx on public.bmc_calls (job_id, at, id);
create index bmc_calls_site_at_idx on public.bmc_calls (site_id, at);
create index bmc_calls_target_idx on public.bmc_calls (target, at desc);
alter table public.bmc_calls enable row level security;
revoke all on public.bmc_calls from anon, authenticated;
revoke all on sequence public.bmc_calls_id_seq from anon, authenticated;
grant select, delete on public.bmc_calls to authenticated;
create policy bmc_calls_select_operator on public.bmc_calls for select to authenticated
  using ((select public.has_role('operator')));
create policy bmc_calls_delete_admin on public.bmc_calls for delete to authenticated
  using ((select public.has_role('admin')));

-- A batch of calls from one executor. Each call names its job, which must be of the
-- executor's site (the job may have finished since: the calls happened all the same).
-- Returns the number stored; prunes up to 5000 expired rows of the site per call.
create function public.executor_record_bmc_calls(p_executor_id uuid, p_calls jsonb)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_exec public.executors%rowtype;
  v_n    integer;
  v_days integer;
begin
  v_exec := public.executor_row(p_executor_id);
  if jsonb_typeof(coalesce(p_calls, 'null'::jsonb)) <> 'array' or jsonb_array_length(p_calls) > 5000 then
    raise exception using errcode = '22023', message = 'invalid_argument: calls must be an array of at most 5000';
  end if;
  if exists (select 1 from jsonb_array_elements(p_calls) c
              left join public.jobs j on j.id = (c ->> 'job_id')::uuid
             where j.id is null or j.site_id <> v_exec.site_id) then
    raise exception using errcode = '22023', message = 'invalid_argument: every call names a job of the executor''s site';
  end if;
  insert into public.bmc_calls (job_id, site_id, executor_id, step, target, protocol, method, path, status,
                                duration_ms, message_id, error, request_body, response_note, at)
  select (c ->> 'job_id')::uuid, v_exec.site_id, v_exec.id, left(c ->> 'step', 128), left(c ->> 'target', 300),
         coalesce(c ->> 'protocol', 'redfish'), upper(c ->> 'method'), left(c ->> 'path', 1000),
         (c ->> 'status')::smallint, greatest(0, coalesce((c ->> 'duration_ms')::integer, 0)),
         left(c ->> 'message_id', 128), left(c ->> 'error', 500),
         case when jsonb_typeof(c -> 'request_body') in ('object', 'array')
               and length((c -> 'request_body')::text) <= 2048 then c -> 'request_body' end,
         left(c ->> 'response_note', 1000), coalesce((c ->> 'at')::timestamptz, now())
    from jsonb_array_elements(p_calls) c;
  get diagnostics v_n = row_count;
  select bmc_call_retention_days into v_days from public.sites where id = v_exec.site_id;
  delete from public.bmc_calls b
   where b.id in (select x.id from public.bmc_calls x
                   where x.site_id = v_exec.site_id and x.at < now() - make_interval(days => v_days)
                   order by x.at limit 5000);
  return v_n;
end
$$;
comment on function public.executor_record_bmc_calls(uuid, jsonb) is
  'The executor''s BMC call log: a batch of Redfish/OME calls of its site''s jobs; prunes by retention.';

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.executor_record_discovery(uuid, uuid, bigint, boolean, jsonb)',
    'public.executor_record_bmc_calls(uuid, jsonb)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;

-- a job's calls, in order, with the step's name: the console's job view and SQL reports
create view public.v_bmc_calls with (security_invoker = true) as
select b.id, b.job_id, j.type as job_type, b.site_id, b.step, b.target, b.protocol, b.method, b.path, b.status,
       b.duration_ms, b.message_id, b.error, b.at,
       (b.status is null or b.status >= 400) as failed
  from public.bmc_calls b
  join public.jobs j on j.id = b.job_id;
comment on view public.v_bmc_calls is
  'Every Redfish and OME call a job made (no bodies), with whether it failed; operators and up.';
revoke all on public.v_bmc_calls from anon, authenticated;
grant select on public.v_bmc_calls to authenticated;
