-- Supabase platform bootstrap for the local stack.
--
-- Hosted Supabase (and `supabase start`) create all of this before any project migration
-- runs, so it is NOT a migration: the local stack applies it once, right after initdb.
-- It mirrors what the platform provides and what rackpilot relies on: the API roles,
-- the auth schema and its helper functions, the extensions schema, the Realtime
-- publication and the PostgREST schema-reload event triggers.
-- Every statement is idempotent so `rackpilot dev up` may re-run it safely.

\set ON_ERROR_STOP on

-- API roles -----------------------------------------------------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_admin') then
    -- the platform's own superuser; some CLI commands name it
    create role supabase_admin login superuser createdb createrole replication bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin login noinherit createrole;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin nologin noinherit;
  end if;
end $$;

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
alter role authenticator set statement_timeout = '8s';
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

-- extensions schema -----------------------------------------------------------------
create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;
alter default privileges in schema extensions grant all on functions to postgres, anon, authenticated, service_role;
grant execute on all functions in schema extensions to postgres, anon, authenticated, service_role;
alter database postgres set search_path = "$user", public, extensions;

-- public schema: the platform's default grants; RLS decides what each role sees -----
grant usage on schema public to postgres, anon, authenticated, service_role;
grant all on schema public to postgres, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;

-- auth schema (the GoTrue-compatible subset's storage) ------------------------------
-- Owned by supabase_admin, as on the platform: `supabase db reset` keeps such schemas.
create schema if not exists auth authorization supabase_admin;
grant usage on schema auth to postgres, anon, authenticated, service_role;
grant all on schema auth to supabase_auth_admin, postgres;

create table if not exists auth.users (
  instance_id uuid,
  id uuid primary key default extensions.gen_random_uuid(),
  aud varchar(255) not null default 'authenticated',
  role varchar(255) not null default 'authenticated',
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  is_super_admin boolean,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  phone text,
  banned_until timestamptz,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
create unique index if not exists users_email_key on auth.users (lower(email)) where email is not null;

create table if not exists auth.sessions (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  not_after timestamptz
);

-- refresh tokens are stored as sha256 hashes only, and rotate on every use
create table if not exists auth.refresh_tokens (
  id bigserial primary key,
  token_hash text not null unique,
  user_id uuid not null references auth.users (id) on delete cascade,
  session_id uuid not null references auth.sessions (id) on delete cascade,
  parent_hash text,
  revoked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists refresh_tokens_session_idx on auth.refresh_tokens (session_id);

alter table auth.users owner to supabase_auth_admin;
alter table auth.sessions owner to supabase_auth_admin;
alter table auth.refresh_tokens owner to supabase_auth_admin;
alter sequence auth.refresh_tokens_id_seq owner to supabase_auth_admin;
grant all on all tables in schema auth to postgres, supabase_auth_admin;
grant all on all sequences in schema auth to postgres, supabase_auth_admin;
-- the API roles may reference auth.users (foreign keys, joins in policies) but not read it
grant references on auth.users to authenticated, service_role;
grant select on auth.users to service_role;

-- Supabase's definitions: claims come from request.jwt.claims (the current form) or the
-- legacy per-claim settings.
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to postgres, anon, authenticated, service_role;

-- Realtime publication: projects add their tables to it ------------------------------
do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end $$;

-- PostgREST schema cache reload on DDL, as the platform installs it ------------------
create or replace function extensions.pgrst_ddl_watch() returns event_trigger
language plpgsql
as $$
declare
  cmd record;
begin
  for cmd in select * from pg_event_trigger_ddl_commands() loop
    if cmd.command_tag in (
      'CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
      'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE VIEW',
      'ALTER VIEW', 'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW',
      'CREATE FUNCTION', 'ALTER FUNCTION', 'CREATE TRIGGER', 'CREATE TYPE', 'ALTER TYPE',
      'CREATE RULE', 'COMMENT', 'GRANT', 'REVOKE', 'CREATE POLICY', 'ALTER POLICY'
    ) and cmd.schema_name is distinct from 'pg_temp' then
      notify pgrst, 'reload schema';
      return;
    end if;
  end loop;
end $$;

create or replace function extensions.pgrst_drop_watch() returns event_trigger
language plpgsql
as $$
declare
  obj record;
begin
  for obj in select * from pg_event_trigger_dropped_objects() loop
    if obj.object_type in ('schema', 'table', 'foreign table', 'view', 'materialized view',
                           'function', 'trigger', 'type', 'rule')
       and obj.is_temporary is false then
      notify pgrst, 'reload schema';
      return;
    end if;
  end loop;
end $$;

do $$
begin
  if not exists (select 1 from pg_event_trigger where evtname = 'pgrst_ddl_watch') then
    create event trigger pgrst_ddl_watch on ddl_command_end execute procedure extensions.pgrst_ddl_watch();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'pgrst_drop_watch') then
    create event trigger pgrst_drop_watch on sql_drop execute procedure extensions.pgrst_drop_watch();
  end if;
end $$;

-- The local REST layer's one-round-trip executor ---------------------------------
-- Lives in a schema no API role can use. The gateway (connected as authenticator)
-- calls it outside any open transaction: it switches to the request's role and claims
-- with transaction-local settings, then runs the generated statement with EXECUTE, so
-- the statement's permissions and RLS are resolved as that role. Local settings vanish
-- when the implicit transaction ends, so pooled connections carry no state.
create schema if not exists _rackpilot_rest authorization supabase_admin;
revoke all on schema _rackpilot_rest from public;
grant usage on schema _rackpilot_rest to authenticator;

do $$
begin
  if not exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = '_rackpilot_rest' and t.typname = 'result') then
    create type _rackpilot_rest.result as (body text, page_total bigint, total bigint, status text, headers text);
  end if;
end $$;

-- p_single: the client asked for one object (Accept: application/vnd.pgrst.object+json);
-- any other row count raises PT406 so that a write touching 0 or 2+ rows rolls back.
-- p_stmt: when not null, p_sql runs as the session's prepared statement of that name
-- (created first when p_prepare), so its plan is cached instead of re-planned on every
-- request; Postgres re-checks such plans when the role (RLS), search_path or schema change.
-- p_sql is only read when p_stmt is null or p_prepare: callers may pass null otherwise.
drop function if exists _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[]);
drop function if exists _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean);
create or replace function _rackpilot_rest.run(
  p_role text, p_claims text, p_method text, p_path text, p_headers text,
  p_search_path text, p_read_only boolean, p_sql text, p_args text[], p_single boolean,
  p_stmt text, p_prepare boolean
) returns _rackpilot_rest.result
language plpgsql
security invoker
-- no SET clause on purpose: one routes every call through fmgr_security_definer, which
-- saves and restores the GUC state around it (a few per cent of this hot path in a perf
-- profile); the session default plan_cache_mode (auto) is what the statements get anyway
as $$
declare
  r _rackpilot_rest.result;
begin
  -- one PERFORM: each plpgsql statement is an executor run of its own, and this is the hot path
  perform set_config('role', p_role, true), set_config('request.jwt.claims', p_claims, true),
          set_config('request.method', p_method, true), set_config('request.path', p_path, true),
          set_config('request.headers', p_headers, true), set_config('search_path', p_search_path, true),
          set_config('transaction_read_only', case when p_read_only then 'on' else 'off' end, true);
  if p_stmt is null then
    execute p_sql into r.body, r.page_total, r.total using p_args;
  else
    if p_prepare and not exists (select 1 from pg_prepared_statements where name = p_stmt) then
      execute format('prepare %I(text[]) as %s', p_stmt, p_sql);
    end if;
    execute format('execute %I(%L)', p_stmt, p_args) into r.body, r.page_total, r.total;
  end if;
  if p_single and r.page_total is distinct from 1 then
    raise exception 'JSON object requested, multiple (or no) rows returned'
      using errcode = 'PT406', detail = format('The result contains %s rows', coalesce(r.page_total, 0)),
            hint = 'rackpilot.single';
  end if;
  r.status := nullif(current_setting('response.status', true), '');
  r.headers := nullif(current_setting('response.headers', true), '');
  return r;
end
$$;
revoke all on function _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean, text, boolean) from public;
grant execute on function _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean, text, boolean) to authenticator;
