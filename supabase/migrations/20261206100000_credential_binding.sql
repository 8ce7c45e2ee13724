-- rackpilot control plane: a secret goes only where its sealer said.
--
-- The enforcement is the executor's: every sealed credential names, inside its
-- authenticated envelope, the endpoints (scheme, host, port, TLS trust) it may be presented
-- to, and the executor refuses any other before it connects (executor/binding.py,
-- docs/security.md). This migration adds the database's half, defence in depth:
--
-- 1. How a target is reached and which credential it uses is an admin's decision. In a
--    user's session (REST, edge functions acting as the caller) only an admin may change
--    a target's address, TLS trust or credential binding, and only an admin may register
--    a target already bound to a credential; operators still register targets without a
--    credential and edit everything else. policies/access.yaml lists the columns
--    (`bindings`), tests/integration/test_access_matrix.py holds the database to it. The
--    service role (executor inventory sync) is not a user session and is not limited here:
--    a compromised control plane is what the envelope check is for.
-- 2. credential_sets.endpoints (20261128010100_inventory.sql): a readable copy of the
--    endpoints sealed in the envelope, written by encrypt-credentials for the pre-flight and
--    the admin screens. Display only: the executor never reads it, and only admins may write
--    it. So is the set's username: anyone can seal to an executor's public key, so an
--    operator who could change what an envelope was sealed for would swap an admin's
--    credential for one of their own (tests/integration/test_hostile_review.py); the
--    envelopes themselves (credential_envelopes) take inserts and deletes from admins only.

create function public.guard_target_binding()
returns trigger
language plpgsql
as $$
declare
  v_new jsonb := to_jsonb(new);
  v_old jsonb := case when tg_op = 'UPDATE' then to_jsonb(old) else null end;
  v_cols text[] := tg_argv;
  v_col text;
  v_path text[];
begin
  if not public.is_user_context() or public.has_role('admin') then
    return new;
  end if;
  foreach v_col in array v_cols loop
    v_path := string_to_array(v_col, '.');
    if tg_op = 'INSERT' then
      -- a target may be registered by an operator, but bound to a credential only by an admin
      if v_col in ('credential_set_id', 'endpoints')
         and coalesce(v_new #> v_path, 'null'::jsonb) not in ('null'::jsonb, '[]'::jsonb) then
        raise exception 'only an admin may bind a credential: %.% must be left empty', tg_table_name, v_col
          using errcode = '42501',
                hint = 'register the target without a credential; an admin binds it (and seals the credential naming its endpoints)';
      end if;
    elsif (v_new #> v_path) is distinct from (v_old #> v_path) then
      raise exception 'only an admin may change how a target is reached or which credential it uses (%.%)',
                      tg_table_name, v_col
        using errcode = '42501',
              hint = 'ask an admin; a changed address or TLS trust also needs the credential resealed naming it';
    end if;
  end loop;
  return new;
end
$$;
comment on function public.guard_target_binding() is
  'BEFORE INSERT/UPDATE: in a user session, non-admins may not change the binding columns given as trigger '
  'arguments (dotted paths into jsonb, e.g. details.tls), nor insert a row already bound to a credential.';
grant execute on function public.guard_target_binding() to authenticated, service_role;

create trigger servers_guard_binding before insert or update on public.servers
  for each row execute function public.guard_target_binding('idrac_address', 'credential_set_id', 'details.tls');
create trigger vcenters_guard_binding before insert or update on public.vcenters
  for each row execute function public.guard_target_binding('address', 'credential_set_id', 'details.tls');
create trigger ome_instances_guard_binding before insert or update on public.ome_instances
  for each row execute function public.guard_target_binding('address', 'credential_set_id', 'details.tls');
create trigger esxi_hosts_guard_binding before insert or update on public.esxi_hosts
  for each row execute function public.guard_target_binding('details.ssh');
create trigger replication_pairs_guard_binding before insert or update on public.replication_pairs
  for each row execute function public.guard_target_binding('source_host', 'target_host', 'credential_set_id');
create trigger credential_sets_guard_binding before insert or update on public.credential_sets
  for each row execute function public.guard_target_binding('endpoints', 'username');
