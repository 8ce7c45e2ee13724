-- rackpilot edge functions, part 2: sealed credentials for sites with several executors.
--
-- encrypt-credentials seals a secret once per active executor key of the site (the
-- envelope format is documented in executor/secrets.py). The envelopes are the only copy
-- of the secret: credential_sets holds its name, kind, username and endpoints, and
-- credential_envelopes one envelope per key, so every executor of the site can open the
-- credential and get_job_credential_envelope returns the one sealed to the asking
-- executor's key. No user role may read the ciphertext column.
--
-- Re-sealing after a key rotation is done by an operator re-entering the secret
-- (encrypt-credentials action "reseal"): the control plane never holds the plaintext or a
-- key that opens it, and an executor-side re-wrap would need the retired private key to
-- outlive its rotation, which a rotation after a suspected compromise must not allow.

create table public.credential_envelopes (
  credential_set_id uuid not null references public.credential_sets (id) on delete cascade,
  executor_id       uuid references public.executors (id) on delete cascade,
  key_id            text not null constraint credential_envelopes_key_id_check check (length(key_id) between 1 and 128),
  sealed_secret     text not null constraint credential_envelopes_sealed_secret_check check (length(sealed_secret) between 16 and 65536),
  created_at        timestamptz not null default now(),
  primary key (credential_set_id, key_id)
);
comment on table public.credential_envelopes is
  'One sealed envelope of a credential set per executor key of its site (written by encrypt-credentials).';

alter table public.credential_envelopes enable row level security;
-- A table created in public inherits the platform's default privileges (ALL to anon and
-- authenticated), and column GRANTs only add to that: start from nothing and grant exactly
-- the columns policies/access.yaml allows (the ciphertext is never readable); RLS decides
-- which rows.
revoke all on public.credential_envelopes from anon, authenticated;
grant select (credential_set_id, executor_id, key_id, created_at) on public.credential_envelopes to authenticated;
grant insert (credential_set_id, executor_id, key_id, sealed_secret) on public.credential_envelopes to authenticated;
grant delete on public.credential_envelopes to authenticated;
create policy credential_envelopes_select_operator on public.credential_envelopes for select to authenticated
  using ((select public.has_role('operator')));
create policy credential_envelopes_insert_admin on public.credential_envelopes for insert to authenticated
  with check ((select public.has_role('admin')));
create policy credential_envelopes_delete_admin on public.credential_envelopes for delete to authenticated
  using ((select public.has_role('admin')));

create trigger audit_credential_envelopes_insert after insert on public.credential_envelopes
  referencing new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_credential_envelopes_delete after delete on public.credential_envelopes
  referencing old table as old_rows for each statement execute function public.audit_changes();

-- The executor's view: the envelope of a credential set sealed to its own key, for a job it
-- holds under the current epoch and that references the set. A set with no envelope for
-- the key is refused as key_mismatch (re-seal it: encrypt-credentials "reseal").
create function public.get_job_credential_envelope(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_credential_set_id uuid
)
returns table (credential_set_id uuid, kind public.credential_kind, username text, key_id text, sealed_secret text)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_job  public.jobs%rowtype;
  v_exec public.executors%rowtype;
  v_cred public.credential_sets%rowtype;
  v_env  public.credential_envelopes%rowtype;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  v_exec := public.executor_row(p_executor_id);
  if p_credential_set_id is null or not p_credential_set_id = any (v_job.credential_set_ids) then
    raise exception using errcode = '42501',
      message = format('not_referenced: job %s does not reference credential set %s', p_job_id, p_credential_set_id);
  end if;
  select * into v_cred from public.credential_sets c where c.id = p_credential_set_id and c.site_id = v_job.site_id;
  if not found then
    raise exception using errcode = '42501',
      message = format('not_referenced: credential set %s is not in the job''s site', p_credential_set_id);
  end if;
  select * into v_env from public.credential_envelopes e
   where e.credential_set_id = p_credential_set_id and e.key_id = v_exec.key_id;
  if not found then
    raise exception using errcode = 'P0001',
      message = format('key_mismatch: credential set %s has no envelope for key %s; re-seal it',
                       p_credential_set_id, v_exec.key_id);
  end if;
  return query select v_cred.id, v_cred.kind, v_cred.username, v_env.key_id, v_env.sealed_secret;
end
$$;
revoke execute on function public.get_job_credential_envelope(uuid, uuid, bigint, uuid) from public, anon, authenticated;
grant execute on function public.get_job_credential_envelope(uuid, uuid, bigint, uuid) to service_role;
