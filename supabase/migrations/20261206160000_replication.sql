-- rackpilot control plane: ZFS replication pairs that run, are scheduled and gate maintenance.
--
-- replication_pairs (inventory migration) gains what a replication_sync job needs and
-- reports: retention grid, allowed lag, bandwidth, full-send permission, the storage
-- servers the datasets live on (for gating), and the figures of the last run. The
-- credential set (credential_set_id) is one sealed credential whose envelope names both
-- hosts as endpoints and pins both hosts' SSH keys (executor/handlers/replication_sync.py).
--
-- replication_runs: one row per pair per sync (bytes, duration, lag after): the lag plot.
--
-- Scheduling is SQL (schedule_replication_jobs): it is the one place that can decide "due
-- and no job yet" atomically for every executor of a site at once. It takes a transaction
-- advisory lock and the pair rows FOR UPDATE, so two executors (or an executor and
-- pg_cron on hosted Supabase) calling it together create exactly one job per due pair.
-- Executors call it on their poll loop; hosted projects may also schedule it with
-- pg_cron. Running at most one sync per pair, whoever created the jobs (create-job's
-- "sync now", the scheduler, a retry), is held by replication_begin: a pair is taken by
-- one unfinished job at a time, and a second job finds it taken and skips it.
--
-- Dataset names: the old CHECK allowed '..' components and empty ones ('a//b'); the names
-- must now follow ZFS's rules as the executor narrows them (executor/targets/zfs.py). The
-- schedule is @hourly, @daily, @weekly, @every <n>[smhd] or manual.

-- 1. the pair ------------------------------------------------------------------------------------
create function public.replication_interval(p_schedule text)
returns interval
language sql
immutable
set search_path = ''
as $$
  select case
    when p_schedule = '@hourly' then interval '1 hour'
    when p_schedule = '@daily' then interval '1 day'
    when p_schedule = '@weekly' then interval '7 days'
    when p_schedule ~ '^@every [1-9][0-9]{0,5}[smhd]$' then
      (substring(p_schedule from 8 for length(p_schedule) - 8)::integer
        * case right(p_schedule, 1) when 's' then 1 when 'm' then 60 when 'h' then 3600 else 86400 end)
        * interval '1 second'
    else null
  end
$$;
comment on function public.replication_interval(text) is
  'The interval of a replication schedule: @hourly, @daily, @weekly or @every <n>[smhd]; null for manual.';

alter table public.replication_pairs
  add column retention_grid text not null default ''
    constraint replication_pairs_retention_grid_check check (retention_grid ~ '^(\s*[0-9]{1,4}\s*x\s*[0-9]{1,6}\s*[smhdw]\s*(,\s*[0-9]{1,4}\s*x\s*[0-9]{1,6}\s*[smhdw]\s*)*)?$'),
  add column max_lag_seconds integer not null default 7200 constraint replication_pairs_max_lag_seconds_check check (max_lag_seconds between 60 and 31536000),
  add column bandwidth_limit_mbit integer constraint replication_pairs_bandwidth_limit_mbit_check check (bandwidth_limit_mbit between 1 and 400000),
  add column allow_full_send boolean not null default false,
  add column snapshot_prefix text not null default 'rackpilot' constraint replication_pairs_snapshot_prefix_check check (snapshot_prefix ~ '^[A-Za-z0-9][A-Za-z0-9.:-]{0,63}$'),
  add column source_server_id uuid references public.servers (id) on delete set null,
  add column target_server_id uuid references public.servers (id) on delete set null,
  add column last_attempt_at timestamptz,
  add column last_status text constraint replication_pairs_last_status_check check (last_status in ('succeeded', 'failed', 'skipped')),
  add column last_error text constraint replication_pairs_last_error_check check (length(last_error) <= 4000),
  add column last_bytes bigint constraint replication_pairs_last_bytes_check check (last_bytes >= 0),
  add column last_duration_ms bigint constraint replication_pairs_last_duration_ms_check check (last_duration_ms >= 0),
  add column last_synced_snapshot_at timestamptz,
  add column last_job_id uuid,
  add column running_job_id uuid references public.jobs (id) on delete set null,
  -- ZFS's naming rules as the executor narrows them (executor/targets/zfs.py): no spaces,
  -- no empty, '.' or '..' components, the pool starting with a letter and not reserved
  add constraint replication_pairs_source_dataset_name_check check (
    octet_length(source_dataset) <= 255
    and source_dataset ~ '^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*$'
    and source_dataset !~ '(^|/)\.{1,2}(/|$)'
    and split_part(source_dataset, '/', 1) !~ '^(mirror|raidz[123]?|draid|spare|log|cache|special|dedup|c[0-9].*)$'),
  add constraint replication_pairs_target_dataset_name_check check (
    octet_length(target_dataset) <= 255
    and target_dataset ~ '^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*$'
    and target_dataset !~ '(^|/)\.{1,2}(/|$)'
    and split_part(target_dataset, '/', 1) !~ '^(mirror|raidz[123]?|draid|spare|log|cache|special|dedup|c[0-9].*)$'),
  add constraint replication_pairs_schedule_check
    check (schedule ~ '^(manual|@hourly|@daily|@weekly|@every [1-9][0-9]{0,5}[smhd])$');

comment on column public.replication_pairs.retention_grid is
  'Retention on both sides besides keep-last retention_snapshots: e.g. 24x1h,7x1d (one snapshot per bucket).';
comment on column public.replication_pairs.max_lag_seconds is
  'Allowed lag: beyond it the pair counts as lagging and maintenance of its storage servers is gated.';
comment on column public.replication_pairs.last_synced_snapshot_at is
  'Creation time of the newest snapshot the replica has: lag is now() minus this.';
comment on column public.replication_pairs.running_job_id is
  'The unfinished replication_sync job that holds the pair (replication_begin); never two at once.';
create index replication_pairs_servers_idx on public.replication_pairs (source_server_id, target_server_id);

-- operators register pairs (RLS: inventory migration); they may not write what runs report
revoke update on public.replication_pairs from authenticated;
grant update (name, source_host, source_dataset, target_host, target_dataset, credential_set_id, schedule,
              retention_snapshots, enabled, retention_grid, max_lag_seconds, bandwidth_limit_mbit, allow_full_send,
              snapshot_prefix, source_server_id, target_server_id)
  on public.replication_pairs to authenticated;
revoke insert on public.replication_pairs from authenticated;
grant insert (site_id, name, source_host, source_dataset, target_host, target_dataset, credential_set_id, schedule,
              retention_snapshots, enabled, retention_grid, max_lag_seconds, bandwidth_limit_mbit, allow_full_send,
              snapshot_prefix, source_server_id, target_server_id)
  on public.replication_pairs to authenticated;

-- 2. the runs ------------------------------------------------------------------------------------
create table public.replication_runs (
  id               bigint generated always as identity primary key,
  pair_id          uuid not null references public.replication_pairs (id) on delete cascade,
  site_id          uuid not null references public.sites (id) on delete cascade,
  job_id           uuid references public.jobs (id) on delete set null,
  status           text not null constraint replication_runs_status_check check (status in ('succeeded', 'failed', 'skipped')),
  kind             text not null constraint replication_runs_kind_check check (kind in ('full', 'incremental', 'resume', 'none', 'dry_run')),
  bytes            bigint not null default 0 constraint replication_runs_bytes_check check (bytes >= 0),
  duration_ms      bigint not null default 0 constraint replication_runs_duration_ms_check check (duration_ms >= 0),
  snapshot         text constraint replication_runs_snapshot_check check (length(snapshot) <= 512),
  lag_seconds      integer constraint replication_runs_lag_seconds_check check (lag_seconds >= 0),
  error_class      text constraint replication_runs_error_class_check check (length(error_class) <= 128),
  error            text constraint replication_runs_error_check check (length(error) <= 4000),
  details          jsonb not null default '{}'::jsonb constraint replication_runs_details_check check (jsonb_typeof(details) = 'object'),
  finished_at      timestamptz not null default now()
);
create index replication_runs_pair_idx on public.replication_runs (pair_id, finished_at desc);
alter table public.replication_runs enable row level security;
-- start from nothing (the platform's default privileges grant the API roles everything on a new
-- table and its sequence; RLS does not apply to TRUNCATE): select and delete, RLS decides
revoke all on public.replication_runs from anon, authenticated;
revoke all on sequence public.replication_runs_id_seq from anon, authenticated;
grant select, delete on public.replication_runs to authenticated;
create policy replication_runs_select_viewer on public.replication_runs for select to authenticated
  using ((select public.has_role('viewer')));
create policy replication_runs_delete_admin on public.replication_runs for delete to authenticated
  using ((select public.has_role('admin')));

-- 3. executor RPCs (fenced by the job's lease) ----------------------------------------------------
-- Take the pair for this job: refused (ok=false, holder) while another unfinished job holds it.
create function public.replication_begin(p_executor_id uuid, p_job_id uuid, p_epoch bigint, p_pair_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_pair public.replication_pairs%rowtype;
  v_site uuid;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  select site_id into v_site from public.jobs where id = p_job_id;
  select * into v_pair from public.replication_pairs where id = p_pair_id for update;
  if not found or v_pair.site_id <> v_site then
    raise exception using errcode = 'P0002', message = 'not_found: no such replication pair on the job''s site';
  end if;
  if v_pair.running_job_id is not null and v_pair.running_job_id <> p_job_id
     and exists (select 1 from public.jobs j where j.id = v_pair.running_job_id
                  and j.status in ('pending', 'running', 'paused')) then
    return jsonb_build_object('ok', false, 'holder', v_pair.running_job_id);
  end if;
  update public.replication_pairs set running_job_id = p_job_id, last_attempt_at = now() where id = p_pair_id;
  return jsonb_build_object('ok', true);
end
$$;

-- Record one pair's outcome: a runs row, and the pair's last_* figures (success ones on success).
create function public.replication_record(
  p_executor_id uuid, p_job_id uuid, p_epoch bigint, p_pair_id uuid, p_status text, p_kind text,
  p_bytes bigint default 0, p_duration_ms bigint default 0, p_snapshot text default null,
  p_snapshot_created_at timestamptz default null, p_lag_seconds integer default null,
  p_error_class text default null, p_error text default null, p_details jsonb default '{}'::jsonb)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_site uuid;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  select site_id into v_site from public.replication_pairs where id = p_pair_id;
  if v_site is null or v_site <> (select site_id from public.jobs where id = p_job_id) then
    raise exception using errcode = 'P0002', message = 'not_found: no such replication pair on the job''s site';
  end if;
  insert into public.replication_runs (pair_id, site_id, job_id, status, kind, bytes, duration_ms, snapshot,
                                       lag_seconds, error_class, error, details)
  values (p_pair_id, v_site, p_job_id, p_status, p_kind, coalesce(p_bytes, 0), coalesce(p_duration_ms, 0),
          p_snapshot, p_lag_seconds, p_error_class, left(p_error, 4000), coalesce(p_details, '{}'::jsonb));
  if p_kind = 'dry_run' then
    return;
  end if;
  update public.replication_pairs
     set last_status = p_status,
         last_error = case when p_status = 'failed' then left(p_error, 4000) end,
         last_job_id = p_job_id,
         last_attempt_at = now(),
         last_success_at = case when p_status = 'succeeded' then now() else last_success_at end,
         last_snapshot = case when p_status = 'succeeded' and p_snapshot is not null then p_snapshot
                              else last_snapshot end,
         last_synced_snapshot_at = case when p_status = 'succeeded' and p_snapshot_created_at is not null
                                        then p_snapshot_created_at else last_synced_snapshot_at end,
         lag_seconds = case when p_status = 'succeeded' then p_lag_seconds else lag_seconds end,
         last_bytes = case when p_status = 'succeeded' then coalesce(p_bytes, 0) else last_bytes end,
         last_duration_ms = case when p_status = 'succeeded' then coalesce(p_duration_ms, 0) else last_duration_ms end
   where id = p_pair_id;
end
$$;

-- Give the pairs back (cleanup step of every exit path).
create function public.replication_end(p_executor_id uuid, p_job_id uuid, p_epoch bigint, p_pair_ids uuid[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
begin
  perform public.fence_job(p_executor_id, p_job_id, p_epoch);
  update public.replication_pairs set running_job_id = null
   where id = any(p_pair_ids) and running_job_id = p_job_id;
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

-- 4. scheduling ----------------------------------------------------------------------------------
-- One replication_sync job per due pair (enabled, schedule elapsed since the last attempt,
-- no unfinished job naming it). Safe to call from many executors at once.
create function public.schedule_replication_jobs(p_site_id uuid default null)
returns table (job_id uuid, pair_id uuid)
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
  v_job uuid;
begin
  perform pg_advisory_xact_lock(hashtext('rackpilot.schedule_replication_jobs'));
  for r in
    select p.id, p.site_id, p.name, p.credential_set_id
      from public.replication_pairs p
     where p.enabled
       and (p_site_id is null or p.site_id = p_site_id)
       and public.replication_interval(p.schedule) is not null
       and coalesce(p.last_attempt_at, '-infinity'::timestamptz) + public.replication_interval(p.schedule) <= now()
       and not exists (select 1 from public.job_tasks t join public.jobs j on j.id = t.job_id
                        where t.target_kind = 'replication_pair' and t.target_id = p.id
                          and j.type = 'replication_sync' and j.status in ('pending', 'running', 'paused'))
     order by p.last_attempt_at nulls first, p.id
     for update of p skip locked
  loop
    insert into public.jobs (type, site_id, params, scope, priority, description, credential_set_ids, details)
    values ('replication_sync', r.site_id, jsonb_build_object('replication_pair_ids', jsonb_build_array(r.id)),
            jsonb_build_object('targets', jsonb_build_array(jsonb_build_object('kind', 'replication_pair', 'id', r.id,
                                                                               'name', r.name))),
            40, 'scheduled replication of ' || r.name, array_remove(array[r.credential_set_id], null),
            jsonb_build_object('scheduled', true))
    returning id into v_job;
    insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq)
    values (v_job, 'replication_pair', r.id, left(r.name, 255), 0);
    job_id := v_job;
    pair_id := r.id;
    return next;
  end loop;
end
$$;
comment on function public.schedule_replication_jobs(uuid) is
  'Creates one replication_sync job per due pair (of a site, or all); concurrent calls never duplicate.';

-- Every executor of a site may schedule that site's pairs.
create function public.executor_schedule_replication(p_executor_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_site uuid;
  v_n integer;
begin
  select site_id into v_site from public.executors where id = p_executor_id and status = 'active';
  if v_site is null then
    raise exception using errcode = '42501', message = 'forbidden: unknown or disabled executor';
  end if;
  select count(*) into v_n from public.schedule_replication_jobs(v_site);
  return v_n;
end
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.replication_begin(uuid, uuid, bigint, uuid)',
    'public.replication_record(uuid, uuid, bigint, uuid, text, text, bigint, bigint, text, timestamptz, integer, text, text, jsonb)',
    'public.replication_end(uuid, uuid, bigint, uuid[])',
    'public.schedule_replication_jobs(uuid)',
    'public.executor_schedule_replication(uuid)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
  execute 'revoke execute on function public.replication_interval(text) from public, anon, authenticated';
  execute 'grant execute on function public.replication_interval(text) to service_role';
end
$$;

-- 4. a scheduled job that ends cancelled or failed counts as that occurrence's attempt -------
-- A pair's next scheduled job is due at last_attempt_at + its schedule's interval
-- (schedule_replication_jobs). The executor writes last_attempt_at when a job takes the pair
-- (replication_begin) and when it records the outcome (replication_record); a scheduled job
-- that ended before it took the pair - an operator's cancel of a pending job, a cancel
-- requested before the handler reached replication_begin, a failure before it (the executor
-- cannot open the sealed SSH credential, a host key no longer matches) - would leave the
-- pair due, and the next scheduler round (within replication_poll_interval, 30 s by default)
-- would make it a new job: the cancel skipped nothing, the failure looped.
-- So the end is the attempt: when a scheduled replication_sync job (details.scheduled, set by
-- schedule_replication_jobs only: create-job does not write details and users may not update
-- it) becomes cancelled or failed, by whatever path (job-control as the operator, the
-- executor finishing a cancel it was asked for or failing), each pair it names gets
-- last_attempt_at = that time (never moved back), so the next job comes one interval later,
-- as after a run. A cancel that SQL turns back into pending (a job that owes its cleanup,
-- jobs_guard_cleanup) counts only once it really ends: this is an AFTER trigger and sees the
-- final row. A cancelled or failed "sync now" job (not scheduled) leaves the schedule alone.
create function public.replication_cancel_counts_as_attempt()
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
  'Trigger: a scheduled replication_sync job that ends cancelled or failed counts as its pairs'' attempt (last_attempt_at).';
revoke execute on function public.replication_cancel_counts_as_attempt() from public, anon, authenticated;

create trigger jobs_replication_cancel_counts after update of status on public.jobs
  for each row
  when (new.status in ('cancelled', 'failed') and old.status is distinct from new.status
        and new.type = 'replication_sync' and new.details ->> 'scheduled' = 'true')
  execute function public.replication_cancel_counts_as_attempt();
