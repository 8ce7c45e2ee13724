-- rackpilot identity: the directory group -> role mapping is a table of its own, and the
-- directory's account-disabled rule is a per-site setting.
--
-- 1. directory_group_roles replaces directory_configs.group_roles (a jsonb list checked
--    against a second spelling of the roles). One row per (site, group DN); the role column
--    is public.app_role, the one declaration of the roles. Admins manage it under RLS, every
--    change is audited (audit_changes), and the sign-in (idm_role_for_groups), the executor's
--    sync (idm_mapped_groups, idm_apply_sync) read it. Rows already in group_roles move over.
-- 2. idm_apply_sync takes what the directory says, not what the executor concluded: a map of
--    member DN -> the mapped group DNs it is in (nested followed); the role is worked out here
--    from this table, so the executor holds no copy of the mapping or of the role ladder.
-- 3. directory_configs.disabled_filter: an LDAP filter matching a disabled account of this
--    directory (FreeIPA nsAccountLock, AD userAccountControl bit 2, OpenLDAP's permanent
--    ppolicy lock). The direct path refuses such an account at sign-in (account_disabled)
--    even where the server still lets it bind. The executor path and the sync use the
--    executor's own RACKPILOT_IDM_DISABLED_FILTER (docs/identity.md).

create table public.directory_group_roles (
  id         uuid primary key default extensions.gen_random_uuid(),
  site_id    uuid not null references public.directory_configs (site_id) on delete cascade,
  group_dn   text not null check (length(group_dn) between 3 and 1024 and group_dn ~ '^[^=,]+=[^=]'),
  group_key  text not null,  -- idm_norm_dn(group_dn), set by the trigger below
  role       public.app_role not null,
  created_by uuid references auth.users (id) on delete set null default auth.uid(),
  created_at timestamptz not null default now(),
  constraint directory_group_roles_site_group_key unique (site_id, group_key)
);
comment on table public.directory_group_roles is
  'Directory group (DN) -> rackpilot role, per site. The highest role of a user''s groups wins; a user in none is refused.';

-- the normalised DN, kept by a trigger (a generated column would need the API roles to
-- execute idm_norm_dn, which is no RPC of theirs)
create function public.directory_group_roles_key()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  new.group_key := public.idm_norm_dn(new.group_dn);
  return new;
end
$$;
revoke execute on function public.directory_group_roles_key() from public, anon, authenticated;
create trigger directory_group_roles_key before insert or update on public.directory_group_roles
  for each row execute function public.directory_group_roles_key();

insert into public.directory_group_roles (site_id, group_dn, role)
select c.site_id, e ->> 'group', (e ->> 'role')::public.app_role
  from public.directory_configs c cross join lateral jsonb_array_elements(c.group_roles) e
on conflict on constraint directory_group_roles_site_group_key do update
   set role = greatest(public.directory_group_roles.role, excluded.role);

alter table public.directory_configs drop column group_roles;
drop function public.idm_valid_group_roles(jsonb);

alter table public.directory_configs
  add column disabled_filter text check (disabled_filter is null
                                         or (length(disabled_filter) between 3 and 1024
                                             and disabled_filter ~ '^\(.*\)$'));
comment on column public.directory_configs.disabled_filter is
  'LDAP filter matching a disabled account (e.g. (nsAccountLock=TRUE)); such an account is refused at a direct sign-in.';
grant update (disabled_filter) on public.directory_configs to authenticated;

create or replace function public.directory_configs_validate()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not public.idm_valid_uris(new.uris) then
    raise exception using errcode = '23514',
      message = 'invalid_argument: uris must be at most 8 ldaps:// or ldap:// URLs (host and port only)';
  end if;
  return new;
end
$$;

-- privileges: nothing from the platform's defaults, then admins under RLS -------------------
revoke all on public.directory_group_roles from anon, authenticated;
alter table public.directory_group_roles enable row level security;
grant select, delete on public.directory_group_roles to authenticated;
-- update of every writable column: an upsert on (site_id, group_key) sets them all
grant insert (site_id, group_dn, role), update (site_id, group_dn, role) on public.directory_group_roles to authenticated;
create policy directory_group_roles_select_admin on public.directory_group_roles for select to authenticated
  using ((select public.has_role('admin')));
create policy directory_group_roles_insert_admin on public.directory_group_roles for insert to authenticated
  with check ((select public.has_role('admin')));
create policy directory_group_roles_update_admin on public.directory_group_roles for update to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));
create policy directory_group_roles_delete_admin on public.directory_group_roles for delete to authenticated
  using ((select public.has_role('admin')));

create trigger audit_directory_group_roles_insert after insert on public.directory_group_roles
  referencing new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_directory_group_roles_update after update on public.directory_group_roles
  referencing old table as old_rows new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_directory_group_roles_delete after delete on public.directory_group_roles
  referencing old table as old_rows for each statement execute function public.audit_changes();

-- readers ------------------------------------------------------------------------------------
create or replace function public.idm_role_for_groups(p_site_id uuid, p_groups text[])
returns public.app_role
language sql
stable
security definer
set search_path = ''
as $$
  select max(m.role)
    from public.directory_group_roles m
    join public.directory_configs c on c.site_id = m.site_id and c.enabled
   where m.site_id = p_site_id
     and m.group_key = any (select public.idm_norm_dn(g) from unnest(p_groups) g)
$$;

create or replace function public.idm_mapped_groups(p_site_id uuid)
returns table (group_dn text, role public.app_role)
language sql
stable
security definer
set search_path = ''
as $$
  select m.group_dn, m.role
    from public.directory_group_roles m
    join public.directory_configs c on c.site_id = m.site_id and c.enabled
   where m.site_id = p_site_id
   order by m.group_key
$$;

-- The sync's result: p_members maps each member DN the executor found in the mapped groups
-- (nested followed, disabled accounts left out) to the mapped group DNs it is in. Every
-- directory identity of the site gets the highest role of those groups; one who is in none
-- loses their role, and one whose role went down or away loses their sessions (refresh
-- tokens) too. All or nothing: the executor sends a complete map or none.
create or replace function public.idm_apply_sync(p_executor_id uuid, p_members jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_exec public.executors%rowtype;
  v_members jsonb := '{}'::jsonb;
  r record;
  v_new public.app_role;
  v_changed integer := 0;
  v_removed integer := 0;
  v_revoked integer := 0;
  v_users integer := 0;
begin
  v_exec := public.executor_row(p_executor_id);
  if jsonb_typeof(p_members) <> 'object'
     or exists (select 1 from jsonb_each(p_members) m
                 where jsonb_typeof(m.value) <> 'array'
                    or exists (select 1 from jsonb_array_elements(m.value) g where jsonb_typeof(g) <> 'string')) then
    raise exception using errcode = '22023',
      message = 'invalid_argument: members must be an object of member DN -> [group DN, ...]';
  end if;
  if not exists (select 1 from public.directory_configs c where c.site_id = v_exec.site_id and c.enabled) then
    raise exception using errcode = 'P0001', message = 'not_configured: this site has no directory configuration';
  end if;
  -- member -> role, from this site's mapping (groups it does not map are ignored)
  select coalesce(jsonb_object_agg(k, to_jsonb(role)), '{}'::jsonb) into v_members
    from (select public.idm_norm_dn(m.key) as k,
                 public.idm_role_for_groups(v_exec.site_id, array(select jsonb_array_elements_text(m.value))) as role
            from jsonb_each(p_members) m) x
   where role is not null;
  perform set_config('rackpilot.audit_note', 'directory sync', true);
  for r in select d.user_id, d.subject, d.username, ur.role as old_role, ur.source
             from public.directory_identities d
             left join public.user_roles ur on ur.user_id = d.user_id
            where d.site_id = v_exec.site_id
            for update of d
  loop
    v_users := v_users + 1;
    v_new := (v_members ->> r.subject)::public.app_role;
    update public.directory_identities d set last_synced_at = now() where d.user_id = r.user_id;
    if r.source = 'manual' then
      continue;  -- an admin's grant is not the directory's to change
    end if;
    if v_new is null then
      if r.old_role is not null then
        delete from public.user_roles ur where ur.user_id = r.user_id and ur.source = 'directory';
        v_removed := v_removed + 1;
      end if;
      v_revoked := v_revoked + public.idm_revoke_sessions(r.user_id);
    elsif r.old_role is distinct from v_new then
      insert into public.user_roles as ur (user_id, role, source) values (r.user_id, v_new, 'directory')
      on conflict (user_id) do update set role = excluded.role;
      v_changed := v_changed + 1;
      if r.old_role is not null and v_new < r.old_role then
        v_revoked := v_revoked + public.idm_revoke_sessions(r.user_id);
      end if;
    end if;
  end loop;
  perform public.idm_audit('idm.sync', 'directory_identities', v_exec.site_id::text,
                           jsonb_build_object('site_id', v_exec.site_id, 'members', (select count(*) from jsonb_object_keys(v_members)),
                                              'users', v_users, 'changed', v_changed, 'removed', v_removed,
                                              'sessions_revoked', v_revoked), null);
  return jsonb_build_object('users', v_users, 'changed', v_changed, 'removed', v_removed, 'sessions_revoked', v_revoked);
end
$$;

revoke execute on function public.idm_role_for_groups(uuid, text[]), public.idm_mapped_groups(uuid),
  public.idm_apply_sync(uuid, jsonb)
  from public, anon, authenticated;
grant execute on function public.idm_mapped_groups(uuid), public.idm_apply_sync(uuid, jsonb) to service_role;
