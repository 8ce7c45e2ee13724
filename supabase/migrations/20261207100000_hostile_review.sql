-- rackpilot: two holes found by the hostile review (tests/integration/test_hostile_review.py).
--
-- 1. An operator could PATCH a credential set's username (column grants for the operators'
--    "update credential_sets" cell) and, then, its envelope. The envelope is the secret
--    *and* the endpoint list its sealer chose: replacing it swaps an admin's credential for
--    one the operator sealed (any public key holder can seal), with the operator's endpoint
--    list, while credential_sets.endpoints still shows the admin's. Sealing is an admin
--    action (encrypt-credentials seal/reseal, access.yaml functions; credential_envelopes
--    takes inserts and deletes from admins only); username is a binding column like
--    endpoints: only an admin changes it in a user session. Operators still insert sets
--    and rename them.
-- 2. replication_runs (20261206160000) kept the platform's default privileges: anon and
--    authenticated held INSERT, UPDATE, TRUNCATE, TRIGGER and REFERENCES on it (RLS does
--    not apply to TRUNCATE), and every later table's bigserial sequence stayed usable by
--    both. Back to what access.yaml says: select and delete for signed-in users, RLS decides.

drop trigger if exists credential_sets_guard_binding on public.credential_sets;
create trigger credential_sets_guard_binding before insert or update on public.credential_sets
  for each row execute function public.guard_target_binding('endpoints', 'username');

revoke all on public.replication_runs from anon, authenticated;
grant select, delete on public.replication_runs to authenticated;
revoke all on all sequences in schema public from anon, authenticated;
