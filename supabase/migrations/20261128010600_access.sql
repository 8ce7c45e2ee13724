-- rackpilot control plane, part 7: who may do what (RLS, grants, function privileges).
--
-- policies/access.yaml is the statement of intent; tests/integration/test_access_matrix.py
-- attempts every operation on every table and view as every role and compares. Two layers
-- agree on each cell: table/column GRANTs to the API role `authenticated` (anon gets
-- nothing at all) and RLS policies keyed on the caller's application role. The service
-- role (executor, edge functions) bypasses RLS as on hosted Supabase; the executor writes
-- jobs only through the fenced RPCs.
--
-- Column privileges keep credential ciphertext (credential_envelopes.sealed_secret, the only
-- copy of a secret) unreadable by every user role: admins may write it (sealing happens
-- client-side or in an edge function) but must name the columns they read, e.g.
-- select=credential_set_id,key_id, and insert with returning=minimal.

-- start from nothing: the platform's default privileges grant everything to the API roles
revoke all on all tables in schema public from anon, authenticated;
revoke all on all sequences in schema public from anon, authenticated;
revoke execute on all functions in schema public from public, anon, authenticated, service_role;
-- and a function created from here on is executable by nobody but its owner until a migration
-- grants it: the platform's default privileges granted EXECUTE on every new function in
-- public to PUBLIC, anon and authenticated, so a helper added without a REVOKE became an RPC
-- (the global default grants PUBLIC, the per-schema one anon and authenticated). Trigger
-- functions need no EXECUTE grant to fire; SECURITY DEFINER functions run their body as the
-- owner. The allow-list is policies/access.yaml (`functions_executable`);
-- tests/integration/test_access_matrix.py fails on any function anon or authenticated can
-- execute that it does not list.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

-- audit_log: append-only for everyone, including the service role
revoke insert, update, delete, truncate on public.audit_log from service_role;

do $$
declare
  t text;
begin
  for t in select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind = 'r'
  loop
    execute format('alter table public.%I enable row level security', t);
  end loop;
end
$$;

-- helpers used by RLS policies and edge functions (the caller's role) and by invoker triggers
-- on rows users may update (jobs_guard, maintenance_windows_guard) must be executable by
-- authenticated; anon needs none (it holds no table privilege, so neither RLS policies nor
-- triggers ever run as anon). The audit helpers run inside the audit triggers, which run as
-- their owner (SECURITY DEFINER): no user calls them.
grant execute on function public.current_app_role() to authenticated, service_role;
grant execute on function public.has_role(public.app_role) to authenticated, service_role;
grant execute on function public.is_user_context() to authenticated, service_role;
grant execute on function public.job_transition_allowed(public.job_status, public.job_status) to authenticated, service_role;
grant execute on function public.audit_actor() to service_role;
grant execute on function public.audit_row_hash(text, bigint, smallint, timestamptz, text, uuid, text, text, text, text, jsonb, jsonb, text)
  to service_role;

-- read access --------------------------------------------------------------------------------
-- every signed-in user with any application role reads the fleet, jobs and their progress
do $$
declare
  t text;
begin
  foreach t in array array['sites', 'executors', 'servers', 'vcenters', 'clusters', 'esxi_hosts', 'vms',
                           'firmware_catalogs', 'firmware_packages', 'server_firmware', 'ome_instances',
                           'replication_pairs', 'safety_policies', 'maintenance_windows', 'jobs', 'job_tasks',
                           'workflow_executions', 'job_blockers', 'blocker_resolutions', 'cluster_safety_status']
  loop
    execute format('grant select on public.%I to authenticated', t);
    execute format('create policy %I on public.%I for select to authenticated using ((select public.has_role(''viewer'')))',
                   t || '_select_viewer', t);
  end loop;
end
$$;

-- operators and up: credential metadata and artifacts (SCP backups hold configuration)
grant select (id, site_id, name, kind, username, created_by, created_at, updated_at, endpoints)
  on public.credential_sets to authenticated;
create policy credential_sets_select_operator on public.credential_sets for select to authenticated
  using ((select public.has_role('operator')));
grant select on public.artifacts to authenticated;
create policy artifacts_select_operator on public.artifacts for select to authenticated
  using ((select public.has_role('operator')));

-- approvers and admins read the audit log; admins read notification config and outbox
grant select on public.audit_log to authenticated;
create policy audit_log_select_approver on public.audit_log for select to authenticated
  using ((select public.has_role('approver')));
grant select on public.notification_outbox to authenticated;
create policy notification_outbox_select_admin on public.notification_outbox for select to authenticated
  using ((select public.has_role('admin')));

-- user_roles: everyone sees their own row, admins see and manage all
grant select, insert, delete on public.user_roles to authenticated;
grant update (role) on public.user_roles to authenticated;
create policy user_roles_select_own on public.user_roles for select to authenticated
  using (user_id = (select auth.uid()) or (select public.has_role('admin')));
create policy user_roles_insert_admin on public.user_roles for insert to authenticated
  with check ((select public.has_role('admin')));
create policy user_roles_update_admin on public.user_roles for update to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));
create policy user_roles_delete_admin on public.user_roles for delete to authenticated
  using ((select public.has_role('admin')));

-- inventory writes ----------------------------------------------------------------------------
-- sites: admins only
grant insert, update, delete on public.sites to authenticated;
create policy sites_insert_admin on public.sites for insert to authenticated with check ((select public.has_role('admin')));
create policy sites_update_admin on public.sites for update to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));
create policy sites_delete_admin on public.sites for delete to authenticated using ((select public.has_role('admin')));

-- registered by operators, removed by admins
do $$
declare
  t text;
begin
  foreach t in array array['servers', 'vcenters', 'firmware_catalogs', 'ome_instances', 'replication_pairs'] loop
    execute format('grant insert, update, delete on public.%I to authenticated', t);
    execute format('create policy %I on public.%I for insert to authenticated with check ((select public.has_role(''operator'')))',
                   t || '_insert_operator', t);
    execute format('create policy %I on public.%I for update to authenticated using ((select public.has_role(''operator''))) '
                   'with check ((select public.has_role(''operator'')))', t || '_update_operator', t);
    execute format('create policy %I on public.%I for delete to authenticated using ((select public.has_role(''admin'')))',
                   t || '_delete_admin', t);
  end loop;
end
$$;

-- discovered by sync jobs (service role); admins may correct and remove
do $$
declare
  t text;
begin
  foreach t in array array['clusters', 'esxi_hosts', 'vms'] loop
    execute format('grant update, delete on public.%I to authenticated', t);
    execute format('create policy %I on public.%I for update to authenticated using ((select public.has_role(''admin''))) '
                   'with check ((select public.has_role(''admin'')))', t || '_update_admin', t);
    execute format('create policy %I on public.%I for delete to authenticated using ((select public.has_role(''admin'')))',
                   t || '_delete_admin', t);
  end loop;
  foreach t in array array['firmware_packages', 'server_firmware', 'artifacts'] loop
    execute format('grant delete on public.%I to authenticated', t);
    execute format('create policy %I on public.%I for delete to authenticated using ((select public.has_role(''admin'')))',
                   t || '_delete_admin', t);
  end loop;
end
$$;

-- executors register themselves (RPC); an admin may disable or remove one
grant update (status) on public.executors to authenticated;
grant delete on public.executors to authenticated;
create policy executors_update_admin on public.executors for update to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));
create policy executors_delete_admin on public.executors for delete to authenticated
  using ((select public.has_role('admin')));

-- credentials: operators store and rotate sealed credentials, admins remove them
grant insert (site_id, name, kind, username, endpoints) on public.credential_sets to authenticated;
grant update (name, username, endpoints) on public.credential_sets to authenticated;
grant delete on public.credential_sets to authenticated;
create policy credential_sets_insert_operator on public.credential_sets for insert to authenticated
  with check ((select public.has_role('operator')) and created_by is not distinct from (select auth.uid()));
create policy credential_sets_update_operator on public.credential_sets for update to authenticated
  using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));
create policy credential_sets_delete_admin on public.credential_sets for delete to authenticated
  using ((select public.has_role('admin')));

-- jobs and decisions ---------------------------------------------------------------------------
-- operators cancel, pause, resume or reschedule jobs (jobs_guard decides which changes are
-- legal); they create them only through create-job (functions_create_job,
-- 20261206110000_jobs_through_create_job.sql); nobody deletes job history
grant update (status, cancel_requested_at, pause_requested_at, priority, scheduled_for, maintenance_window_id)
  on public.jobs to authenticated;
create policy jobs_update_operator on public.jobs for update to authenticated
  using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));

grant insert (blocker_id, action, note) on public.blocker_resolutions to authenticated;
create policy blocker_resolutions_insert_operator on public.blocker_resolutions for insert to authenticated
  with check ((select public.has_role('operator')));

-- maintenance windows: operators request, approvers decide (maintenance_windows_guard and a
-- CHECK hold the four-eyes rule)
grant insert (site_id, cluster_id, title, reason, starts_at, ends_at) on public.maintenance_windows to authenticated;
grant update (title, reason, starts_at, ends_at, status, decision_note) on public.maintenance_windows to authenticated;
create policy maintenance_windows_insert_operator on public.maintenance_windows for insert to authenticated
  with check ((select public.has_role('operator')));
create policy maintenance_windows_update_operator on public.maintenance_windows for update to authenticated
  using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));

-- notification settings: admins only
grant select, insert, update, delete on public.notification_settings to authenticated;
create policy notification_settings_all_admin on public.notification_settings for all to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));

-- RPCs ----------------------------------------------------------------------------------------
grant execute on function public.register_executor(text, text, text, text, text, jsonb, public.job_type[]) to service_role;
grant execute on function public.heartbeat(uuid, jsonb) to service_role;
grant execute on function public.claim_jobs(uuid, integer) to service_role;
grant execute on function public.report_step(uuid, uuid, bigint, text, integer, text, public.step_status, boolean, jsonb, jsonb, text, uuid)
  to service_role;
grant execute on function public.update_task(uuid, uuid, bigint, public.task_target_kind, uuid, public.task_status, integer, jsonb, jsonb, text, text, integer)
  to service_role;
grant execute on function public.pause_job(uuid, uuid, bigint, public.pause_reason, jsonb, jsonb) to service_role;
grant execute on function public.finish_job(uuid, uuid, bigint, public.job_status, jsonb, text, jsonb) to service_role;
grant execute on function public.put_artifact(uuid, uuid, bigint, public.artifact_kind, text, text, text, uuid) to service_role;
grant execute on function public.recover_expired_leases() to service_role;
grant execute on function public.force_resume(uuid, text) to authenticated, service_role;
grant execute on function public.verify_audit_chain() to service_role;
-- credentials_in_site is no user's: it would answer "does this credential id exist in that
-- site" to any signed-in user (an existence oracle); jobs_guard reaches it only when credential
-- or site columns change, which users cannot do (20261206110000_jobs_through_create_job.sql)
grant execute on function public.credentials_in_site(uuid[], uuid) to service_role;
