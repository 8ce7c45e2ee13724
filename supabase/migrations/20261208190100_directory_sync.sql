-- The directory sync as a job (issue 17, "Directory sync"): a scheduled `directory_sync`
-- job of the site's executor, instead of a loop inside the identity agent. So every run has
-- a job row, steps, a result with its counts, an audit entry (idm.sync) and a place in the
-- console's job list; two executors of a site never run one occurrence twice (the
-- schedule's occurrence is fired once, the job is claimed once).
--
-- 1. safety policy: it only reads the directory and applies what it says to rackpilot's
--    own roles, so low risk, no window, no hosts out (policies/safety.yaml holds the same).
-- 2. the default schedule "directory sync": hourly, for every site with a directory
--    configuration, made when the configuration is created. The hour is the sync period: a
--    user removed from a mapped group loses that role, and their sessions and refresh
--    tokens, at the next run, so within one hour (an operator may edit the recurrence).
--    Who it runs as: like every default it fires with its owner's authority. When an admin
--    creates the directory configuration, that admin owns it and it is created ENABLED (the
--    admin who maps groups to roles asked for the roles to follow the directory); made by
--    the service role (no user) or for a configuration that already exists, it has no
--    owner and is created disabled until an operator enables it (docs/identity.md).

-- 1. safety policy ----------------------------------------------------------------------------
insert into public.safety_policies
  (job_type, risk, requires_window, takes_hosts_out, max_hosts_out_per_cluster, max_concurrent_per_cluster,
   lease_seconds, step_timeout_seconds, job_timeout_seconds, max_attempts)
values
  ('directory_sync', 'low', false, false, null, null, 60, 600, 1800, 5)
on conflict (job_type) do nothing;

-- 2. the default schedule ------------------------------------------------------------------------
-- The site's hourly directory sync, unless the site has a directory_sync schedule already;
-- answers how many were made (0 or 1).
create function public.default_schedules_directory(p_site_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_owner uuid := auth.uid();
  v_enabled boolean;
  v_n integer;
begin
  if not exists (select 1 from public.directory_configs c where c.site_id = p_site_id)
     or exists (select 1 from public.job_schedules s where s.site_id = p_site_id and s.job_type = 'directory_sync') then
    return 0;
  end if;
  -- an admin configuring the directory owns (and so enables) the sync; anyone else: no owner
  v_enabled := v_owner is not null and coalesce(public.has_role('admin'), false);
  if not v_enabled then
    v_owner := null;
  end if;
  insert into public.job_schedules (site_id, name, job_type, params, recurrence, description, enabled, owner_id)
  values (p_site_id, 'directory sync', 'directory_sync', jsonb_build_object('site_id', p_site_id), '@hourly',
          'directory group membership -> rackpilot roles; removed members lose their role and sessions (the sync period)',
          v_enabled, v_owner)
  on conflict (site_id, name) do nothing;
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

create function public.default_schedules_directory_after_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.default_schedules_directory(new.site_id);
  return null;
end
$$;
create trigger default_schedules_after_insert after insert on public.directory_configs
  for each row execute function public.default_schedules_directory_after_insert();

revoke execute on function public.default_schedules_directory(uuid) from public, anon, authenticated;
grant execute on function public.default_schedules_directory(uuid) to service_role;
revoke execute on function public.default_schedules_directory_after_insert() from public, anon, authenticated;
