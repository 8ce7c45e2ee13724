-- Default schedules and the site's default firmware catalog (issue 18).
--
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
-- operator its owner (job_schedules_guard below; before, only a template change did, so an
-- enabled default still had no owner and every run failed with no_owner). An operator may
-- also delete a default; it is not made again (only a new site or vCenter makes defaults).

-- 1. the site's default catalog ------------------------------------------------------------------
alter table public.firmware_catalogs add column is_default boolean not null default false;
create unique index firmware_catalogs_one_default_idx on public.firmware_catalogs (site_id) where is_default;
comment on column public.firmware_catalogs.is_default is
  'the site''s default catalog: a firmware_compliance job that names no catalog uses it (one per site)';

-- marking a catalog as the default unmarks the site's previous one (as the same caller:
-- whoever may update catalogs may move the default)
create function public.firmware_catalogs_one_default()
returns trigger
language plpgsql
as $$
begin
  if new.is_default and (tg_op = 'INSERT' or not old.is_default or new.site_id is distinct from old.site_id) then
    update public.firmware_catalogs set is_default = false
     where site_id = new.site_id and is_default and id <> new.id;
  end if;
  return new;
end
$$;
revoke execute on function public.firmware_catalogs_one_default() from public, anon;
create trigger firmware_catalogs_one_default before insert or update of is_default, site_id on public.firmware_catalogs
  for each row execute function public.firmware_catalogs_one_default();

-- 2. enabling a schedule makes the enabling user its owner ------------------------------------------
create or replace function public.job_schedules_guard()
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

-- 3. the defaults ------------------------------------------------------------------------------------
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

-- Every default of a site (its nightly pair and one hourly sync per vCenter). The version of
-- 20261206200200 gave compliance a hand-typed Dell URL and was never called.
create or replace function public.ensure_default_schedules(p_site_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
begin
  v_n := public.default_schedules_site(p_site_id);
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

-- the sites there already are get theirs now
select public.ensure_default_schedules(id) from public.sites;

-- 4. the firing locks: FOR NO KEY UPDATE ----------------------------------------------------------------
-- Firing changes no key of the schedule, so it takes the lock an UPDATE of non-key columns
-- takes. FOR UPDATE also conflicted with the FOR KEY SHARE lock that any transaction
-- inserting a schedule_runs row (a foreign key to the schedule) holds until it ends, so a
-- due schedule was silently skipped (SKIP LOCKED) while, say, an admin's transaction
-- touching its runs was open. Same rows, same exactly-once argument as before: a second
-- caller still skips a schedule being fired, and finds it no longer due once that commits.
create or replace function public.schedules_take_due(p_site_id uuid default null)
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

create or replace function public.schedule_record_run(p_schedule_id uuid, p_occurrence_at timestamptz, p_status text,
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
