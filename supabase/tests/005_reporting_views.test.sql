-- Reporting views: the figures they compute, on a site of the test's own.
begin;
create extension if not exists pgtap with schema extensions;
select plan(11);

insert into auth.users (id, email) values ('a5000000-0000-4000-8000-000000000001', 'op@views.test');
insert into public.sites (id, name) values ('b5000000-0000-4000-8000-000000000001', 'views-site');
insert into public.executors (id, site_id, name, public_key, key_id, last_heartbeat_at) values
  ('c5000000-0000-4000-8000-000000000001', 'b5000000-0000-4000-8000-000000000001', 'fresh',
   '-----BEGIN PUBLIC KEY-----AAAAAAAAAAAAAAAAAAAAAAAA', 'k1', now() - interval '5 seconds'),
  ('c5000000-0000-4000-8000-000000000002', 'b5000000-0000-4000-8000-000000000001', 'silent',
   '-----BEGIN PUBLIC KEY-----AAAAAAAAAAAAAAAAAAAAAAAA', 'k1', now() - interval '10 minutes');

-- three scp_backup jobs by one user: completed in 10 s, completed in 30 s, failed
insert into public.jobs (id, type, site_id, created_by)
select ('d5000000-0000-4000-8000-00000000000' || g)::uuid, 'scp_backup', 'b5000000-0000-4000-8000-000000000001',
       'a5000000-0000-4000-8000-000000000001'
  from generate_series(1, 3) g;
update public.jobs set status = 'running', claimed_by = 'c5000000-0000-4000-8000-000000000001',
       lease_expires_at = now() + interval '1 minute',
       started_at = now() - case id when 'd5000000-0000-4000-8000-000000000001' then interval '10 seconds'
                                    else interval '30 seconds' end
 where site_id = 'b5000000-0000-4000-8000-000000000001';
update public.jobs set status = 'completed' where id in ('d5000000-0000-4000-8000-000000000001',
                                                         'd5000000-0000-4000-8000-000000000002');
update public.jobs set status = 'failed', error = 'iDRAC unreachable' where id = 'd5000000-0000-4000-8000-000000000003';

select results_eq(
  $$ select jobs_total, completed, failed, success_rate, avg_duration_s from public.v_job_stats_by_user
      where user_id = 'a5000000-0000-4000-8000-000000000001' $$,
  $$ values (3::bigint, 2::bigint, 1::bigint, 0.6667::numeric, 20.0::numeric) $$,
  'success rate and mean duration per user');
select ok((select jobs_total >= 3 and completed >= 2 and failed >= 1 from public.v_job_stats_by_type
            where type = 'scp_backup'), 'figures per job type include the user''s jobs');
select ok((select sum(jobs_total) >= 3 from public.v_job_stats_by_week
            where type = 'scp_backup' and week = date_trunc('week', now())), 'figures per week');

-- executor health from heartbeat age
select results_eq(
  $$ select name, health, running_jobs from public.v_executor_health
      where site_id = 'b5000000-0000-4000-8000-000000000001' order by name $$,
  $$ values ('fresh'::text, 'healthy'::text, 0::bigint), ('silent', 'lost', 0) $$,
  'executor health follows the heartbeat age');

-- per-host history and open blockers
insert into public.servers (id, site_id, name, idrac_address, model) values
  ('e5000000-0000-4000-8000-000000000001', 'b5000000-0000-4000-8000-000000000001', 'r650-01', '10.5.0.1', 'R650');
insert into public.job_tasks (job_id, target_kind, target_id, target_name, status, started_at, finished_at)
values ('d5000000-0000-4000-8000-000000000001', 'server', 'e5000000-0000-4000-8000-000000000001', 'r650-01',
        'completed', now() - interval '8 seconds', now());
select results_eq(
  $$ select job_type::text, task_status::text, duration_s from public.v_host_history
      where target_id = 'e5000000-0000-4000-8000-000000000001' $$,
  $$ values ('scp_backup', 'completed', 8.0::numeric) $$,
  'per-host history lists what was done to the server');

insert into public.jobs (id, type, site_id) values ('d5000000-0000-4000-8000-000000000009', 'rolling_cluster_update',
                                                    'b5000000-0000-4000-8000-000000000001');
insert into public.job_blockers (job_id, kind, description, status, resolved_at) values
  ('d5000000-0000-4000-8000-000000000009', 'vgpu', 'vGPU on vm-3', 'open', null),
  ('d5000000-0000-4000-8000-000000000009', 'cdrom_connected', 'ISO on vm-4', 'resolved', now());
select results_eq(
  $$ select kind::text from public.v_open_blockers where job_id = 'd5000000-0000-4000-8000-000000000009' $$,
  $$ values ('vgpu') $$,
  'open blockers only');

-- firmware compliance against the newest package, model-specific before generic
insert into public.firmware_catalogs (id, site_id, name, url) values
  ('f5000000-0000-4000-8000-000000000001', 'b5000000-0000-4000-8000-000000000001', 'dell', 'https://downloads.test/Catalog.xml');
insert into public.firmware_packages (catalog_id, component, model, version, path, criticality) values
  ('f5000000-0000-4000-8000-000000000001', 'BIOS', 'R650', '2.9.0', 'bios-old.exe', 'optional'),
  ('f5000000-0000-4000-8000-000000000001', 'BIOS', 'R650', '2.19.1', 'bios.exe', 'urgent'),
  ('f5000000-0000-4000-8000-000000000001', 'BIOS', '', '9.9.9', 'bios-generic.exe', 'optional'),
  ('f5000000-0000-4000-8000-000000000001', 'iDRAC', '', '7.00.30.00', 'idrac.exe', 'recommended');
insert into public.server_firmware (server_id, component, version) values
  ('e5000000-0000-4000-8000-000000000001', 'BIOS', '2.10.0'),
  ('e5000000-0000-4000-8000-000000000001', 'iDRAC', '7.00.30.00'),
  ('e5000000-0000-4000-8000-000000000001', 'NIC', '22.0.1');
select results_eq(
  $$ select component, installed_version, target_version, compliance from public.v_firmware_compliance
      where server_id = 'e5000000-0000-4000-8000-000000000001' order by component $$,
  $$ values ('BIOS'::text, '2.10.0'::text, '2.19.1'::text, 'outdated'::text),
            ('NIC', '22.0.1', null, 'unknown'),
            ('iDRAC', '7.00.30.00', '7.00.30.00', 'compliant') $$,
  'firmware compliance: numeric version order, model-specific package first, unknown without a package');
select ok(public.version_key('2.9.0') < public.version_key('2.10.0'), 'version_key orders 2.9.0 before 2.10.0');
select ok(public.version_key('7.00.30.00') = public.version_key('7.0.30.0'), 'version_key ignores leading zeros');

-- the views apply the caller's RLS: a user without a role sees no figures at all
select is((select count(*) from public.v_job_stats_by_type), (select count(distinct type) from public.jobs),
          'the owner sees every job type');
set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "a5000000-0000-4000-8000-000000000001", "role": "authenticated"}', true);
select is((select count(*) from public.v_executor_health), 0::bigint,
          'a user without an application role sees nothing through the views');
reset role;

select * from finish();
rollback;
