-- Which SQL functions the API roles may EXECUTE: only the ones they need.
--
-- Every function in public is an RPC (/rest/v1/rpc/<name>) for whoever may execute it, so
-- a helper that RLS, a trigger or a definer function uses internally must not also be
-- callable by a user. The allow-list is policies/access.yaml (`functions_executable`);
-- tests/integration/test_access_matrix.py lists every function anon or authenticated can
-- execute in the live database and fails on any difference.
--
-- What the API roles keep (authenticated only; anon needs none - it holds no table
-- privilege, so neither RLS policies nor triggers ever run as anon):
--   current_app_role, has_role        RLS policies, edge functions (the caller's role)
--   is_user_context,
--   job_transition_allowed            invoker triggers on rows users may update (jobs_guard,
--                                     maintenance_windows_guard)
--   version_key                       v_firmware_compliance (security_invoker view)
--   force_resume                      job-control's force_resume (checks the admin role)
-- What they lose:
--   credentials_in_site   answered "does this credential id exist in that site" to any
--                         signed-in user, viewers included (who may not read
--                         credential_sets at all): an existence oracle. jobs_guard reaches
--                         it only when credential or site columns change, which users
--                         cannot do (20261206110000).
--   audit_actor,
--   audit_row_hash        used by the audit triggers, which run as their owner
--                         (SECURITY DEFINER); nothing calls them as a user
--   anything for anon
--
-- And from now on a new function is executable by nobody but its owner until a migration
-- grants it: the platform's default privileges granted EXECUTE on every new function in
-- public to PUBLIC, anon and authenticated, so a helper added without a REVOKE became an
-- RPC. (Trigger functions need no EXECUTE grant to fire; SECURITY DEFINER functions run
-- their body as the owner.)

revoke execute on function public.credentials_in_site(uuid[], uuid) from public, anon, authenticated;
grant execute on function public.credentials_in_site(uuid[], uuid) to service_role;

revoke execute on function public.audit_actor() from public, anon, authenticated;
revoke execute on function public.audit_row_hash(text, bigint, smallint, timestamptz, text, uuid, text, text, text, text,
                                                 jsonb, jsonb, text) from public, anon, authenticated;
grant execute on function public.audit_actor() to service_role;
grant execute on function public.audit_row_hash(text, bigint, smallint, timestamptz, text, uuid, text, text, text, text,
                                                jsonb, jsonb, text) to service_role;

revoke execute on function public.current_app_role() from public, anon;
revoke execute on function public.has_role(public.app_role) from public, anon;
revoke execute on function public.is_user_context() from public, anon;
revoke execute on function public.version_key(text) from public, anon;

-- default privileges of functions the migration role creates from here on: none for the
-- API roles (the global default grants PUBLIC, the per-schema one anon and authenticated)
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;
