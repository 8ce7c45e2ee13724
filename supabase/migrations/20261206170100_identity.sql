-- rackpilot identity, part 2: directory (IDM/LDAP) sign-in, directory-driven roles and
-- break-glass access. docs/identity.md tells the whole story; in short:
--
-- * directory_configs (admins): per site, where the directory bind happens - 'direct' (the
--   idm-login edge function binds itself; the connection settings are here) or 'executor'
--   (the site's executor binds; the connection settings are the executor's own, so nobody
--   who can write this table can redirect a password) - with the attribute names and the
--   disabled-account filter of the directory; directory_group_roles (admins): its group ->
--   role mapping.
-- * idm_login_requests: the executor path's mailbox. A row holds only a challenge, an
--   envelope sealed to one executor's key ({username, password, challenge}) and the
--   function's ephemeral X25519 public key; the executor answers with the bind result and
--   a MAC keyed by X25519(executor key, function key), which only that executor (or the
--   function instance waiting for it) can compute. No API role holds any privilege on the
--   table; the service role reaches it only through the RPCs below. A request is answered
--   at most once, consumed at most once and refused after its expiry.
-- * directory_identities: which auth user a directory entry (its DN) signs in as, and the
--   site it last signed in through (whose mapping gave its role, and whose sync keeps it).
--   One entry is one user whichever site it comes through: sites usually share a directory.
-- * user_roles.source: 'directory' rows are set at every directory sign-in and by the
--   executor's sync (idm_apply_sync), which also revokes the sessions of a user who lost a
--   role; 'manual' rows are what admins and `rackpilot dev user add` write.
-- * breakglass_accounts / breakglass_sessions: emergency accounts (scrypt hash of a long
--   random secret; the plaintext never reaches the database) whose sessions carry a role only
--   while their grant is live (current_app_role() below), are time-boxed (auth.sessions
--   .not_after), audited as critical, notified on every channel, listed and revoked by admins.
--   A break-glass account never holds a user_roles row of its own.
-- * Limits for the anon-key entry points, per client address (the last X-Forwarded-For hop,
--   which the platform's proxy appends and a caller cannot replace): idm-login "begin"
--   (identity_policy.begin_per_client_per_min; only submitted requests count against the
--   site's max_open_requests, so nobody can fill it with requests never completed); failed
--   directory sign-ins per site (idm_sign_in_failures: a credential failure on either path -
--   invalid_credentials, account_locked, account_disabled, user_not_found - counts in a
--   one-minute window, then 429 rate_limited before any bind; each is audited as
--   idm.sign_in_failed, never with a password); failed break-glass attempts per (name,
--   client) (breakglass_lockouts: the lockout holds for the guessing client only, so nobody
--   can keep an account locked during the outage it exists for, and a lockout says nothing
--   about whether the name exists) and per client over all names
--   (breakglass_failures_per_client: refused before any scrypt is computed, audited as
--   breakglass.rate_limited).

-- normalised DN: lower case, no blanks around separators (directory DNs compare case-insensitively)
create function public.idm_norm_dn(p_dn text)
returns text
language sql
immutable
as $$
  select lower(btrim(regexp_replace(p_dn, '\s*([,=+])\s*', '\1', 'g')))
$$;

create function public.idm_valid_uris(p text[])
returns boolean
language sql
immutable
as $$
  select cardinality(p) <= 8
     and not exists (select 1 from unnest(p) u where u !~ '^ldaps?://[A-Za-z0-9.:\[\]_-]+(:[0-9]{1,5})?/?$')
$$;

-- directory configuration, per site --------------------------------------------------------
create table public.directory_configs (
  site_id            uuid primary key references public.sites (id) on delete cascade,
  mode               text not null constraint directory_configs_mode_check check (mode in ('direct', 'executor')),
  enabled            boolean not null default true,
  -- direct mode: the function connects to these, in order (failover); ldaps:// or
  -- ldap:// with starttls (a plain bind is refused)
  uris               text[] not null default '{}',
  starttls           boolean not null default false,
  ca_pem             text constraint directory_configs_ca_pem_check check (ca_pem is null or ca_pem like '-----BEGIN CERTIFICATE-----%'),
  -- the bind DN of a user ({username} escaped per RFC 4514), e.g. uid={username},ou=people,dc=example,dc=org,
  -- or a UPN template for Active Directory ({username}@example.org)
  bind_dn_template   text constraint directory_configs_bind_dn_template_check check (bind_dn_template is null or position('{username}' in bind_dn_template) > 0),
  base_dn            text not null default '' constraint directory_configs_base_dn_check check (length(base_dn) <= 1024),
  -- the user's entry, searched as the user after the bind ({username} escaped per RFC 4515)
  user_filter        text not null default '(&(objectClass=inetOrgPerson)(uid={username}))'
                     constraint directory_configs_user_filter_check check (position('{username}' in user_filter) > 0 and length(user_filter) <= 1024),
  group_base_dn      text constraint directory_configs_group_base_dn_check check (length(group_base_dn) <= 1024),
  -- memberof: the entry's memberOf (FreeIPA, OpenLDAP with dynlist); search: member= loop
  -- (nested groupOfNames); ad: member:1.2.840.113556.1.4.1941: (Active Directory's chain rule)
  nesting            text not null default 'search' constraint directory_configs_nesting_check check (nesting in ('memberof', 'search', 'ad')),
  connect_timeout_ms integer not null default 3000 constraint directory_configs_connect_timeout_ms_check check (connect_timeout_ms between 100 and 60000),
  op_timeout_ms      integer not null default 5000 constraint directory_configs_op_timeout_ms_check check (op_timeout_ms between 100 and 60000),
  -- executor mode: seconds a login request stays answerable
  request_ttl_s      integer not null default 30 constraint directory_configs_request_ttl_s_check check (request_ttl_s between 2 and 300),
  updated_by         uuid references auth.users (id) on delete set null default auth.uid(),
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  -- an LDAP filter matching a disabled account of this directory (FreeIPA nsAccountLock, AD
  -- userAccountControl bit 2, OpenLDAP's permanent ppolicy lock): the direct path refuses
  -- such an account at sign-in (account_disabled) even where the server still lets it bind;
  -- the executor path and the sync use the executor's own RACKPILOT_IDM_DISABLED_FILTER
  disabled_filter    text constraint directory_configs_disabled_filter_check check (disabled_filter is null
                                 or (length(disabled_filter) between 3 and 1024
                                     and disabled_filter ~ '^\(.*\)$')),
  -- the attribute names this directory uses (directory presets:
  -- executor/data/directory_presets.yaml; docs/identity.md). The usual names in FreeIPA,
  -- Active Directory and OpenLDAP are the defaults, but AD accounts without a mailbox have no
  -- mail (their userPrincipalName is the address) and extended schemas name things their own
  -- way; the executor path has the same settings (RACKPILOT_IDM_*_ATTRIBUTE)
  mail_attribute         text not null default 'mail',
  display_name_attribute text not null default 'displayName',
  member_of_attribute    text not null default 'memberOf',
  member_attribute       text not null default 'member',
  constraint directory_configs_direct_mode_check check (mode <> 'direct' or (cardinality(uris) > 0 and bind_dn_template is not null)),
  constraint directory_configs_attribute_names_check check (
    mail_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and display_name_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and member_of_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$'
    and member_attribute ~ '^([A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+)$')
);
comment on table public.directory_configs is
  'Directory sign-in per site: where the bind happens (direct: idm-login; executor: the site executor) and the group -> role mapping.';
comment on column public.directory_configs.disabled_filter is
  'LDAP filter matching a disabled account (e.g. (nsAccountLock=TRUE)); such an account is refused at a direct sign-in.';
comment on column public.directory_configs.mail_attribute is 'the user''s e-mail address (AD without mail: userPrincipalName)';
comment on column public.directory_configs.member_of_attribute is 'the user''s groups (nesting = memberof)';
comment on column public.directory_configs.member_attribute is 'a group''s members (uniqueMember is read too)';
create trigger directory_configs_touch before update on public.directory_configs
  for each row execute function public.touch_updated_at();

-- uris are checked by a trigger (a CHECK would call the validator with the caller's
-- privileges, and it is no RPC)
create function public.directory_configs_validate()
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
create trigger directory_configs_validate before insert or update on public.directory_configs
  for each row execute function public.directory_configs_validate();

-- the directory group -> role mapping, per site: one row per (site, group DN); the role column
-- is public.app_role, the one declaration of the roles. Admins manage it under RLS, every
-- change is audited (audit_changes), and the sign-in (idm_role_for_groups) and the
-- executor's sync (idm_mapped_groups, idm_apply_sync) read it.
create table public.directory_group_roles (
  id         uuid primary key default extensions.gen_random_uuid(),
  site_id    uuid not null references public.directory_configs (site_id) on delete cascade,
  group_dn   text not null constraint directory_group_roles_group_dn_check check (length(group_dn) between 3 and 1024 and group_dn ~ '^[^=,]+=[^=]'),
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

-- which auth user each directory entry is ---------------------------------------------------
create table public.directory_identities (
  user_id         uuid primary key references auth.users (id) on delete cascade,
  site_id         uuid not null references public.sites (id) on delete cascade,  -- last signed in through
  subject         text not null unique constraint directory_identities_subject_check check (length(subject) between 3 and 1024),  -- idm_norm_dn(entry DN)
  username        text not null constraint directory_identities_username_check check (length(username) between 1 and 256),
  groups          text[] not null default '{}',                                -- mapped groups, normalised
  last_sign_in_at timestamptz,
  last_sign_in_via text constraint directory_identities_last_sign_in_via_check check (last_sign_in_via in ('direct', 'executor')),
  last_synced_at  timestamptz,
  created_at      timestamptz not null default now()
);
comment on table public.directory_identities is 'Directory entries (DN) and the auth user each signs in as.';

-- the executor path's mailbox --------------------------------------------------------------
create table public.idm_login_requests (
  id           uuid primary key default extensions.gen_random_uuid(),
  site_id      uuid not null references public.sites (id) on delete cascade,
  executor_id  uuid not null references public.executors (id) on delete cascade,
  key_id       text not null,
  challenge    text not null constraint idm_login_requests_challenge_check check (length(challenge) between 32 and 128),
  status       text not null default 'issued'
               constraint idm_login_requests_status_check check (status in ('issued', 'pending', 'answered', 'consumed', 'expired')),
  envelope     text constraint idm_login_requests_envelope_check check (length(envelope) <= 16384),
  verifier_pk  text constraint idm_login_requests_verifier_pk_check check (length(verifier_pk) between 40 and 64),
  answer       text constraint idm_login_requests_answer_check check (length(answer) <= 65536),
  answer_mac   text constraint idm_login_requests_answer_mac_check check (length(answer_mac) between 40 and 64),
  created_at   timestamptz not null default now(),
  expires_at   timestamptz not null,
  submitted_at timestamptz,
  answered_at  timestamptz,
  consumed_at  timestamptz,
  client       text constraint idm_login_requests_client_check check (length(client) <= 64)  -- the address that began it (per-client limit)
);
create index idm_login_requests_pending_idx on public.idm_login_requests (executor_id, expires_at) where status = 'pending';
create index idm_login_requests_created_idx on public.idm_login_requests (created_at);
create index idm_login_requests_client_idx on public.idm_login_requests (client, created_at);
comment on table public.idm_login_requests is
  'Directory sign-in through the executor: challenge, sealed envelope and the executor''s MAC''d answer. No API role may touch it.';

-- break-glass -------------------------------------------------------------------------------
create table public.breakglass_accounts (
  id              uuid primary key default extensions.gen_random_uuid(),
  name            text not null unique constraint breakglass_accounts_name_check check (name ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  user_id         uuid not null unique references auth.users (id) on delete cascade,
  -- scrypt$<N>$<r>$<p>$<salt b64url>$<hash b64url>: the secret itself is never sent here
  secret_hash     text not null constraint breakglass_accounts_secret_hash_check check (secret_hash ~ '^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9_-]{16,}\$[A-Za-z0-9_-]{40,}$'),
  role            public.app_role not null default 'admin',
  max_session_s   integer not null default 1800 constraint breakglass_accounts_max_session_s_check check (max_session_s between 60 and 14400),
  failed_attempts integer not null default 0 constraint breakglass_accounts_failed_attempts_check check (failed_attempts >= 0),
  locked_until    timestamptz,
  last_used_at    timestamptz,
  disabled_at     timestamptz,
  created_at      timestamptz not null default now()
);
comment on table public.breakglass_accounts is
  'Emergency accounts: a long random secret stored as a scrypt hash only; sign-in through the break-glass function.';

create table public.breakglass_sessions (
  id              uuid primary key default extensions.gen_random_uuid(),
  account_id      uuid not null references public.breakglass_accounts (id) on delete cascade,
  user_id         uuid not null references auth.users (id) on delete cascade,
  auth_session_id uuid not null unique,
  role            public.app_role not null,
  reason          text not null constraint breakglass_sessions_reason_check check (length(btrim(reason)) between 10 and 2000),
  client          text constraint breakglass_sessions_client_check check (length(client) <= 256),
  started_at      timestamptz not null default now(),
  expires_at      timestamptz not null,
  revoked_at      timestamptz,
  revoked_by      uuid references auth.users (id) on delete set null,
  revoke_reason   text constraint breakglass_sessions_revoke_reason_check check (length(revoke_reason) <= 2000),
  constraint breakglass_sessions_expiry_check check (expires_at > started_at)
);
create index breakglass_sessions_user_idx on public.breakglass_sessions (user_id, auth_session_id);
comment on table public.breakglass_sessions is 'Every break-glass session: who, why, until when, and its revocation.';

-- failed break-glass sign-ins per (account name, client address), unknown names too, so a
-- lockout says nothing about whether the account exists and a guesser cannot lock the
-- holder out during the outage break-glass exists for; the account's failed_attempts still
-- counts every failure (an admin sees an account under attack)
create table public.breakglass_lockouts (
  account_name    text not null constraint breakglass_lockouts_account_name_check check (length(account_name) <= 200),
  client          text not null constraint breakglass_lockouts_client_check check (length(client) <= 64),
  failed_attempts integer not null default 0 constraint breakglass_lockouts_failed_attempts_check check (failed_attempts >= 0),
  locked_until    timestamptz,
  updated_at      timestamptz not null default now(),
  constraint breakglass_lockouts_pkey primary key (account_name, client)
);
alter table public.breakglass_lockouts enable row level security;
revoke all on table public.breakglass_lockouts from public, anon, authenticated;
comment on table public.breakglass_lockouts is
  'failed break-glass sign-ins per account name and client address; no API role reads or writes it';
create index breakglass_lockouts_client_idx on public.breakglass_lockouts (client, updated_at);

-- failed directory sign-ins per (site, client address) in a one-minute window
create table public.idm_sign_in_failures (
  site_id      uuid not null references public.sites (id) on delete cascade,
  client       text not null constraint idm_sign_in_failures_client_check check (length(client) <= 64),
  window_start timestamptz not null default now(),
  failures     integer not null default 0 constraint idm_sign_in_failures_failures_check check (failures >= 0),
  constraint idm_sign_in_failures_pkey primary key (site_id, client)
);
alter table public.idm_sign_in_failures enable row level security;
revoke all on table public.idm_sign_in_failures from public, anon, authenticated;
comment on table public.idm_sign_in_failures is
  'failed directory sign-ins per site and client address in the current minute; no API role reads or writes it';

-- the identity policy knobs (one row); policies/identity.yaml documents them ----------------
create table public.identity_policy (
  id                      boolean primary key default true constraint identity_policy_id_check check (id),
  breakglass_max_failures integer not null default 5 constraint identity_policy_breakglass_max_failures_check check (breakglass_max_failures between 1 and 100),
  breakglass_lockout_s    integer not null default 900 constraint identity_policy_breakglass_lockout_s_check check (breakglass_lockout_s between 1 and 86400),
  breakglass_min_ttl_s    integer not null default 5 constraint identity_policy_breakglass_min_ttl_s_check check (breakglass_min_ttl_s between 1 and 3600),
  max_open_requests       integer not null default 50 constraint identity_policy_max_open_requests_check check (max_open_requests between 1 and 10000),
  begin_per_client_per_min integer not null default 60 constraint identity_policy_begin_per_client_per_min_check check (begin_per_client_per_min between 1 and 100000),
  sign_in_failures_per_client_per_min integer not null default 20
    constraint identity_policy_sign_in_failures_per_client_per_min_check check (sign_in_failures_per_client_per_min between 1 and 100000),
  breakglass_failures_per_client integer not null default 50
    constraint identity_policy_breakglass_failures_per_client_check check (breakglass_failures_per_client between 1 and 100000)
);
comment on column public.identity_policy.sign_in_failures_per_client_per_min is
  'failed directory sign-ins one client address may make per site in a minute before it is refused (429) for the rest of that minute';
comment on column public.identity_policy.breakglass_failures_per_client is
  'failed break-glass attempts one client address may make over all account names within breakglass_lockout_s before it is refused (429)';
insert into public.identity_policy default values;

-- privileges: start from nothing (the platform's default privileges grant every new table to
-- the API roles), then exactly what policies/access.yaml says ---------------------------------
revoke all on public.directory_configs, public.directory_identities, public.idm_login_requests,
              public.breakglass_accounts, public.breakglass_sessions, public.identity_policy
  from anon, authenticated;
alter table public.directory_configs enable row level security;
alter table public.directory_identities enable row level security;
alter table public.idm_login_requests enable row level security;
alter table public.breakglass_accounts enable row level security;
alter table public.breakglass_sessions enable row level security;
alter table public.identity_policy enable row level security;

grant select, insert, delete on public.directory_configs to authenticated;
grant update (mode, enabled, uris, starttls, ca_pem, bind_dn_template, base_dn, user_filter, group_base_dn, nesting,
              connect_timeout_ms, op_timeout_ms, request_ttl_s, disabled_filter, mail_attribute, display_name_attribute,
              member_of_attribute, member_attribute)
  on public.directory_configs to authenticated;
create policy directory_configs_select_admin on public.directory_configs for select to authenticated
  using ((select public.has_role('admin')));
create policy directory_configs_insert_admin on public.directory_configs for insert to authenticated
  with check ((select public.has_role('admin')));
create policy directory_configs_update_admin on public.directory_configs for update to authenticated
  using ((select public.has_role('admin'))) with check ((select public.has_role('admin')));
create policy directory_configs_delete_admin on public.directory_configs for delete to authenticated
  using ((select public.has_role('admin')));

grant select on public.directory_identities to authenticated;
create policy directory_identities_select_own on public.directory_identities for select to authenticated
  using (user_id = (select auth.uid()) or (select public.has_role('admin')));

-- the secret's hash stays unreadable to every user role, admins included
grant select (id, name, user_id, role, max_session_s, failed_attempts, locked_until, last_used_at, disabled_at,
              created_at) on public.breakglass_accounts to authenticated;
create policy breakglass_accounts_select_admin on public.breakglass_accounts for select to authenticated
  using ((select public.has_role('admin')));
grant select on public.breakglass_sessions to authenticated;
create policy breakglass_sessions_select_admin on public.breakglass_sessions for select to authenticated
  using ((select public.has_role('admin')));

-- audit: configuration and directory identities through the generic row diff ---------------
create trigger audit_directory_configs_insert after insert on public.directory_configs
  referencing new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_directory_configs_update after update on public.directory_configs
  referencing old table as old_rows new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_directory_configs_delete after delete on public.directory_configs
  referencing old table as old_rows for each statement execute function public.audit_changes();

-- An audit row written by the identity functions themselves (they run as their owner).
create function public.idm_audit(p_action text, p_table text, p_row text, p_data jsonb, p_note text,
                                 p_actor uuid default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_actor record;
begin
  select * into v_actor from public.audit_actor();
  insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, new_data, note)
  values (case when p_actor is not null then 'user' else v_actor.kind end, coalesce(p_actor, v_actor.actor_id),
          case when p_actor is not null then 'authenticated' else v_actor.actor_role end,
          p_action, p_table, p_row, p_data, p_note);
end
$$;

-- the role RLS sees: user_roles, else a live break-glass grant of this very session -----------
create or replace function public.current_app_role()
returns public.app_role
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select ur.role from public.user_roles ur where ur.user_id = auth.uid()),
    (select b.role from public.breakglass_sessions b
      where b.user_id = auth.uid()
        and b.auth_session_id::text = (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'session_id')
        and b.revoked_at is null
        and b.expires_at > now()
      limit 1))
$$;

-- group -> role ------------------------------------------------------------------------------
-- The highest role any of p_groups maps to in the site's configuration; null when none does.
create function public.idm_role_for_groups(p_site_id uuid, p_groups text[])
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

-- The mapped groups of a configuration (what the sync reads).
create function public.idm_mapped_groups(p_site_id uuid)
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

-- Ends every session of a user (refresh tokens go with them); the access tokens already out
-- lose their role at once, since RLS reads user_roles on every request.
create function public.idm_revoke_sessions(p_user_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  n integer;
begin
  delete from auth.sessions s where s.user_id = p_user_id;
  get diagnostics n = row_count;
  return n;
end
$$;

-- A directory sign-in that the bind and the mapping accepted: remember the identity, set the
-- role from the directory, audit it. p_groups: the user's groups as the directory reported
-- them (the function verified where they came from). Refuses a user in no mapped group, and
-- then also takes away a role they had from an earlier sign-in.
create function public.idm_record_sign_in(p_user_id uuid, p_site_id uuid, p_subject text, p_username text,
                                          p_groups text[], p_via text)
returns public.app_role
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_role public.app_role := public.idm_role_for_groups(p_site_id, p_groups);
  v_subject text := public.idm_norm_dn(p_subject);
  v_mapped text[];
begin
  select coalesce(array_agg(distinct public.idm_norm_dn(m.group_dn)), '{}') into v_mapped
    from public.idm_mapped_groups(p_site_id) m
   where public.idm_norm_dn(m.group_dn) = any (select public.idm_norm_dn(g) from unnest(p_groups) g);
  if exists (select 1 from public.directory_identities d
              where d.subject = v_subject and d.user_id <> p_user_id) then
    raise exception using errcode = 'P0001', message = 'identity_conflict: this directory entry signs in as another user';
  end if;
  if exists (select 1 from public.breakglass_accounts b where b.user_id = p_user_id) then
    raise exception using errcode = 'P0001', message = 'identity_conflict: a break-glass account cannot sign in through the directory';
  end if;
  insert into public.directory_identities as d (user_id, site_id, subject, username, groups, last_sign_in_at,
                                                last_sign_in_via)
  values (p_user_id, p_site_id, v_subject, p_username, v_mapped, now(), p_via)
  on conflict (user_id) do update
    set site_id = excluded.site_id, username = excluded.username, groups = excluded.groups, last_sign_in_at = now(),
        last_sign_in_via = excluded.last_sign_in_via
  where d.subject = excluded.subject;
  if not found then
    raise exception using errcode = 'P0001', message = 'identity_conflict: this user is another directory entry';
  end if;
  perform set_config('rackpilot.audit_note', format('directory sign-in of %s via %s', p_username, p_via), true);
  if v_role is null then
    delete from public.user_roles ur where ur.user_id = p_user_id and ur.source = 'directory';
    perform public.idm_revoke_sessions(p_user_id);
    perform public.idm_audit('idm.sign_in_refused', 'directory_identities', p_user_id::text,
                             jsonb_build_object('username', p_username, 'site_id', p_site_id, 'via', p_via,
                                                'reason', 'no_mapped_group'), null);
    return null;
  end if;
  insert into public.user_roles as ur (user_id, role, source) values (p_user_id, v_role, 'directory')
  on conflict (user_id) do update set role = excluded.role, source = 'directory'
  where ur.role is distinct from excluded.role or ur.source <> 'directory';
  perform public.idm_audit('idm.sign_in', 'directory_identities', p_user_id::text,
                           jsonb_build_object('username', p_username, 'site_id', p_site_id, 'via', p_via,
                                              'role', v_role, 'groups', v_mapped), null);
  return v_role;
end
$$;

-- Whether p_client has used up its failures on p_site_id in the current window.
create function public.idm_client_limited(p_site_id uuid, p_client text)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((select f.failures >= p.sign_in_failures_per_client_per_min
                     from public.idm_sign_in_failures f cross join public.identity_policy p
                    where f.site_id = p_site_id and f.client = left(coalesce(p_client, 'unknown'), 64)
                      and f.window_start > now() - interval '1 minute'), false)
$$;

-- A credential failure from p_client: counted (a window that ended starts the count again)
-- and audited. Returns the count in the current window.
create function public.idm_client_failed(p_site_id uuid, p_client text, p_username text, p_code text, p_via text)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_client text := left(coalesce(p_client, 'unknown'), 64);
  v_failures integer;
begin
  delete from public.idm_sign_in_failures f where f.window_start < now() - interval '1 hour';
  insert into public.idm_sign_in_failures as f (site_id, client, window_start, failures)
  values (p_site_id, v_client, now(), 1)
  on conflict on constraint idm_sign_in_failures_pkey do update
     set failures = case when f.window_start <= now() - interval '1 minute' then 1 else f.failures + 1 end,
         window_start = case when f.window_start <= now() - interval '1 minute' then now() else f.window_start end
  returning f.failures into v_failures;
  perform public.idm_audit('idm.sign_in_failed', 'sites', p_site_id::text,
                           jsonb_build_object('severity', 'notice', 'site_id', p_site_id,
                                              'username', left(p_username, 256), 'client', v_client,
                                              'reason', left(p_code, 64), 'via', p_via,
                                              'failures_this_minute', v_failures),
                           'failed directory sign-in');
  return v_failures;
end
$$;

-- the executor path ---------------------------------------------------------------------------
-- idm-login "begin": a challenge for the site's executor (the one with the freshest heartbeat).
create function public.idm_begin_login(p_site_id uuid, p_client text)
returns table (request_id uuid, challenge text, executor_id uuid, key_id text, public_key text, expires_at timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_cfg public.directory_configs%rowtype;
  v_pol public.identity_policy%rowtype;
  v_exec public.executors%rowtype;
  v_row public.idm_login_requests%rowtype;
begin
  select * into v_cfg from public.directory_configs c where c.site_id = p_site_id and c.enabled;
  if not found or v_cfg.mode <> 'executor' then
    raise exception using errcode = 'P0001', message = 'not_configured: this site does not sign in through its executor';
  end if;
  select * into v_pol from public.identity_policy;
  delete from public.idm_login_requests r where r.created_at < now() - interval '1 hour';
  if (select count(*) from public.idm_login_requests r
       where r.client = p_client and r.created_at > now() - interval '1 minute') >= v_pol.begin_per_client_per_min then
    raise exception using errcode = 'P0001', message = 'busy: too many sign-ins from this address; retry in a minute';
  end if;
  if (select count(*) from public.idm_login_requests r
       where r.site_id = p_site_id and r.status = 'pending' and r.expires_at > now()) >= v_pol.max_open_requests then
    raise exception using errcode = 'P0001', message = 'busy: too many sign-ins in flight for this site; retry shortly';
  end if;
  select * into v_exec from public.executors e
   where e.site_id = p_site_id and e.status = 'active' and e.last_heartbeat_at > now() - interval '2 minutes'
   order by e.last_heartbeat_at desc, e.id limit 1;
  if not found then
    raise exception using errcode = 'P0001', message = 'executor_unavailable: no executor of this site is online';
  end if;
  insert into public.idm_login_requests as r (site_id, executor_id, key_id, challenge, expires_at, client)
  values (p_site_id, v_exec.id, v_exec.key_id,
          rtrim(translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/', '-_'), '='),
          now() + make_interval(secs => v_cfg.request_ttl_s), left(p_client, 64))
  returning * into v_row;
  return query select v_row.id, v_row.challenge, v_exec.id, v_exec.key_id, v_exec.public_key, v_row.expires_at;
end
$$;

-- idm-login "complete": the sealed envelope and the function's ephemeral public key, once.
create function public.idm_submit_login(p_request_id uuid, p_envelope text, p_verifier_pk text)
returns public.idm_login_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.idm_login_requests%rowtype;
begin
  update public.idm_login_requests r
     set status = 'pending', envelope = p_envelope, verifier_pk = p_verifier_pk, submitted_at = now()
   where r.id = p_request_id and r.status = 'issued' and r.expires_at > now()
  returning * into v_row;
  if not found then
    raise exception using errcode = 'P0001', message = 'stale_request: the sign-in request is unknown, used or expired; start again';
  end if;
  return v_row;
end
$$;

-- The answer, once: 'answered' -> 'consumed'. Null while the executor has not answered;
-- raises once the request expired unanswered.
create function public.idm_take_answer(p_request_id uuid)
returns table (answer text, answer_mac text, public_key text, key_id text, challenge text, site_id uuid,
               answered_in_time boolean)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_row public.idm_login_requests%rowtype;
begin
  select * into v_row from public.idm_login_requests r where r.id = p_request_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = 'stale_request: unknown sign-in request';
  end if;
  if v_row.status = 'pending' then
    if v_row.expires_at <= now() then
      update public.idm_login_requests r set status = 'expired', envelope = null where r.id = p_request_id;
      raise exception using errcode = 'P0001', message = 'stale_request: the executor did not answer in time';
    end if;
    return;
  end if;
  if v_row.status <> 'answered' then
    raise exception using errcode = 'P0001', message = 'stale_request: this sign-in request was already used';
  end if;
  update public.idm_login_requests r set status = 'consumed', consumed_at = now(), answer = null
   where r.id = p_request_id;
  return query select v_row.answer, v_row.answer_mac, e.public_key, e.key_id, v_row.challenge, v_row.site_id,
                      v_row.answered_at <= v_row.expires_at
                 from public.executors e where e.id = v_row.executor_id and e.key_id = v_row.key_id;
end
$$;

-- The executor's side: what it has to answer, and its answer.
create function public.idm_pending_logins(p_executor_id uuid)
returns table (id uuid, site_id uuid, challenge text, envelope text, verifier_pk text, expires_at timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_exec public.executors%rowtype;
begin
  v_exec := public.executor_row(p_executor_id);
  return query select r.id, r.site_id, r.challenge, r.envelope, r.verifier_pk, r.expires_at
                 from public.idm_login_requests r
                where r.executor_id = p_executor_id and r.key_id = v_exec.key_id and r.status = 'pending'
                  and r.expires_at > now()
                order by r.submitted_at
                limit 50;
end
$$;

create function public.idm_answer_login(p_executor_id uuid, p_request_id uuid, p_answer text, p_mac text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_exec public.executors%rowtype;
begin
  v_exec := public.executor_row(p_executor_id);
  update public.idm_login_requests r
     set status = 'answered', answer = p_answer, answer_mac = p_mac, answered_at = now(), envelope = null
   where r.id = p_request_id and r.executor_id = p_executor_id and r.key_id = v_exec.key_id
     and r.status = 'pending' and r.expires_at > now();
  if not found then
    raise exception using errcode = 'P0001',
      message = 'stale_request: the request is not pending for this executor (answered, expired or unknown)';
  end if;
end
$$;

-- The executor's bind account for the sync: the envelope of the site's 'ldap' credential set
-- sealed to this executor's key.
create function public.idm_bind_credential(p_executor_id uuid, p_name text)
returns table (credential_set_id uuid, username text, key_id text, sealed_secret text)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_exec public.executors%rowtype;
  v_cred public.credential_sets%rowtype;
begin
  v_exec := public.executor_row(p_executor_id);
  select * into v_cred from public.credential_sets c
   where c.site_id = v_exec.site_id and c.name = p_name and c.kind::text = 'ldap';
  if not found then
    raise exception using errcode = 'P0001',
      message = format('not_found: the site has no ldap credential set named %s', p_name);
  end if;
  return query
    select v_cred.id, v_cred.username, e.key_id, e.sealed_secret
      from public.credential_envelopes e
     where e.credential_set_id = v_cred.id and e.key_id = v_exec.key_id;
  if not found then
    raise exception using errcode = 'P0001',
      message = format('key_mismatch: credential set %s has no envelope for key %s; re-seal it', p_name, v_exec.key_id);
  end if;
end
$$;

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

-- The sync's result: p_members maps each member DN the executor found in the mapped groups
-- (nested followed, disabled accounts left out) to the mapped group DNs it is in: what the
-- directory says, not what the executor concluded, so the executor holds no copy of the
-- mapping or of the role ladder. Every directory identity of the site gets the highest role
-- of those groups; one who is in none loses their role, and one whose role went down or
-- away loses their sessions (refresh tokens) too, counted in the answer and the idm.sync
-- audit entry as refresh_tokens_revoked (the tokens still usable). All or nothing: the
-- executor sends a complete map or none.
create function public.idm_apply_sync(p_executor_id uuid, p_members jsonb)
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

-- break-glass -------------------------------------------------------------------------------
-- A break-glass session is an admin for minutes; through REST it could grant its own account
-- a permanent role in user_roles and outlive its time box. Break-glass accounts never hold a
-- user_roles row: refused whoever asks, and provisioning refuses an account whose user
-- already has one.
create function public.user_roles_no_breakglass()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select 1 from public.breakglass_accounts b where b.user_id = new.user_id) then
    raise exception using errcode = '42501',
      message = 'forbidden: a break-glass account holds no role of its own; its sessions are time-boxed grants';
  end if;
  return new;
end
$$;
create trigger user_roles_no_breakglass before insert or update on public.user_roles
  for each row execute function public.user_roles_no_breakglass();

-- Provisioning (service role: `rackpilot breakglass create`): the hash only.
create function public.breakglass_provision(p_name text, p_user_id uuid, p_secret_hash text,
                                                       p_role public.app_role default 'admin',
                                                       p_max_session_s integer default 1800)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
begin
  if exists (select 1 from public.user_roles ur where ur.user_id = p_user_id)
     or exists (select 1 from public.directory_identities d where d.user_id = p_user_id) then
    raise exception using errcode = 'P0001',
      message = 'identity_conflict: a break-glass account needs an auth user of its own (this one has a role or a directory identity)';
  end if;
  insert into public.breakglass_accounts (name, user_id, secret_hash, role, max_session_s)
  values (p_name, p_user_id, p_secret_hash, p_role, p_max_session_s)
  on conflict (name) do update set secret_hash = excluded.secret_hash, role = excluded.role,
                                   max_session_s = excluded.max_session_s, failed_attempts = 0,
                                   locked_until = null, disabled_at = null
  returning id into v_id;
  perform public.idm_audit('breakglass.provisioned', 'breakglass_accounts', v_id::text,
                           jsonb_build_object('severity', 'high', 'name', p_name, 'role', p_role,
                                              'max_session_s', p_max_session_s), 'break-glass account (re)provisioned');
  return v_id;
end
$$;

-- A failed attempt: counted, locked out after identity_policy.breakglass_max_failures,
-- audited. Unknown names are audited too.
create function public.breakglass_failed(p_name text, p_client text)
returns timestamptz
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_pol public.identity_policy%rowtype;
  v_acc public.breakglass_accounts%rowtype;
  v_row public.breakglass_lockouts%rowtype;
begin
  select * into v_pol from public.identity_policy;
  insert into public.breakglass_lockouts as l (account_name, client, failed_attempts, locked_until)
  values (left(p_name, 200), left(coalesce(p_client, 'unknown'), 64), 1,
          case when v_pol.breakglass_max_failures <= 1
               then now() + make_interval(secs => v_pol.breakglass_lockout_s) end)
  on conflict on constraint breakglass_lockouts_pkey do update
     set failed_attempts = case when l.locked_until is not null and l.locked_until <= now() then 1
                                else l.failed_attempts + 1 end,
         locked_until = case
           when l.locked_until is not null and l.locked_until <= now() then null
           when l.failed_attempts + 1 >= v_pol.breakglass_max_failures
             then now() + make_interval(secs => v_pol.breakglass_lockout_s)
           else l.locked_until end,
         updated_at = now()
  returning * into v_row;
  update public.breakglass_accounts a set failed_attempts = a.failed_attempts + 1
   where a.name = p_name
  returning * into v_acc;
  perform public.idm_audit('breakglass.failed', 'breakglass_accounts', coalesce(v_acc.id::text, p_name),
                           jsonb_build_object('severity', 'high', 'name', left(p_name, 64), 'client', p_client,
                                              'failed_attempts', v_row.failed_attempts,
                                              'locked_until', v_row.locked_until), 'failed break-glass sign-in');
  return v_row.locked_until;
end
$$;

-- Whether p_client is locked out of p_name now (its lock's end, or null).
create function public.breakglass_client_locked(p_name text, p_client text)
returns timestamptz
language sql
stable
security definer
set search_path = ''
as $$
  select l.locked_until from public.breakglass_lockouts l
   where l.account_name = left(p_name, 200) and l.client = left(coalesce(p_client, 'unknown'), 64)
     and l.locked_until > now()
$$;

-- A successful sign-in clears that client's count.
create function public.breakglass_client_cleared(p_name text, p_client text)
returns void
language sql
security definer
set search_path = ''
as $$
  delete from public.breakglass_lockouts l
   where l.account_name = left(p_name, 200) and l.client = left(coalesce(p_client, 'unknown'), 64)
$$;

-- Whether p_client used up its failures over all names in the lockout window.
create function public.breakglass_client_busy(p_client text)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((select sum(l.failed_attempts)
                     from public.breakglass_lockouts l
                    where l.client = left(coalesce(p_client, 'unknown'), 64)
                      and l.updated_at > now() - make_interval(secs => p.breakglass_lockout_s)), 0)
         >= p.breakglass_failures_per_client
    from public.identity_policy p
$$;

-- A successful sign-in: the session is time-boxed, audited as critical and announced on
-- every enabled notification channel.
create function public.breakglass_grant(p_account_id uuid, p_auth_session_id uuid, p_reason text, p_ttl_s integer,
                                        p_client text)
returns public.breakglass_sessions
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_acc public.breakglass_accounts%rowtype;
  v_pol public.identity_policy%rowtype;
  v_row public.breakglass_sessions%rowtype;
  v_ttl integer;
begin
  select * into v_pol from public.identity_policy;
  select * into v_acc from public.breakglass_accounts a where a.id = p_account_id for update;
  if not found or v_acc.disabled_at is not null then
    raise exception using errcode = 'P0001', message = 'forbidden: unknown or disabled break-glass account';
  end if;
  v_ttl := least(greatest(coalesce(p_ttl_s, v_acc.max_session_s), v_pol.breakglass_min_ttl_s), v_acc.max_session_s);
  insert into public.breakglass_sessions (account_id, user_id, auth_session_id, role, reason, client, expires_at)
  values (v_acc.id, v_acc.user_id, p_auth_session_id, v_acc.role, btrim(p_reason), p_client,
          now() + make_interval(secs => v_ttl))
  returning * into v_row;
  update public.breakglass_accounts a set failed_attempts = 0, locked_until = null, last_used_at = now()
   where a.id = v_acc.id;
  -- the auth session ends with the grant: no refresh after expires_at
  update auth.sessions s set not_after = v_row.expires_at where s.id = p_auth_session_id;
  perform public.idm_audit('breakglass.used', 'breakglass_sessions', v_row.id::text,
                           jsonb_build_object('severity', 'critical', 'account', v_acc.name, 'role', v_row.role,
                                              'reason', v_row.reason, 'client', p_client,
                                              'expires_at', v_row.expires_at),
                           'CRITICAL: break-glass access used', v_acc.user_id);
  insert into public.notification_outbox (setting_id, event_kind, payload)
  select s.id, 'breakglass_used'::public.notification_event,
         jsonb_build_object('type', 'break-glass', 'severity', 'critical', 'account', v_acc.name,
                            'role', v_row.role, 'reason', v_row.reason, 'client', p_client,
                            'session_id', v_row.id, 'expires_at', v_row.expires_at)
    from public.notification_settings s
   where s.enabled;
  return v_row;
end
$$;

-- Admins end a break-glass session: the grant and the auth session go at once.
create function public.revoke_breakglass_session(p_session_id uuid, p_reason text default null)
returns public.breakglass_sessions
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.breakglass_sessions%rowtype;
begin
  if not public.has_role('admin') and coalesce(auth.role(), '') <> 'service_role' then
    raise exception using errcode = '42501', message = 'forbidden: revoking break-glass sessions is for admins';
  end if;
  -- a break-glass session may not revoke the others' traces of itself
  update public.breakglass_sessions b
     set revoked_at = coalesce(b.revoked_at, now()), revoked_by = coalesce(b.revoked_by, auth.uid()),
         revoke_reason = coalesce(b.revoke_reason, p_reason)
   where b.id = p_session_id
  returning * into v_row;
  if not found then
    raise exception using errcode = 'P0001', message = 'not_found: no such break-glass session';
  end if;
  delete from auth.sessions s where s.id = v_row.auth_session_id;
  perform public.idm_audit('breakglass.revoked', 'breakglass_sessions', v_row.id::text,
                           jsonb_build_object('severity', 'high', 'reason', p_reason), 'break-glass session revoked');
  return v_row;
end
$$;

-- who may call what: the API roles get only revoke_breakglass_session (it checks the admin
-- role); everything else is for the service role (edge functions, the executor) ------------
revoke execute on function public.idm_norm_dn(text), public.idm_valid_uris(text[]),
  public.idm_audit(text, text, text, jsonb, text, uuid), public.idm_role_for_groups(uuid, text[]),
  public.idm_mapped_groups(uuid), public.idm_revoke_sessions(uuid),
  public.idm_record_sign_in(uuid, uuid, text, text, text[], text),
  public.idm_submit_login(uuid, text, text), public.idm_take_answer(uuid), public.idm_pending_logins(uuid),
  public.idm_answer_login(uuid, uuid, text, text), public.idm_bind_credential(uuid, text),
  public.idm_apply_sync(uuid, jsonb),
  public.breakglass_provision(text, uuid, text, public.app_role, integer), public.breakglass_failed(text, text),
  public.breakglass_grant(uuid, uuid, text, integer, text), public.revoke_breakglass_session(uuid, text)
  from public, anon, authenticated;
grant execute on function public.idm_pending_logins(uuid), public.idm_answer_login(uuid, uuid, text, text),
  public.idm_bind_credential(uuid, text), public.idm_apply_sync(uuid, jsonb), public.idm_mapped_groups(uuid),
  public.breakglass_provision(text, uuid, text, public.app_role, integer)
  to service_role;
grant execute on function public.revoke_breakglass_session(uuid, text) to authenticated, service_role;
revoke execute on function public.idm_begin_login(uuid, text), public.user_roles_no_breakglass()
  from public, anon, authenticated;
-- the sign-in limits: only the edge functions' own database connections call them
revoke all on function public.idm_client_limited(uuid, text) from public, anon, authenticated;
revoke all on function public.idm_client_failed(uuid, text, text, text, text) from public, anon, authenticated;
revoke all on function public.breakglass_client_locked(text, text) from public, anon, authenticated;
revoke all on function public.breakglass_client_cleared(text, text) from public, anon, authenticated;
revoke all on function public.breakglass_client_busy(text) from public, anon, authenticated;

-- Realtime wakes the executor on a submitted request (the service role reads it; no user
-- role can select the table, so no user's subscription ever receives a row).
alter publication supabase_realtime add table public.idm_login_requests;
