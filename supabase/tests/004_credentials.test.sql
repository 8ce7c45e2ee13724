-- Credential ciphertext: no user role can read it; the executor gets an envelope only for a
-- credential the job it holds references, and only under the current lease epoch.
begin;
create extension if not exists pgtap with schema extensions;
select plan(10);

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

insert into auth.users (id, email) values ('a2000000-0000-4000-8000-000000000001', 'admin@cred.test');
insert into public.user_roles (user_id, role) values ('a2000000-0000-4000-8000-000000000001', 'admin');
insert into public.sites (id, name) values ('b2000000-0000-4000-8000-000000000001', 'cred-site');
insert into public.credential_sets (id, site_id, name, kind, username, sealed_secret, key_id) values
  ('c2000000-0000-4000-8000-000000000001', 'b2000000-0000-4000-8000-000000000001', 'idrac', 'idrac', 'root',
   'sealed-envelope-ciphertext-1', 'k1'),
  ('c2000000-0000-4000-8000-000000000002', 'b2000000-0000-4000-8000-000000000001', 'vcenter', 'vcenter', 'admin',
   'sealed-envelope-ciphertext-2', 'k1');

select ok(not has_column_privilege('authenticated', 'public.credential_sets', 'sealed_secret', 'SELECT')
          and not has_column_privilege('anon', 'public.credential_sets', 'sealed_secret', 'SELECT'),
          'no user role holds SELECT on the ciphertext column');
select throws_ok(
  $$ select pg_temp.as_user('a2000000-0000-4000-8000-000000000001', 'select sealed_secret from public.credential_sets') $$,
  '42501', null, 'even an admin cannot read the ciphertext');
select throws_ok(
  $$ select pg_temp.as_user('a2000000-0000-4000-8000-000000000001', 'select * from public.credential_sets') $$,
  '42501', null, 'select * is refused too (the column is not granted)');
select is(pg_temp.as_user('a2000000-0000-4000-8000-000000000001',
          'select id, name, kind, username, key_id from public.credential_sets where site_id = ''b2000000-0000-4000-8000-000000000001'''),
          2::bigint, 'the metadata stays readable');

-- the executor side
select public.register_executor('cred-site', 'cred-ex', '-----BEGIN PUBLIC KEY-----AAAAAAAAAAAAAAAAAAAAAAAAAA', 'k1');
insert into public.jobs (id, type, site_id, credential_set_ids)
values ('d2000000-0000-4000-8000-000000000001', 'scp_backup', 'b2000000-0000-4000-8000-000000000001',
        '{c2000000-0000-4000-8000-000000000001}');
select is((select count(*)::int from public.claim_jobs((select id from public.executors where name = 'cred-ex'), 1)), 1,
          'the executor claims the job');
select results_eq(
  $$ select username, sealed_secret from public.get_job_credentials(
       (select id from public.executors where name = 'cred-ex'), 'd2000000-0000-4000-8000-000000000001', 1,
       'c2000000-0000-4000-8000-000000000001') $$,
  $$ values ('root', 'sealed-envelope-ciphertext-1') $$,
  'the envelope of a referenced credential is handed out');
select throws_like(
  $$ select * from public.get_job_credentials((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 1, 'c2000000-0000-4000-8000-000000000002') $$,
  'not_referenced:%', 'a credential the job does not reference is refused');
select throws_like(
  $$ select * from public.get_job_credentials((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 0, 'c2000000-0000-4000-8000-000000000001') $$,
  'stale_epoch:%', 'a stale epoch gets nothing');
update public.executors set key_id = 'k2' where name = 'cred-ex';
select throws_like(
  $$ select * from public.get_job_credentials((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 1, 'c2000000-0000-4000-8000-000000000001') $$,
  'key_mismatch:%', 'an envelope sealed to another key is not handed out');
select throws_like(
  $$ insert into public.jobs (type, site_id, credential_set_ids)
     values ('scp_backup', '00000000-0000-4000-8000-000000000001', '{c2000000-0000-4000-8000-000000000001}') $$,
  'invalid_argument:%own site%', 'a job cannot reference another site''s credentials');

select * from finish();
rollback;
