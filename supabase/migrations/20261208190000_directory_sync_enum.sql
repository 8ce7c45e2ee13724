-- Enum value the directory-sync job (20261208190100) uses. ALTER TYPE ... ADD VALUE cannot
-- be used in the transaction that adds it, so the value comes first, alone.
--
--   job_type directory_sync   the site's executor binds with the site's sealed ldap
--                             credential set, reads the members of every mapped group and
--                             applies them (idm_apply_sync): roles set, lost roles taken
--                             away with the user's sessions and refresh tokens
alter type public.job_type add value if not exists 'directory_sync';
