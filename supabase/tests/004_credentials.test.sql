-- Credential ciphertext: no user role can read it; the executor gets an envelope only for a
-- credential the job it holds references, and only under the current lease epoch.
begin;
create extension if not exists pgtap with schema extensions;
select plan(11);

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
insert into public.credential_sets (id, site_id, name, kind, username) values
  ('c2000000-0000-4000-8000-000000000001', 'b2000000-0000-4000-8000-000000000001', 'idrac', 'idrac', 'root'),
  ('c2000000-0000-4000-8000-000000000002', 'b2000000-0000-4000-8000-000000000001', 'vcenter', 'vcenter', 'admin');
insert into public.credential_envelopes (credential_set_id, key_id, sealed_secret) values
  ('c2000000-0000-4000-8000-000000000001', 'k1', 'sealed-envelope-ciphertext-1'),
  ('c2000000-0000-4000-8000-000000000002', 'k1', 'sealed-envelope-ciphertext-2');

select is(array(select column_name::text from information_schema.columns
                 where table_schema = 'public' and table_name = 'credential_sets'
                   and column_name in ('sealed_secret', 'key_id')),
          '{}'::text[], 'a credential set holds no secret of its own: the envelopes are the only copy');
select ok(not has_column_privilege('authenticated', 'public.credential_envelopes', 'sealed_secret', 'SELECT')
          and not has_column_privilege('anon', 'public.credential_envelopes', 'sealed_secret', 'SELECT'),
          'no user role holds SELECT on the ciphertext column');
select throws_ok(
  $$ select pg_temp.as_user('a2000000-0000-4000-8000-000000000001', 'select sealed_secret from public.credential_envelopes') $$,
  '42501', null, 'even an admin cannot read the ciphertext');
select throws_ok(
  $$ select pg_temp.as_user('a2000000-0000-4000-8000-000000000001', 'select * from public.credential_envelopes') $$,
  '42501', null, 'select * is refused too (the column is not granted)');
select is(pg_temp.as_user('a2000000-0000-4000-8000-000000000001',
          'select c.id, c.name, c.kind, c.username, e.key_id from public.credential_sets c
             join public.credential_envelopes e on e.credential_set_id = c.id
            where c.site_id = ''b2000000-0000-4000-8000-000000000001'''),
          2::bigint, 'the metadata stays readable');

-- the executor side
select public.register_executor('cred-site', 'cred-ex', '-----BEGIN PUBLIC KEY-----AAAAAAAAAAAAAAAAAAAAAAAAAA', 'k1');
insert into public.jobs (id, type, site_id, credential_set_ids)
values ('d2000000-0000-4000-8000-000000000001', 'scp_backup', 'b2000000-0000-4000-8000-000000000001',
        '{c2000000-0000-4000-8000-000000000001}');
select is((select count(*)::int from public.claim_jobs((select id from public.executors where name = 'cred-ex'), 1)), 1,
          'the executor claims the job');
select results_eq(
  $$ select username, key_id, sealed_secret from public.get_job_credential_envelope(
       (select id from public.executors where name = 'cred-ex'), 'd2000000-0000-4000-8000-000000000001', 1,
       'c2000000-0000-4000-8000-000000000001') $$,
  $$ values ('root', 'k1', 'sealed-envelope-ciphertext-1') $$,
  'the envelope of a referenced credential sealed to the executor''s key is handed out');
select throws_like(
  $$ select * from public.get_job_credential_envelope((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 1, 'c2000000-0000-4000-8000-000000000002') $$,
  'not_referenced:%', 'a credential the job does not reference is refused');
select throws_like(
  $$ select * from public.get_job_credential_envelope((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 0, 'c2000000-0000-4000-8000-000000000001') $$,
  'stale_epoch:%', 'a stale epoch gets nothing');
update public.executors set key_id = 'k2' where name = 'cred-ex';
select throws_like(
  $$ select * from public.get_job_credential_envelope((select id from public.executors where name = 'cred-ex'),
       'd2000000-0000-4000-8000-000000000001', 1, 'c2000000-0000-4000-8000-000000000001') $$,
  'key_mismatch:%has no envelope for key k2; re-seal it', 'a set with no envelope for the executor''s key is not handed out');
select throws_like(
  $$ insert into public.jobs (type, site_id, credential_set_ids)
     values ('scp_backup', '00000000-0000-4000-8000-000000000001', '{c2000000-0000-4000-8000-000000000001}') $$,
  'invalid_argument:%own site%', 'a job cannot reference another site''s credentials');

select * from finish();
rollback;
