-- rackpilot control plane, part 8: reporting views for SQL users and notebooks.
--
-- All views are security_invoker, so the caller's RLS applies: a viewer sees the figures
-- of the rows a viewer may read. Durations are in seconds.

-- numeric sort key for dotted versions ('2.19.1' < '2.20.0'); non-digits count as 0
create function public.version_key(p_version text)
returns bigint[]
language sql
immutable
as $$
  select coalesce(array_agg(coalesce(nullif(regexp_replace(u.part, '\D', '', 'g'), '')::bigint, 0) order by u.n),
                  '{}'::bigint[])
    from unnest(regexp_split_to_array(coalesce(p_version, ''), '[.\-_]')) with ordinality as u(part, n)
$$;
grant execute on function public.version_key(text) to authenticated, service_role;

create view public.v_job_stats_by_type with (security_invoker = true) as
select j.type,
       count(*) as jobs_total,
       count(*) filter (where j.status = 'completed') as completed,
       count(*) filter (where j.status = 'failed') as failed,
       count(*) filter (where j.status = 'cancelled') as cancelled,
       count(*) filter (where j.status in ('pending', 'running', 'paused')) as open,
       round(count(*) filter (where j.status = 'completed')::numeric
             / nullif(count(*) filter (where j.status in ('completed', 'failed', 'cancelled')), 0), 4) as success_rate,
       round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed')::numeric, 1)
         as avg_duration_s,
       round((percentile_cont(0.95) within group (order by extract(epoch from j.finished_at - j.started_at))
              filter (where j.status = 'completed'))::numeric, 1) as p95_duration_s
  from public.jobs j
 group by j.type;

create view public.v_job_stats_by_week with (security_invoker = true) as
select date_trunc('week', j.created_at) as week,
       j.type,
       count(*) as jobs_total,
       count(*) filter (where j.status = 'completed') as completed,
       count(*) filter (where j.status = 'failed') as failed,
       round(count(*) filter (where j.status = 'completed')::numeric
             / nullif(count(*) filter (where j.status in ('completed', 'failed', 'cancelled')), 0), 4) as success_rate,
       round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed')::numeric, 1)
         as avg_duration_s
  from public.jobs j
 group by 1, 2;

create view public.v_job_stats_by_user with (security_invoker = true) as
select j.created_by as user_id,
       count(*) as jobs_total,
       count(*) filter (where j.status = 'completed') as completed,
       count(*) filter (where j.status = 'failed') as failed,
       round(count(*) filter (where j.status = 'completed')::numeric
             / nullif(count(*) filter (where j.status in ('completed', 'failed', 'cancelled')), 0), 4) as success_rate,
       round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed')::numeric, 1)
         as avg_duration_s,
       max(j.created_at) as last_job_at
  from public.jobs j
 group by j.created_by;

-- what was done to each host or server, newest first per target
create view public.v_host_history with (security_invoker = true) as
select t.target_kind, t.target_id, t.target_name,
       j.id as job_id, j.type as job_type, j.status as job_status, j.created_by,
       t.status as task_status, t.started_at, t.finished_at,
       round(extract(epoch from t.finished_at - t.started_at)::numeric, 1) as duration_s,
       t.error
  from public.job_tasks t
  join public.jobs j on j.id = t.job_id
 where t.target_kind in ('server', 'host');

create view public.v_open_blockers with (security_invoker = true) as
select b.id as blocker_id, b.job_id, j.type as job_type, j.status as job_status, b.kind, b.description,
       b.host_id, h.name as host_name, b.vm_id, v.name as vm_name, b.server_id,
       b.detected_at, round(extract(epoch from now() - b.detected_at)::numeric, 0) as age_s
  from public.job_blockers b
  join public.jobs j on j.id = b.job_id
  left join public.esxi_hosts h on h.id = b.host_id
  left join public.vms v on v.id = b.vm_id
 where b.status = 'open';

create view public.v_executor_health with (security_invoker = true) as
select e.id as executor_id, e.name, e.site_id, s.name as site_name, e.status, e.version,
       e.last_heartbeat_at,
       round(extract(epoch from now() - e.last_heartbeat_at)::numeric, 1) as heartbeat_age_s,
       case when e.status = 'disabled' then 'disabled'
            when now() - e.last_heartbeat_at < interval '60 seconds' then 'healthy'
            when now() - e.last_heartbeat_at < interval '300 seconds' then 'stale'
            else 'lost' end as health,
       (select count(*) from public.jobs j where j.claimed_by = e.id and j.status = 'running') as running_jobs
  from public.executors e
  join public.sites s on s.id = e.site_id;

-- installed firmware against the newest package of the server's site catalogs
create view public.v_firmware_compliance with (security_invoker = true) as
with latest as (
  select distinct on (c.site_id, p.component, p.model)
         c.site_id, p.component, p.model, p.version, p.criticality, p.reboot_required, c.name as catalog
    from public.firmware_packages p
    join public.firmware_catalogs c on c.id = p.catalog_id
   order by c.site_id, p.component, p.model, public.version_key(p.version) desc
)
select s.id as server_id, s.name as server_name, s.site_id, s.model, f.component, f.fqdd,
       f.version as installed_version, l.version as target_version, l.criticality, l.reboot_required, l.catalog,
       case when l.version is null then 'unknown'
            when public.version_key(f.version) >= public.version_key(l.version) then 'compliant'
            else 'outdated' end as compliance
  from public.server_firmware f
  join public.servers s on s.id = f.server_id
  left join lateral (
    select x.* from latest x
     where x.site_id = s.site_id and x.component = f.component and x.model in (s.model, '')
     order by (x.model = s.model) desc
     limit 1
  ) l on true;

do $$
declare
  v text;
begin
  foreach v in array array['v_job_stats_by_type', 'v_job_stats_by_week', 'v_job_stats_by_user', 'v_host_history',
                           'v_open_blockers', 'v_executor_health', 'v_firmware_compliance']
  loop
    execute format('revoke all on public.%I from anon, authenticated', v);
    execute format('grant select on public.%I to authenticated', v);
  end loop;
end
$$;
