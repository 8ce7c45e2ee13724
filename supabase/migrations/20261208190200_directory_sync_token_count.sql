-- The directory sync counts the refresh tokens it revokes (issue 17: a directory_sync job's
-- result records users seen, roles changed and tokens revoked). idm_apply_sync ends a user's
-- sessions (idm_revoke_sessions), and their refresh tokens go with them; it now also counts
-- the tokens that were still usable (not yet revoked or rotated away) as
-- refresh_tokens_revoked, in its answer and its idm.sync audit entry. Nothing else changes.

-- the user's refresh tokens still usable: those of their sessions, not revoked
create function public.idm_live_refresh_tokens(p_user_id uuid)
returns integer
language sql
stable
security definer
set search_path = ''
as $$
  select count(*)::integer
    from auth.refresh_tokens rt
   where rt.session_id in (select s.id from auth.sessions s where s.user_id = p_user_id)
     and not coalesce(rt.revoked, false)
$$;
revoke execute on function public.idm_live_refresh_tokens(uuid) from public, anon, authenticated, service_role;

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
  v_tokens integer := 0;
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
      v_tokens := v_tokens + public.idm_live_refresh_tokens(r.user_id);
      v_revoked := v_revoked + public.idm_revoke_sessions(r.user_id);
    elsif r.old_role is distinct from v_new then
      insert into public.user_roles as ur (user_id, role, source) values (r.user_id, v_new, 'directory')
      on conflict (user_id) do update set role = excluded.role;
      v_changed := v_changed + 1;
      if r.old_role is not null and v_new < r.old_role then
        v_tokens := v_tokens + public.idm_live_refresh_tokens(r.user_id);
        v_revoked := v_revoked + public.idm_revoke_sessions(r.user_id);
      end if;
    end if;
  end loop;
  perform public.idm_audit('idm.sync', 'directory_identities', v_exec.site_id::text,
                           jsonb_build_object('site_id', v_exec.site_id, 'members', (select count(*) from jsonb_object_keys(v_members)),
                                              'users', v_users, 'changed', v_changed, 'removed', v_removed,
                                              'sessions_revoked', v_revoked, 'refresh_tokens_revoked', v_tokens), null);
  return jsonb_build_object('users', v_users, 'changed', v_changed, 'removed', v_removed, 'sessions_revoked', v_revoked,
                            'refresh_tokens_revoked', v_tokens);
end
$$;

revoke execute on function public.idm_apply_sync(uuid, jsonb) from public, anon, authenticated;
grant execute on function public.idm_apply_sync(uuid, jsonb) to service_role;
