-- Structural access rules for every relation in public. The full per-role access matrix
-- (every table and view x anon/viewer/operator/approver/admin x select/insert/update/delete,
-- derived from policies/access.yaml) is checked by tests/integration/test_access_matrix.py,
-- which can read the YAML; this file holds the rules that need no policy file.
begin;
create extension if not exists pgtap with schema extensions;
select plan(7);

select is(
  array(select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity order by 1),
  '{}'::text[],
  'RLS is enabled on every table in public');

select is(
  array(select c.relname || '.' || p.polname from pg_policy p
          join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public'
           and (p.polroles @> array[0::oid] or p.polroles @> array['anon'::regrole::oid]) order by 1),
  '{}'::text[],
  'no policy in public applies to anon or to PUBLIC: policies name the authenticated role');

select is(
  array(select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'v', 'm', 'p')
           and has_table_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
         order by 1),
  '{}'::text[],
  'anon holds no privilege on any table or view in public');

select is(
  array(select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'v'
           and not coalesce(c.reloptions @> array['security_invoker=true'], false) order by 1),
  '{}'::text[],
  'every view runs with the caller''s rights (security_invoker), so RLS applies through it');

select is(
  array(select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.prosecdef
           and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
         order by 1),
  '{}'::text[],
  'every SECURITY DEFINER function in public pins its search_path');

select is(
  array(select f from unnest(array[
          'register_executor', 'heartbeat', 'claim_jobs', 'report_step', 'update_task', 'pause_job',
          'finish_job', 'put_artifact', 'get_job_credential_envelope', 'recover_expired_leases', 'fence_job',
          'executor_row', 'claim_candidates', 'verify_audit_chain']) f
         where exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                        where n.nspname = 'public' and p.proname = f
                          and (has_function_privilege('anon', p.oid, 'EXECUTE')
                               or has_function_privilege('authenticated', p.oid, 'EXECUTE')))
         order by 1),
  '{}'::text[],
  'executor RPCs and internal helpers are not callable by anon or authenticated');

select is(
  array(select f from unnest(array[
          'register_executor', 'heartbeat', 'claim_jobs', 'report_step', 'update_task', 'pause_job',
          'finish_job', 'put_artifact', 'get_job_credential_envelope', 'recover_expired_leases', 'force_resume']) f
         where not exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                            where n.nspname = 'public' and p.proname = f and p.prosecdef
                              and has_function_privilege('service_role', p.oid, 'EXECUTE'))
         order by 1),
  '{}'::text[],
  'the executor RPCs are SECURITY DEFINER and callable by the service role');

select * from finish();
rollback;
