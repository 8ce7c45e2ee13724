-- Identity (20261206170100_identity.sql): a break-glass grant gives its role to its own
-- session only, until it expires or is revoked; directory groups map to the highest role and
-- no mapped group gives none; the executor-path mailbox answers once, in time, to the named
-- executor; the sync takes a lost role and the sessions with it; users reach none of it.
begin;
create extension if not exists pgtap with schema extensions;
select plan(31);

create function pg_temp.role_as(p_uid uuid, p_session text) returns text language plpgsql as $$
declare
  r text;
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
                     json_build_object('sub', p_uid, 'role', 'authenticated', 'session_id', p_session)::text, true);
  r := public.current_app_role()::text;
  perform set_config('role', 'postgres', true);
  perform set_config('request.jwt.claims', '', true);
  return r;
end
$$;

insert into auth.users (id, email) values
  ('a6000000-0000-4000-8000-000000000001', 'bg@identity.test'),
  ('a6000000-0000-4000-8000-000000000002', 'dir@identity.test');
insert into auth.sessions (id, user_id) values
  ('d6000000-0000-4000-8000-000000000001', 'a6000000-0000-4000-8000-000000000001'),
  ('d6000000-0000-4000-8000-000000000002', 'a6000000-0000-4000-8000-000000000002');
insert into public.sites (id, name) values ('b6000000-0000-4000-8000-000000000001', 'identity-site');
insert into public.executors (id, site_id, name, public_key, key_id) values
  ('e6000000-0000-4000-8000-000000000001', 'b6000000-0000-4000-8000-000000000001', 'ex', repeat('P', 43), 'k1'),
  ('e6000000-0000-4000-8000-000000000002', 'b6000000-0000-4000-8000-000000000001', 'ex2', repeat('Q', 43), 'k2');
insert into public.directory_configs (site_id, mode) values ('b6000000-0000-4000-8000-000000000001', 'executor');
insert into public.directory_group_roles (site_id, group_dn, role) values
  ('b6000000-0000-4000-8000-000000000001', 'cn=Admins,dc=t', 'admin'),
  ('b6000000-0000-4000-8000-000000000001', 'cn=ops,dc=t', 'operator');

-- break-glass ---------------------------------------------------------------------------------
select public.breakglass_provision('pgtap-bg', 'a6000000-0000-4000-8000-000000000001',
                                   'scrypt$16384$8$1$' || repeat('A', 22) || '$' || repeat('A', 43), 'admin', 600);
select is(pg_temp.role_as('a6000000-0000-4000-8000-000000000001', 'd6000000-0000-4000-8000-000000000001'), null,
          'a break-glass account has no role before a grant');
select public.breakglass_grant((select id from public.breakglass_accounts where name = 'pgtap-bg'),
                               'd6000000-0000-4000-8000-000000000001', 'pgTAP emergency drill', 60, 'pgtap');
select is(pg_temp.role_as('a6000000-0000-4000-8000-000000000001', 'd6000000-0000-4000-8000-000000000001'), 'admin',
          'the granted session has the account''s role');
select is(pg_temp.role_as('a6000000-0000-4000-8000-000000000001', 'd6000000-0000-4000-8000-00000000ffff'), null,
          'another session of the same user does not');
select ok((select s.not_after = b.expires_at from auth.sessions s join public.breakglass_sessions b
            on b.auth_session_id = s.id where s.id = 'd6000000-0000-4000-8000-000000000001'),
          'the auth session cannot be refreshed past the grant');
select is((select count(*)::int from public.audit_log where action = 'breakglass.used'
            and new_data ->> 'severity' = 'critical' and new_data ->> 'account' = 'pgtap-bg'), 1,
          'the grant is audited as critical');
update public.breakglass_sessions set expires_at = now() - interval '1 second', started_at = now() - interval '1 minute'
 where auth_session_id = 'd6000000-0000-4000-8000-000000000001';
select is(pg_temp.role_as('a6000000-0000-4000-8000-000000000001', 'd6000000-0000-4000-8000-000000000001'), null,
          'an expired grant gives no role');
select public.breakglass_failed('pgtap-bg', 'pgtap') from generate_series(1, 5);
select ok(public.breakglass_client_locked('pgtap-bg', 'pgtap') > now(),
          'five failures from one client lock that client out');
select is(public.breakglass_client_locked('pgtap-bg', 'another-client'), null,
          'another client is not locked out');
select ok((select failed_attempts >= 5 and locked_until is null from public.breakglass_accounts where name = 'pgtap-bg'),
          'the account counts the failures and is not locked for everyone');

-- mapping -------------------------------------------------------------------------------------
select is(public.idm_role_for_groups('b6000000-0000-4000-8000-000000000001',
                                     array['CN=admins, DC=t', 'cn=ops,dc=t']), 'admin'::public.app_role,
          'the highest mapped role wins, DNs compared normalised');
select is(public.idm_role_for_groups('b6000000-0000-4000-8000-000000000001', array['cn=other,dc=t']), null,
          'no mapped group, no role');
select is(public.idm_record_sign_in('a6000000-0000-4000-8000-000000000002', 'b6000000-0000-4000-8000-000000000001',
                                    'uid=dir,dc=t', 'dir', array['cn=ops,dc=t'], 'executor'), 'operator'::public.app_role,
          'a directory sign-in sets the mapped role');
select is((select source from public.user_roles where user_id = 'a6000000-0000-4000-8000-000000000002'), 'directory',
          'as a directory role');

-- the sync ------------------------------------------------------------------------------------
update public.executors set last_heartbeat_at = now();
select throws_ok($$ select public.idm_apply_sync('e6000000-0000-4000-8000-000000000001',
                                                 '{"uid=dir,dc=t": "admin"}'::jsonb) $$,
                 '22023', null, 'the sync sends groups, never a role of its own choosing');
select is(public.idm_apply_sync('e6000000-0000-4000-8000-000000000001',
                                '{"UID=dir, DC=t": ["cn=other,dc=t", "cn=ADMINS,dc=t"]}'::jsonb) ->> 'changed', '1',
          'the sync maps the member''s groups through directory_group_roles (DNs normalised)');
select is((select role::text from public.user_roles where user_id = 'a6000000-0000-4000-8000-000000000002'), 'admin',
          'to the highest role they give');
select throws_ok($$ insert into public.directory_group_roles (site_id, group_dn, role)
                    values ('b6000000-0000-4000-8000-000000000001', 'cn=x,dc=t', 'root') $$,
                 '22P02', null, 'a mapping names one of the app_role values');
select is(public.idm_apply_sync('e6000000-0000-4000-8000-000000000001', '{}'::jsonb) ->> 'removed', '1',
          'the sync takes the role of a user in no mapped group');
select is((select count(*)::int from auth.sessions where user_id = 'a6000000-0000-4000-8000-000000000002'), 0,
          'and ends their sessions (refresh tokens with them)');

-- the mailbox ---------------------------------------------------------------------------------
create temp table req as select * from public.idm_begin_login('b6000000-0000-4000-8000-000000000001', '192.0.2.7');
select public.idm_submit_login((select request_id from req), '{"v":1}', repeat('V', 43));
select throws_ok($$ select public.idm_answer_login(
                     (select case when executor_id = 'e6000000-0000-4000-8000-000000000001'
                                  then 'e6000000-0000-4000-8000-000000000002'::uuid
                                  else 'e6000000-0000-4000-8000-000000000001'::uuid end from req),
                     (select request_id from req), '{}', repeat('M', 43)) $$,
                 'P0001', null, 'only the executor the request names may answer');
select lives_ok($$ select public.idm_answer_login((select executor_id from req), (select request_id from req), '{}',
                                                  repeat('M', 43)) $$, 'the named executor answers');
select throws_ok($$ select public.idm_answer_login((select executor_id from req), (select request_id from req), '{}',
                                                   repeat('M', 43)) $$,
                 'P0001', null, 'a second answer is refused');

update public.identity_policy set begin_per_client_per_min = 1;  -- 192.0.2.7 began one above
select throws_ok($$ select public.idm_begin_login('b6000000-0000-4000-8000-000000000001', '192.0.2.7') $$,
                 'P0001', 'rate_limited: too many sign-ins from this address; try again in a minute',
                 'one address begins at most begin_per_client_per_min sign-ins a minute (rate_limited, not busy)');
select lives_ok($$ select public.idm_begin_login('b6000000-0000-4000-8000-000000000001', '192.0.2.8') $$,
                'another address still can');

-- a break-glass account never holds a role of its own -------------------------------------------
select throws_ok($$ insert into public.user_roles (user_id, role)
                    values ('a6000000-0000-4000-8000-000000000001', 'admin') $$,
                 '42501', null, 'a break-glass session cannot make its account a permanent admin');

-- the default mapping of policies/identity.yaml (20261209110100) ----------------------------
insert into public.sites (id, name) values ('b6000000-0000-4000-8000-000000000002', 'identity-site-ad');
insert into public.directory_configs (site_id, mode) values ('b6000000-0000-4000-8000-000000000002', 'executor');
insert into public.directory_group_roles (site_id, group_dn, role) values
  ('b6000000-0000-4000-8000-000000000002', 'CN=RackpilotAdmins, CN=Users, DC=corp, DC=test', 'viewer');
select throws_ok($$ select public.idm_seed_group_roles('b6000000-0000-4000-8000-000000000002', 'ad', 'DC=corp,DC=test') $$,
                 '42501', 'forbidden: the directory group mapping is for admins', 'no admin, no service role: refused');
select set_config('request.jwt.claims', '{"role": "service_role"}', true);
select is((select array_agg(s.role::text order by s.group_key)
             from public.idm_seed_group_roles('b6000000-0000-4000-8000-000000000002', 'ad', 'DC=corp,DC=test') s),
          array['approver', 'operator', 'viewer'],
          'the service role seeds the preset''s groups the site lacks (its admins group stays a viewer)');
select is_empty($$ select * from public.idm_seed_group_roles('b6000000-0000-4000-8000-000000000002', 'ad', 'DC=corp,DC=test') $$,
                'seeding again adds nothing');
select set_config('request.jwt.claims', '', true);
select is(public.idm_role_for_groups('b6000000-0000-4000-8000-000000000002',
                                     array['cn=rackpilotoperators,cn=users,dc=corp,dc=test']),
          'operator'::public.app_role, 'a seeded group maps at sign-in');
select ok(has_function_privilege('authenticated', 'public.idm_seed_group_roles(uuid, text, text)', 'EXECUTE')
          and not has_function_privilege('anon', 'public.idm_seed_group_roles(uuid, text, text)', 'EXECUTE')
          and not has_function_privilege('authenticated', 'public.idm_default_group_roles()', 'EXECUTE'),
          'users may ask to seed (the function checks admin); the defaults are no RPC');

-- users ---------------------------------------------------------------------------------------
select ok(not has_function_privilege('authenticated', 'public.idm_answer_login(uuid, uuid, text, text)', 'EXECUTE')
          and not has_function_privilege('authenticated', 'public.breakglass_grant(uuid, uuid, text, integer, text)', 'EXECUTE')
          and not has_table_privilege('authenticated', 'public.idm_login_requests', 'SELECT')
          and not has_column_privilege('authenticated', 'public.breakglass_accounts', 'secret_hash', 'SELECT'),
          'users can neither answer, grant, read the mailbox nor read a break-glass hash');

select * from finish();
rollback;
