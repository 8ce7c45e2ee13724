-- rackpilot identity: directory groups map to roles through policies/identity.yaml.
--
-- The declared default mapping per directory preset (openldap, freeipa, ad) is
-- policies/identity.yaml; idm_default_group_roles below holds its rows (generated: python -m
-- devstack.identity_policy sql; tests/unit/test_identity_policy.py fails when the file and
-- the newest migration defining the function differ). A site's live mapping stays the
-- directory_group_roles table (per site, admins only, every change audited with its actor):
-- idm_seed_group_roles fills it from the preset's defaults for the site's suffix, adding the
-- groups the site does not map yet and leaving every row an admin already set. Sign-in
-- (idm_role_for_groups) and the sync (idm_mapped_groups, idm_apply_sync) read the table.

-- the defaults, one row per (preset, group), in the file's order
create or replace function public.idm_default_group_roles()
returns table (preset text, group_dn_template text, role public.app_role, ord integer)
language sql
stable
set search_path = ''
as $$
  select d.preset, d.template, d.role::public.app_role, d.ord
    from (values
      ('openldap', 'cn=rackpilot-admins,ou=groups,{suffix}', 'admin', 1),
      ('openldap', 'cn=rackpilot-approvers,ou=groups,{suffix}', 'approver', 2),
      ('openldap', 'cn=rackpilot-operators,ou=groups,{suffix}', 'operator', 3),
      ('openldap', 'cn=rackpilot-viewers,ou=groups,{suffix}', 'viewer', 4),
      ('freeipa', 'cn=rackpilot-admins,cn=groups,cn=accounts,{suffix}', 'admin', 5),
      ('freeipa', 'cn=rackpilot-approvers,cn=groups,cn=accounts,{suffix}', 'approver', 6),
      ('freeipa', 'cn=rackpilot-operators,cn=groups,cn=accounts,{suffix}', 'operator', 7),
      ('freeipa', 'cn=rackpilot-viewers,cn=groups,cn=accounts,{suffix}', 'viewer', 8),
      ('ad', 'CN=RackpilotAdmins,CN=Users,{suffix}', 'admin', 9),
      ('ad', 'CN=RackpilotApprovers,CN=Users,{suffix}', 'approver', 10),
      ('ad', 'CN=RackpilotOperators,CN=Users,{suffix}', 'operator', 11),
      ('ad', 'CN=RackpilotViewers,CN=Users,{suffix}', 'viewer', 12)
         ) d (preset, template, role, ord)
$$;
revoke execute on function public.idm_default_group_roles() from public, anon, authenticated;
comment on function public.idm_default_group_roles() is
  'The default directory group -> role mapping of each directory preset (policies/identity.yaml); {suffix} is the directory''s naming context.';

-- An admin (or the service role, bootstrapping a site before it has an admin) fills a site's
-- mapping from a preset's defaults. Rows the site already has for those groups are kept as
-- they are (an admin's choice wins over the default); the rows added are answered. The
-- inserts are audited by directory_group_roles' own triggers, with the caller as actor.
create function public.idm_seed_group_roles(p_site_id uuid, p_preset text, p_suffix text)
returns setof public.directory_group_roles
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_suffix text := btrim(coalesce(p_suffix, ''));
begin
  if not public.has_role('admin') and coalesce(auth.role(), '') <> 'service_role' then
    raise exception using errcode = '42501', message = 'forbidden: the directory group mapping is for admins';
  end if;
  if not exists (select 1 from public.idm_default_group_roles() d where d.preset = p_preset) then
    raise exception using errcode = '22023',
      message = 'invalid_argument: unknown directory preset; one of ' ||
                (select string_agg(distinct d.preset, ', ') from public.idm_default_group_roles() d);
  end if;
  if length(v_suffix) > 512 or v_suffix !~ '^[A-Za-z][A-Za-z0-9-]*=[^=,]+(,\s*[A-Za-z][A-Za-z0-9-]*=[^=,]+)*$' then
    raise exception using errcode = '22023',
      message = 'invalid_argument: the suffix must be the directory''s naming context, a DN such as dc=example,dc=org';
  end if;
  if not exists (select 1 from public.directory_configs c where c.site_id = p_site_id) then
    raise exception using errcode = 'P0001',
      message = 'not_configured: the site has no directory settings yet; save them first, then the group mapping';
  end if;
  perform set_config('rackpilot.audit_note', 'default group mapping of preset ' || p_preset, true);
  return query
    insert into public.directory_group_roles as m (site_id, group_dn, role)
    select p_site_id, replace(d.group_dn_template, '{suffix}', v_suffix), d.role
      from public.idm_default_group_roles() d
     where d.preset = p_preset
     order by d.ord
    on conflict on constraint directory_group_roles_site_group_key do nothing
    returning m.*;
end
$$;
revoke execute on function public.idm_seed_group_roles(uuid, text, text) from public, anon;
grant execute on function public.idm_seed_group_roles(uuid, text, text) to authenticated, service_role;
