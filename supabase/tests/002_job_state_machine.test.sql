-- The job state machine: the transition table, legal and illegal changes by the system and
-- by users, terminal jobs, blockers, and the four-eyes rule on maintenance windows.
begin;
create extension if not exists pgtap with schema extensions;
select plan(30);

-- Run one statement as a signed-in user, the way the REST layer does; returns row_count.
create function pg_temp.as_user(p_uid uuid, p_sql text) returns bigint language plpgsql as $$
declare
  n bigint;
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims', json_build_object('sub', p_uid, 'role', 'authenticated')::text, true);
  execute p_sql;
  get diagnostics n = row_count;
  perform set_config('role', 'postgres', true);
  perform set_config('request.jwt.claims', '', true);
  return n;
end
$$;

insert into auth.users (id, email) values
  ('a0000000-0000-4000-8000-000000000001', 'viewer@sm.test'),
  ('a0000000-0000-4000-8000-000000000002', 'operator@sm.test'),
  ('a0000000-0000-4000-8000-000000000003', 'approver@sm.test'),
  ('a0000000-0000-4000-8000-000000000004', 'approver2@sm.test');
insert into public.user_roles (user_id, role) values
  ('a0000000-0000-4000-8000-000000000001', 'viewer'),
  ('a0000000-0000-4000-8000-000000000002', 'operator'),
  ('a0000000-0000-4000-8000-000000000003', 'approver'),
  ('a0000000-0000-4000-8000-000000000004', 'approver');
insert into public.sites (id, name) values ('b0000000-0000-4000-8000-000000000001', 'sm-site');
insert into public.executors (id, site_id, name, public_key, key_id)
values ('c0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001', 'sm-ex',
        '-----BEGIN PUBLIC KEY-----AAAAAAAAAAAAAAAAAAAAAAAA', 'k1');
insert into public.jobs (id, type, site_id)
select ('d0000000-0000-4000-8000-00000000000' || g)::uuid, 'selftest', 'b0000000-0000-4000-8000-000000000001'
  from generate_series(1, 6) g;

-- 1. the transition table itself
select results_eq(
  $$ select f::text, t::text from unnest(enum_range(null::public.job_status)) f,
            unnest(enum_range(null::public.job_status)) t
      where public.job_transition_allowed(f, t) order by 1, 2 $$,
  $$ values ('paused', 'cancelled'), ('paused', 'pending'), ('pending', 'cancelled'), ('pending', 'running'),
            ('running', 'cancelled'), ('running', 'completed'), ('running', 'failed'), ('running', 'paused'),
            ('running', 'pending') $$,
  'exactly the documented transitions are allowed');

-- 2. legal and illegal changes by the system (executor RPCs, service role)
select throws_like(
  $$ insert into public.jobs (type, site_id, status) values ('selftest', 'b0000000-0000-4000-8000-000000000001', 'running') $$,
  'illegal_transition:%', 'a job cannot be created in any status but pending');
select throws_like(
  $$ update public.jobs set status = 'completed' where id = 'd0000000-0000-4000-8000-000000000001' $$,
  'illegal_transition:%pending to completed%', 'pending -> completed is refused');
select throws_like(
  $$ update public.jobs set status = 'paused', pause_reason = 'operator' where id = 'd0000000-0000-4000-8000-000000000001' $$,
  'illegal_transition:%pending to paused%', 'pending -> paused is refused');
select lives_ok(
  $$ update public.jobs set status = 'running', claimed_by = 'c0000000-0000-4000-8000-000000000001',
       lease_expires_at = now() + interval '1 minute', lease_epoch = 1
      where id in ('d0000000-0000-4000-8000-000000000001', 'd0000000-0000-4000-8000-000000000002',
                   'd0000000-0000-4000-8000-000000000003') $$,
  'pending -> running is allowed');
select throws_ok(
  $$ update public.jobs set status = 'running', lease_expires_at = null where id = 'd0000000-0000-4000-8000-000000000004' $$,
  '23514', null, 'a running job must hold a lease');
select throws_ok(
  $$ update public.jobs set status = 'paused' where id = 'd0000000-0000-4000-8000-000000000001' $$,
  '23514', null, 'a paused job must have a pause reason');
select lives_ok(
  $$ update public.jobs set status = 'paused', pause_reason = 'operator' where id = 'd0000000-0000-4000-8000-000000000001' $$,
  'running -> paused is allowed');
select is((select row(claimed_by, lease_expires_at)::text from public.jobs where id = 'd0000000-0000-4000-8000-000000000001'),
          row(null::uuid, null::timestamptz)::text, 'pausing releases the lease');
select throws_like(
  $$ update public.jobs set status = 'running', claimed_by = 'c0000000-0000-4000-8000-000000000001',
       lease_expires_at = now() + interval '1 minute' where id = 'd0000000-0000-4000-8000-000000000001' $$,
  'illegal_transition:%paused to running%', 'paused -> running is refused (resume goes through pending and a claim)');
select throws_ok(
  $$ update public.jobs set status = 'failed' where id = 'd0000000-0000-4000-8000-000000000002' $$,
  '23514', null, 'a failed job needs an error');
select lives_ok(
  $$ update public.jobs set status = 'completed', result = '{"ok": true}' where id = 'd0000000-0000-4000-8000-000000000002' $$,
  'running -> completed is allowed');
select isnt((select finished_at from public.jobs where id = 'd0000000-0000-4000-8000-000000000002'), null,
            'finishing stamps finished_at');
select throws_like(
  $$ update public.jobs set details = '{"late": true}' where id = 'd0000000-0000-4000-8000-000000000002' $$,
  'illegal_transition:%never changes again%', 'a terminal job never changes again, in any column');
select throws_like(
  $$ update public.jobs set status = 'pending' where id = 'd0000000-0000-4000-8000-000000000002' $$,
  'illegal_transition:%', 'a terminal job is never requeued');

-- 3. users: cancel pending/paused, resume paused, request cancel/pause; nothing else
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000001',
          $$ update public.jobs set status = 'cancelled' where id = 'd0000000-0000-4000-8000-000000000004' $$),
          0::bigint, 'a viewer cannot change a job (RLS hides it from updates)');
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.jobs set status = ''completed'' where id = ''d0000000-0000-4000-8000-000000000003''') $$,
  'forbidden_transition:%', 'an operator cannot complete a running job');
select throws_ok(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.jobs set lease_epoch = 99 where id = ''d0000000-0000-4000-8000-000000000004''') $$,
  '42501', null, 'users cannot touch lease columns (column privileges)');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
          $$ update public.jobs set cancel_requested_at = '2000-01-01' where id = 'd0000000-0000-4000-8000-000000000003' $$),
          1::bigint, 'an operator requests the cancel of a running job');
select ok((select cancel_requested_at > '2000-01-01' and cancel_requested_by = 'a0000000-0000-4000-8000-000000000002'
             and status = 'running' from public.jobs where id = 'd0000000-0000-4000-8000-000000000003'),
          'the request is stamped by the database and the job keeps running until the executor honours it');
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.jobs set cancel_requested_at = null where id = ''d0000000-0000-4000-8000-000000000003''') $$,
  'illegal_transition:%cannot be withdrawn%', 'a cancel request cannot be withdrawn');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
          $$ update public.jobs set status = 'cancelled' where id = 'd0000000-0000-4000-8000-000000000004' $$),
          1::bigint, 'an operator cancels a pending job');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
          $$ update public.jobs set status = 'pending' where id = 'd0000000-0000-4000-8000-000000000001' $$),
          1::bigint, 'an operator resumes a job paused by an operator');

-- blockers: a job paused for blockers resumes only when every blocker is resolved
update public.jobs set status = 'running', claimed_by = 'c0000000-0000-4000-8000-000000000001',
       lease_expires_at = now() + interval '1 minute' where id = 'd0000000-0000-4000-8000-000000000005';
update public.jobs set status = 'paused', pause_reason = 'blockers' where id = 'd0000000-0000-4000-8000-000000000005';
insert into public.job_blockers (id, job_id, kind, description)
values ('e0000000-0000-4000-8000-000000000001', 'd0000000-0000-4000-8000-000000000005', 'usb_passthrough', 'USB on vm-1');
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.jobs set status = ''pending'' where id = ''d0000000-0000-4000-8000-000000000005''') $$,
  'open_blockers:%', 'a job with open blockers cannot resume');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
          $$ insert into public.blocker_resolutions (blocker_id, action, note)
             values ('e0000000-0000-4000-8000-000000000001', 'power_off_vm', 'ok to power off') $$),
          1::bigint, 'an operator resolves the blocker');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
          $$ update public.jobs set status = 'pending' where id = 'd0000000-0000-4000-8000-000000000005' $$),
          1::bigint, 'with its blockers resolved the job resumes');

-- executor_lost is for admins (force_resume)
update public.jobs set status = 'running', claimed_by = 'c0000000-0000-4000-8000-000000000001',
       lease_expires_at = now() + interval '1 minute' where id = 'd0000000-0000-4000-8000-000000000006';
update public.jobs set status = 'paused', pause_reason = 'executor_lost' where id = 'd0000000-0000-4000-8000-000000000006';
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.jobs set status = ''pending'' where id = ''d0000000-0000-4000-8000-000000000006''') $$,
  'forbidden_transition:%force_resume%', 'an operator cannot resume a job whose executor was lost');

-- 4. maintenance windows: four eyes
insert into public.maintenance_windows (id, site_id, title, starts_at, ends_at, requested_by)
values ('f0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001', 'patch night',
        now(), now() + interval '4 hours', 'a0000000-0000-4000-8000-000000000003');
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000002',
       'update public.maintenance_windows set status = ''approved'' where id = ''f0000000-0000-4000-8000-000000000001''') $$,
  'forbidden: only approvers%', 'an operator cannot approve a window');
select throws_like(
  $$ select pg_temp.as_user('a0000000-0000-4000-8000-000000000003',
       'update public.maintenance_windows set status = ''approved'' where id = ''f0000000-0000-4000-8000-000000000001''') $$,
  'four_eyes:%', 'the requester cannot approve their own window');
select is(pg_temp.as_user('a0000000-0000-4000-8000-000000000004',
          $$ update public.maintenance_windows set status = 'approved' where id = 'f0000000-0000-4000-8000-000000000001' $$),
          1::bigint, 'a second approver approves it');

select * from finish();
rollback;
