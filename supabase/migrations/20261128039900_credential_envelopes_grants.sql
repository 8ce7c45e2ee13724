-- Access hardening for credential_envelopes (added after the core access migration).
--
-- A table created in public inherits the platform's default privileges (ALL to anon and
-- authenticated), and column GRANTs only add to that: without this revoke every user role,
-- anon included, could read credential_envelopes.sealed_secret. Start from nothing and
-- grant exactly the columns policies/access.yaml allows; RLS still decides which rows.
revoke all on public.credential_envelopes from anon, authenticated;
grant select (credential_set_id, executor_id, key_id, created_at) on public.credential_envelopes to authenticated;
grant insert (credential_set_id, executor_id, key_id, sealed_secret) on public.credential_envelopes to authenticated;
grant delete on public.credential_envelopes to authenticated;
