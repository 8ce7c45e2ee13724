-- rackpilot control plane: an executor's identity is bound to its key.
--
-- Before this migration a registration with a new key for a known (site, name) silently
-- replaced the registered key: a rebuilt host (or a wiped state folder) took over the
-- identity, and every job on the healthy original then failed with key_mismatch.
--
-- Now:
-- * The first registration binds (site, name) to its public key. A later registration with
--   another key is refused (SQLSTATE P0001, 'identity_bound: ...', with the way out in the
--   hint): the executor exits 2 and systemd does not restart it.
-- * The way out is an admin's re-key: rekey_executor(executor, key_id, reason) lets the next
--   registration with that key id (or with any new key, when key_id is null) take the
--   identity over. It is audited (executors.update with the reason as note; the key swap is
--   audited again when the new key registers), and it answers with the credential sets that
--   must be re-sealed for the new key.
-- * The replaced process learns it at its next call: every executor RPC goes through
--   executor_row(), which now compares the key id the process sends in its
--   X-Rackpilot-Key-Id request header (PostgREST exposes request headers as
--   request.headers) with the bound key, and refuses a stale one with
--   'executor_replaced: ...'. The executor then stops claiming, says why and exits 2.
--   Callers that send no such header (SQL tests, tools) are not checked.
-- register_executor and executor_row themselves are in 20261128010300_executor_rpcs.sql,
-- the key columns (rekey_*, previous_key_id, rekeyed_at) in the executors table
-- (20261128010100_inventory.sql); this file holds the admin's side, rekey_executor.

-- An admin lets a new key take an executor's identity over (a rebuilt host, a lost state
-- folder, a suspected key compromise). p_key_id: the key id the new process printed (its
-- refusal names it; `python -m executor --show-public-key` prints it on the new host); null
-- accepts whichever new key registers first. Returns what changes, and which credential
-- sets the new key cannot open until an admin re-seals them.
create function public.rekey_executor(p_executor_id uuid, p_key_id text default null, p_reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_exec public.executors%rowtype;
  v_site_name text;
  v_reseal jsonb;
begin
  if auth.uid() is not null then
    if not public.has_role('admin') then
      raise exception using errcode = '42501', message = 'forbidden: re-keying an executor is for admins';
    end if;
  elsif coalesce(auth.role(), '') <> 'service_role' and session_user <> 'postgres' then
    raise exception using errcode = '42501', message = 'forbidden: re-keying an executor is for admins';
  end if;
  if p_executor_id is null or coalesce(btrim(p_reason), '') = '' then
    raise exception using errcode = '22023', message = 'invalid_argument: an executor id and a reason are required';
  end if;
  if p_key_id is not null and (length(p_key_id) not between 1 and 128) then
    raise exception using errcode = '22023', message = 'invalid_argument: key id must be 1..128 characters';
  end if;
  select * into v_exec from public.executors e where e.id = p_executor_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = format('unknown_executor: no executor %s', p_executor_id);
  end if;
  if p_key_id = v_exec.key_id then
    raise exception using errcode = '22023',
      message = format('invalid_argument: executor %s is already bound to key %s', v_exec.name, p_key_id);
  end if;
  select s.name into v_site_name from public.sites s where s.id = v_exec.site_id;
  perform set_config('rackpilot.audit_note', 'rekey requested: ' || p_reason, true);
  update public.executors e
     set rekey_requested_at = now(), rekey_key_id = p_key_id, rekey_requested_by = auth.uid()
   where e.id = p_executor_id;

  -- the site's credential sets the new key has no envelope for
  select coalesce(jsonb_agg(jsonb_build_object('id', c.id, 'name', c.name, 'kind', c.kind) order by c.name), '[]')
    into v_reseal
    from public.credential_sets c
   where c.site_id = v_exec.site_id
     and (p_key_id is null
          or not exists (select 1 from public.credential_envelopes e
                          where e.credential_set_id = c.id and e.key_id = p_key_id));

  return jsonb_build_object(
    'executor_id', v_exec.id, 'site', v_site_name, 'name', v_exec.name,
    'current_key_id', v_exec.key_id, 'accepts_key_id', p_key_id,
    'reseal', v_reseal,
    'credentials', case when jsonb_array_length(v_reseal) = 0 then
        'every credential set of the site already has an envelope for the new key'
      else
        'the credential sets in "reseal" are sealed to the current key only. They stay usable while the '
        'current key holds the identity; once the new key registers they are not: the old process stops, '
        'and jobs that need them fail with key_mismatch until an admin re-seals them (encrypt-credentials '
        'reseal, or rackpilot credentials seal --reseal)'
      end,
    'next', format('start (or restart) the executor holding %s; it takes the identity over at registration, '
                   'and a process still holding %s stops claiming at its next call',
                   coalesce(p_key_id, 'the new key'), v_exec.key_id));
end
$$;
revoke execute on function public.rekey_executor(uuid, text, text) from public, anon;
grant execute on function public.rekey_executor(uuid, text, text) to authenticated, service_role;
comment on function public.rekey_executor(uuid, text, text) is
  'Admin: let a new key take an executor identity over at its next registration (audited); lists the credential '
  'sets to re-seal.';
