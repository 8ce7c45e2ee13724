-- Schedules: a job template (type, params) plus a recurrence and a time zone; due
-- occurrences create their job exactly once, through the same path as an operator's
-- create-job.
--
-- Who creates the jobs. The `schedules` edge function (action fire), called by the site's
-- executors on their poll loop with the service key (hosted projects may also call it from
-- pg_cron + pg_net; the two never duplicate). For each due schedule it opens ONE
-- transaction that
--   1. takes the schedule row (schedules_take_due: FOR UPDATE SKIP LOCKED, so a second
--      executor skips it and, once the first commits, finds it no longer due);
--   2. switches to the schedule's owner (role authenticated, the owner's JWT claims) and runs
--      create-job's own code: checkRequest, planJob (targets, site, safety policy, window,
--      an executor that takes the type) and insertJob -> public.functions_create_job, the one
--      SECURITY DEFINER write, which checks the owner still holds the operator role;
--   3. records the occurrence (schedule_runs, unique per schedule and occurrence) and moves
--      next_run_at on (schedule_record_run).
-- A crash or restart anywhere in between rolls all three back, so the occurrence is still
-- due and is fired once by whoever comes next. The owner is the user who last saved the
-- schedule's template (set by the trigger, never by the caller): a scheduled job carries no
-- more authority than that user has at the moment it fires, and stops being created when
-- the user loses the operator role (the run is recorded as failed with create-job's code).
--
-- Never two running per schedule: an occurrence whose previous job is still pending,
-- running or paused is recorded as skipped_running and creates nothing.
--
-- Missed runs (the executors were down past an occurrence, by more than 5 minutes):
--   skip      record one `missed` run for the newest missed occurrence, create nothing, and
--             wait for the next occurrence after now;
--   run_once  create one job for the newest missed occurrence, then the next after now.
-- Either way a backlog of missed occurrences never turns into a burst of jobs.
--
-- Recurrence: a 5-field cron expression (minute hour day-of-month month day-of-week, with
-- *, lists, ranges and /steps; day-of-week 0-7, Sunday 0 or 7; when both day fields are
-- restricted a day matching either runs, as in cron), @hourly, @daily, @weekly, or an
-- RRULE of this subset: FREQ=MINUTELY|HOURLY;INTERVAL=n (steps within the day),
-- FREQ=DAILY|WEEKLY with BYHOUR, BYMINUTE and (weekly) BYDAY=MO,TU,... Times are wall
-- clock times in the schedule's time zone (DST handled by Postgres' zone rules).

-- 1. recurrence ------------------------------------------------------------------------------------
create function public.cron_field(p text, p_min integer, p_max integer)
returns integer[]
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_part text;
  v_lo integer;
  v_hi integer;
  v_step integer;
  v_out integer[] := '{}';
begin
  if p is null or p !~ '^[0-9*,/-]+$' then
    raise exception using errcode = '22023', message = format('invalid_argument: bad cron field %L', p);
  end if;
  foreach v_part in array string_to_array(p, ',') loop
    v_step := 1;
    if v_part ~ '^[^/]+/[0-9]{1,3}$' then
      v_step := split_part(v_part, '/', 2)::integer;
      v_part := split_part(v_part, '/', 1);
    end if;
    if v_part = '*' then
      v_lo := p_min; v_hi := p_max;
    elsif v_part ~ '^[0-9]{1,2}-[0-9]{1,2}$' then
      v_lo := split_part(v_part, '-', 1)::integer; v_hi := split_part(v_part, '-', 2)::integer;
    elsif v_part ~ '^[0-9]{1,2}$' then
      v_lo := v_part::integer; v_hi := case when v_step > 1 then p_max else v_lo end;
    else
      raise exception using errcode = '22023', message = format('invalid_argument: bad cron field %L', p);
    end if;
    if v_step < 1 or v_lo < p_min or v_hi > p_max or v_lo > v_hi then
      raise exception using errcode = '22023',
        message = format('invalid_argument: cron field %L is outside %s-%s', p, p_min, p_max);
    end if;
    v_out := v_out || array(select generate_series(v_lo, v_hi, v_step));
  end loop;
  return array(select distinct x from unnest(v_out) x order by 1);
end
$$;

-- The recurrence as a cron expression (presets and the RRULE subset translated).
create function public.schedule_cron(p_recurrence text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  v text := btrim(coalesce(p_recurrence, ''));
  v_parts text[];
  v_kv text;
  v_freq text;
  v_interval integer := 1;
  v_hour text;
  v_minute text;
  v_day text;
  v_dows text[];
begin
  if v = '@hourly' then return '0 * * * *'; end if;
  if v = '@daily' then return '0 0 * * *'; end if;
  if v = '@weekly' then return '0 0 * * 0'; end if;
  if upper(v) like 'RRULE:%' then
    foreach v_kv in array string_to_array(upper(substr(v, 7)), ';') loop
      case split_part(v_kv, '=', 1)
        when 'FREQ' then v_freq := split_part(v_kv, '=', 2);
        when 'INTERVAL' then
          if split_part(v_kv, '=', 2) !~ '^[1-9][0-9]{0,2}$' then
            raise exception using errcode = '22023', message = 'invalid_argument: RRULE INTERVAL must be 1-999';
          end if;
          v_interval := split_part(v_kv, '=', 2)::integer;
        when 'BYHOUR' then v_hour := split_part(v_kv, '=', 2);
        when 'BYMINUTE' then v_minute := split_part(v_kv, '=', 2);
        when 'BYDAY' then
          v_dows := array(select case d when 'SU' then '0' when 'MO' then '1' when 'TU' then '2' when 'WE' then '3'
                                        when 'TH' then '4' when 'FR' then '5' when 'SA' then '6' end
                            from unnest(string_to_array(split_part(v_kv, '=', 2), ',')) d);
          if array_position(v_dows, null) is not null then
            raise exception using errcode = '22023', message = 'invalid_argument: RRULE BYDAY takes MO,TU,WE,TH,FR,SA,SU';
          end if;
          v_day := array_to_string(v_dows, ',');
        else
          raise exception using errcode = '22023',
            message = format('invalid_argument: RRULE part %L is not supported (FREQ, INTERVAL, BYHOUR, BYMINUTE, BYDAY)',
                             v_kv);
      end case;
    end loop;
    case v_freq
      when 'MINUTELY' then
        return format('*/%s * * * *', v_interval);
      when 'HOURLY' then
        return format('%s */%s * * *', coalesce(v_minute, '0'), v_interval);
      when 'DAILY', 'WEEKLY' then
        if v_interval <> 1 then
          raise exception using errcode = '22023',
            message = 'invalid_argument: RRULE INTERVAL is supported for MINUTELY and HOURLY only';
        end if;
        return format('%s %s * * %s', coalesce(v_minute, '0'), coalesce(v_hour, '0'),
                      case when v_freq = 'WEEKLY' then coalesce(v_day, '0') else coalesce(v_day, '*') end);
      else
        raise exception using errcode = '22023', message = 'invalid_argument: RRULE FREQ must be MINUTELY, HOURLY, DAILY or WEEKLY';
    end case;
  end if;
  if array_length(regexp_split_to_array(v, '\s+'), 1) <> 5 then
    raise exception using errcode = '22023',
      message = format('invalid_argument: %L is not a 5-field cron expression, @hourly/@daily/@weekly or an RRULE', v);
  end if;
  return v;
end
$$;

-- The first occurrence strictly after p_after, or null when none within four years.
create function public.schedule_next_run(p_recurrence text, p_tz text, p_after timestamptz)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
declare
  v_f text[] := regexp_split_to_array(public.schedule_cron(p_recurrence), '\s+');
  v_min integer[] := public.cron_field(v_f[1], 0, 59);
  v_hour integer[] := public.cron_field(v_f[2], 0, 23);
  v_dom integer[] := public.cron_field(v_f[3], 1, 31);
  v_mon integer[] := public.cron_field(v_f[4], 1, 12);
  v_dow integer[] := array(select distinct x % 7 from unnest(public.cron_field(v_f[5], 0, 7)) x);
  v_dom_any boolean := v_f[3] = '*';
  v_dow_any boolean := v_f[5] = '*';
  v_day date;
  v_h integer;
  v_m integer;
  v_ts timestamptz;
  v_ok boolean;
begin
  perform now() at time zone p_tz;  -- an unknown zone raises here
  v_day := (p_after at time zone p_tz)::date;
  for i in 0 .. 1461 loop
    -- cron: with both day fields restricted, a day matching either one runs
    v_ok := extract(month from v_day)::integer = any (v_mon)
            and (v_dom_any or extract(day from v_day)::integer = any (v_dom)
                 or (not v_dow_any and extract(dow from v_day)::integer = any (v_dow)))
            and (v_dow_any or extract(dow from v_day)::integer = any (v_dow)
                 or (not v_dom_any and extract(day from v_day)::integer = any (v_dom)));
    if v_ok then
      foreach v_h in array v_hour loop
        foreach v_m in array v_min loop
          v_ts := (v_day + make_time(v_h, v_m, 0)) at time zone p_tz;
          if v_ts > p_after then
            return v_ts;
          end if;
        end loop;
      end loop;
    end if;
    v_day := v_day + 1;
  end loop;
  return null;
end
$$;
comment on function public.schedule_next_run(text, text, timestamptz) is
  'Next occurrence after p_after of a cron expression, @hourly/@daily/@weekly or RRULE subset, in time zone p_tz.';

-- 2. schedules ----------------------------------------------------------------------------------
create table public.job_schedules (
  id            uuid primary key default extensions.gen_random_uuid(),
  site_id       uuid not null references public.sites (id) on delete cascade,
  name          text not null constraint job_schedules_name_check check (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$'),
  job_type      public.job_type not null constraint job_schedules_job_type_check check (job_type <> 'selftest'),
  params        jsonb not null default '{}'::jsonb constraint job_schedules_params_check check (jsonb_typeof(params) = 'object'),
  priority      smallint not null default 40 constraint job_schedules_priority_check check (priority between 0 and 100),
  description   text not null default '' constraint job_schedules_description_check check (length(description) <= 2000),
  recurrence    text not null constraint job_schedules_recurrence_check check (length(recurrence) between 5 and 200),
  timezone      text not null default 'UTC' constraint job_schedules_timezone_check check (length(timezone) between 1 and 64),
  missed_policy text not null default 'skip' constraint job_schedules_missed_policy_check check (missed_policy in ('skip', 'run_once')),
  enabled       boolean not null default true,
  -- the user whose authority creates the jobs: whoever last saved the template (trigger)
  owner_id      uuid,
  next_run_at   timestamptz,
  last_run_at   timestamptz,
  last_status   text constraint job_schedules_last_status_check check (last_status in ('created', 'skipped_running', 'missed', 'failed')),
  last_job_id   uuid references public.jobs (id) on delete set null,
  last_error    text constraint job_schedules_last_error_check check (length(last_error) <= 2000),
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  unique (site_id, name)
);
create index job_schedules_due_idx on public.job_schedules (site_id, next_run_at) where enabled;

create table public.schedule_runs (
  id            bigint generated always as identity primary key,
  schedule_id   uuid not null references public.job_schedules (id) on delete cascade,
  occurrence_at timestamptz not null,
  status        text not null constraint schedule_runs_status_check check (status in ('created', 'skipped_running', 'missed', 'failed')),
  job_id        uuid references public.jobs (id) on delete set null,
  code          text constraint schedule_runs_code_check check (length(code) <= 64),
  error         text constraint schedule_runs_error_check check (length(error) <= 2000),
  created_at    timestamptz not null default now(),
  unique (schedule_id, occurrence_at),
  constraint schedule_runs_created_job_check check ((status = 'created') = (job_id is not null))
);
create index schedule_runs_schedule_idx on public.schedule_runs (schedule_id, occurrence_at desc);

create function public.job_schedules_guard()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  if tg_op = 'INSERT'
     or (new.job_type, new.params, new.priority, new.description, new.site_id)
        is distinct from (old.job_type, old.params, old.priority, old.description, old.site_id)
     or (new.enabled and not old.enabled) then
    if public.is_user_context() then
      new.owner_id := auth.uid();
    end if;
  end if;
  if tg_op = 'INSERT' or (new.recurrence, new.timezone, new.enabled)
                         is distinct from (old.recurrence, old.timezone, old.enabled) then
    begin
      new.next_run_at := case when new.enabled then public.schedule_next_run(new.recurrence, new.timezone, now()) end;
    exception when invalid_parameter_value then
      raise exception using errcode = '22023',
        message = format('invalid_argument: %L is not a time zone Postgres knows', new.timezone);
    end;
  end if;
  return new;
end
$$;
create trigger job_schedules_guard before insert or update on public.job_schedules
  for each row execute function public.job_schedules_guard();

alter table public.job_schedules enable row level security;
alter table public.schedule_runs enable row level security;
revoke all on public.job_schedules, public.schedule_runs from anon, authenticated;
revoke all on sequence public.schedule_runs_id_seq from anon, authenticated;
grant select on public.job_schedules, public.schedule_runs to authenticated;
grant insert (site_id, name, job_type, params, priority, description, recurrence, timezone, missed_policy, enabled)
  on public.job_schedules to authenticated;
grant update (name, job_type, params, priority, description, recurrence, timezone, missed_policy, enabled)
  on public.job_schedules to authenticated;
grant delete on public.job_schedules, public.schedule_runs to authenticated;
create policy job_schedules_select_viewer on public.job_schedules for select to authenticated
  using ((select public.has_role('viewer')));
create policy job_schedules_insert_operator on public.job_schedules for insert to authenticated
  with check ((select public.has_role('operator')));
create policy job_schedules_update_operator on public.job_schedules for update to authenticated
  using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));
create policy job_schedules_delete_operator on public.job_schedules for delete to authenticated
  using ((select public.has_role('operator')));
create policy schedule_runs_select_viewer on public.schedule_runs for select to authenticated
  using ((select public.has_role('viewer')));
create policy schedule_runs_delete_admin on public.schedule_runs for delete to authenticated
  using ((select public.has_role('admin')));

-- 3. firing (the schedules edge function, as the service role) ---------------------------------
-- One due schedule of the site (or of any site), locked for this transaction; none when
-- every due one is being fired by someone else right now.
create function public.schedules_take_due(p_site_id uuid default null)
returns setof public.job_schedules
language sql
security definer
set search_path = ''
as $$
  select s.* from public.job_schedules s
   where s.enabled and s.next_run_at <= now() and (p_site_id is null or s.site_id = p_site_id)
   order by s.next_run_at, s.id
   for no key update skip locked
   limit 1
$$;

-- Record what an occurrence did and move the schedule on to its next occurrence after now.
create function public.schedule_record_run(p_schedule_id uuid, p_occurrence_at timestamptz, p_status text,
                                                      p_job_id uuid default null, p_code text default null,
                                                      p_error text default null)
returns timestamptz
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_s public.job_schedules%rowtype;
  v_next timestamptz;
begin
  select * into v_s from public.job_schedules where id = p_schedule_id for no key update;
  if not found then
    raise exception using errcode = 'P0002', message = 'not_found: no such schedule';
  end if;
  insert into public.schedule_runs (schedule_id, occurrence_at, status, job_id, code, error)
  values (p_schedule_id, p_occurrence_at, p_status, p_job_id, left(p_code, 64), left(p_error, 2000));
  v_next := public.schedule_next_run(v_s.recurrence, v_s.timezone, greatest(now(), p_occurrence_at));
  update public.job_schedules
     set next_run_at = v_next, last_run_at = p_occurrence_at, last_status = p_status,
         last_job_id = coalesce(p_job_id, last_job_id), last_error = left(p_error, 2000)
   where id = p_schedule_id;
  return v_next;
end
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.cron_field(text, integer, integer)', 'public.schedule_cron(text)',
    'public.schedule_next_run(text, text, timestamptz)', 'public.schedules_take_due(uuid)',
    'public.schedule_record_run(uuid, timestamptz, text, uuid, text, text)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
-- the guard runs as the user; it reaches schedule_next_run (and through it the parsers)
grant execute on function public.schedule_next_run(text, text, timestamptz) to authenticated;
grant execute on function public.schedule_cron(text) to authenticated;
grant execute on function public.cron_field(text, integer, integer) to authenticated;

-- 4. the default schedules of a site: nightly inventory and compliance, hourly vCenter sync ---
-- Every site gets three kinds of default schedules when it is created (and every vCenter
-- when it is registered), so a fleet is kept current without anyone writing them by hand:
--   nightly inventory    inventory_refresh of every server of the site, 01:00 site time
--   nightly compliance   firmware_compliance of every server of the site against the
--                        site's DEFAULT catalog, 03:00 site time
--   hourly sync <name>   vcenter_sync of that vCenter, at the top of every hour
-- Site time is sites.timezone (UTC when Postgres does not know the zone).
--
-- How the compliance default names its catalog: it names none. Its params are just
-- {site_id}; a firmware_compliance job that names no source (no ome_instance_id, catalog_id
-- or catalog_url) is given the site's default catalog by create-job when it is created -
-- that is, each night when the schedule fires - so marking another catalog as the default
-- (firmware_catalogs.is_default, one per site) moves the nightly compliance to it without
-- editing the schedule. A site without a default catalog gets create-job's refusal
-- `catalog_required` on the run (v_schedules.last_error says so), and nothing is created.
--
-- Who they run as: a schedule fires with the authority of its owner (the user who last
-- saved its template or enabled it), and a default has no owner when it is made, so
-- defaults are created DISABLED. An operator reviews one and enables it; enabling makes the
-- operator its owner (job_schedules_guard above: were it only a template change, an enabled
-- default would still have no owner and every run would fail with no_owner). An operator may
-- also delete a default; it is not made again (only a new site or vCenter makes defaults).

-- the defaults ------------------------------------------------------------------------------------
-- The site's nightly pair (disabled, no owner); answers how many were made.
create function public.default_schedules_site(p_site_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_tz text;
  v_n  integer;
begin
  select case when exists (select 1 from pg_catalog.pg_timezone_names z where z.name = s.timezone)
              then s.timezone else 'UTC' end
    into v_tz from public.sites s where s.id = p_site_id;
  if v_tz is null then
    return 0;
  end if;
  insert into public.job_schedules (site_id, name, job_type, params, recurrence, timezone, description, enabled)
  values (p_site_id, 'nightly inventory', 'inventory_refresh', jsonb_build_object('site_id', p_site_id),
          '0 1 * * *', v_tz, 'every server''s health, power, firmware inventory and LC status, nightly', false),
         (p_site_id, 'nightly compliance', 'firmware_compliance', jsonb_build_object('site_id', p_site_id),
          '0 3 * * *', v_tz, 'every server''s firmware against the site''s default catalog, nightly', false)
  on conflict (site_id, name) do nothing;
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

-- A vCenter's hourly sync (disabled, no owner), unless a vcenter_sync schedule of it exists.
create function public.default_schedules_vcenter(p_vcenter_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v public.vcenters%rowtype;
  v_name text;
  v_n integer;
begin
  select * into v from public.vcenters where id = p_vcenter_id;
  if not found or exists (select 1 from public.job_schedules s
                           where s.site_id = v.site_id and s.job_type = 'vcenter_sync'
                             and s.params ->> 'vcenter_id' = v.id::text) then
    return 0;
  end if;
  v_name := 'hourly sync ' || regexp_replace(left(v.name, 100), '[^A-Za-z0-9 ._-]', '-', 'g');
  if exists (select 1 from public.job_schedules s where s.site_id = v.site_id and s.name = v_name) then
    v_name := 'hourly sync ' || v.id::text;  -- another vCenter's name came out the same
  end if;
  insert into public.job_schedules (site_id, name, job_type, params, recurrence, description, enabled)
  values (v.site_id, v_name, 'vcenter_sync', jsonb_build_object('vcenter_id', v.id), '@hourly',
          format('vCenter %s: clusters, hosts and VMs, hourly', left(v.name, 100)), false)
  on conflict (site_id, name) do nothing;
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

-- Every default of a site: its nightly pair, one hourly sync per vCenter and, for a site with a
-- directory configuration, the directory sync (default_schedules_directory,
-- 20261208190100_directory_sync.sql).
create function public.ensure_default_schedules(p_site_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
begin
  v_n := public.default_schedules_site(p_site_id) + public.default_schedules_directory(p_site_id);
  select v_n + coalesce(sum(public.default_schedules_vcenter(v.id)), 0) into v_n
    from public.vcenters v where v.site_id = p_site_id;
  return v_n;
end
$$;

create function public.default_schedules_after_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_table_name = 'sites' then
    perform public.default_schedules_site(new.id);
  else
    perform public.default_schedules_vcenter(new.id);
  end if;
  return null;
end
$$;
create trigger default_schedules_after_insert after insert on public.sites
  for each row execute function public.default_schedules_after_insert();
create trigger default_schedules_after_insert after insert on public.vcenters
  for each row execute function public.default_schedules_after_insert();

do $$
declare
  f text;
begin
  foreach f in array array['public.default_schedules_site(uuid)', 'public.default_schedules_vcenter(uuid)',
                           'public.ensure_default_schedules(uuid)'] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
revoke execute on function public.default_schedules_after_insert() from public, anon, authenticated;

create view public.v_schedules with (security_invoker = true) as
select s.id as schedule_id, s.site_id, s.name, s.job_type, s.recurrence, s.timezone, s.missed_policy, s.enabled,
       s.next_run_at, s.last_run_at, s.last_status, s.last_job_id, j.status as last_job_status, s.last_error,
       (select count(*) from public.schedule_runs r where r.schedule_id = s.id and r.status = 'created') as jobs_created,
       (select count(*) from public.schedule_runs r where r.schedule_id = s.id and r.status <> 'created') as runs_not_created
  from public.job_schedules s
  left join public.jobs j on j.id = s.last_job_id;
comment on view public.v_schedules is 'Each schedule with its next occurrence and what its last one did.';
revoke all on public.v_schedules from anon, authenticated;
grant select on public.v_schedules to authenticated;
