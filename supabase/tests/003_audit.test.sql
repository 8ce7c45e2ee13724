-- The audit log: append-only for everyone, chained, verified, and attributed.
begin;
create extension if not exists pgtap with schema extensions;
select plan(13);

create function pg_temp.as_role(p_role text, p_claims jsonb, p_sql text) returns bigint language plpgsql as $$
declare
  n bigint;
begin
  perform set_config('role', p_role, true);
  perform set_config('request.jwt.claims', p_claims::text, true);
  execute p_sql;
  get diagnostics n = row_count;
  perform set_config('role', 'postgres', true);
  perform set_config('request.jwt.claims', '', true);
  return n;
end
$$;

insert into auth.users (id, email) values ('a1000000-0000-4000-8000-000000000001', 'op@audit.test');
insert into public.user_roles (user_id, role) values ('a1000000-0000-4000-8000-000000000001', 'operator');
insert into public.sites (id, name) values ('b1000000-0000-4000-8000-000000000001', 'audit-site');

select is_empty('select * from public.verify_audit_chain()', 'the chain verifies before the test writes anything');

-- a job an operator creates is recorded with the user as actor, chained to the row before
-- it. Users hold no INSERT on jobs: create-job writes through public.functions_create_job
-- as the service role with the operator's claims set, as done here.
select throws_ok(
  $$ select pg_temp.as_role('authenticated', '{"sub": "a1000000-0000-4000-8000-000000000001", "role": "authenticated"}',
       'insert into public.jobs (type, site_id) values (''scp_backup'', ''b1000000-0000-4000-8000-000000000001'')') $$,
  '42501', null, 'an operator cannot insert a job directly');
select set_config('role', 'service_role', true),
       set_config('request.jwt.claims', '{"sub": "a1000000-0000-4000-8000-000000000001", "role": "authenticated"}', true);
create temp table audit_job as
  select public.functions_create_job('scp_backup', 'b1000000-0000-4000-8000-000000000001', null, '{}',
           '{"targets": [{"kind": "server", "id": "e1000000-0000-4000-8000-000000000001", "name": "s"}]}',
           50::smallint, '', null, null, '{}') as id;
select set_config('role', 'postgres', true), set_config('request.jwt.claims', '', true);
select is((select count(*) from audit_job)::int, 1, 'an operator creates a job through create-job''s write path');
select results_eq(
  $$ select action, actor_kind, actor_id from public.audit_log
      where table_name = 'jobs' and row_id = (select id::text from audit_job) $$,
  $$ values ('job.created', 'user', 'a1000000-0000-4000-8000-000000000001'::uuid) $$,
  'the creation is audited with the user as actor');
select ok(
  (select a.prev_hash = (select b.hash from public.audit_log b where b.lane = a.lane and b.id < a.id
                          order by b.id desc limit 1)
     from public.audit_log a where a.table_name = 'jobs' and a.row_id = (select id::text from audit_job)),
  'the row stores the hash of the previous row of its lane');
select ok(
  (select a.hash = public.audit_row_hash(a.prev_hash, a.id, a.lane, a.occurred_at, a.actor_kind, a.actor_id, a.actor_role,
                                         a.action, a.table_name, a.row_id, a.old_data, a.new_data, a.note)
     from public.audit_log a where a.table_name = 'jobs' and a.row_id = (select id::text from audit_job)),
  'the row''s hash covers its contents and the previous hash');

-- append-only, whoever asks
select throws_like($$ update public.audit_log set note = 'edited' where id = (select max(id) from public.audit_log) $$,
                   'audit_append_only:%', 'UPDATE is refused even for the database owner');
select throws_like($$ delete from public.audit_log where id = (select max(id) from public.audit_log) $$,
                   'audit_append_only:%', 'DELETE is refused even for the database owner');
select throws_like($$ truncate public.audit_log $$, 'audit_append_only:%', 'TRUNCATE is refused');
select throws_ok(
  $$ select pg_temp.as_role('service_role', '{"role": "service_role"}',
       'delete from public.audit_log where id = (select max(id) from public.audit_log)') $$,
  '42501', null, 'the service role holds no DELETE on the audit log');
select throws_ok(
  $$ select pg_temp.as_role('service_role', '{"role": "service_role"}',
       'insert into public.audit_log (actor_kind, actor_role, action, prev_hash, hash)
        values (''service'', ''service_role'', ''forged'', repeat(''0'', 64), repeat(''0'', 64))') $$,
  '42501', null, 'the service role cannot forge entries');

-- tampering (as a superuser with triggers off) is found, at the right row
set local session_replication_role = replica;
update public.audit_log set new_data = '{"type": "firmware_update"}'
 where table_name = 'jobs' and row_id = (select id::text from audit_job);
set local session_replication_role = origin;
select results_eq(
  $$ select broken_id, reason from public.verify_audit_chain() $$,
  $$ select id, 'hash does not match the row''s contents' from public.audit_log
      where table_name = 'jobs' and row_id = (select id::text from audit_job) $$,
  'verify_audit_chain reports the tampered row as the first broken link');
select throws_ok(
  $$ select pg_temp.as_role('authenticated', '{"sub": "a1000000-0000-4000-8000-000000000001", "role": "authenticated"}',
       'select * from public.verify_audit_chain()') $$,
  '42501', null, 'users cannot run the verifier (it reads every row)');

select * from finish();
rollback;
