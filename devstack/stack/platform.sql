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

-- one-time tokens of admin generate_link (magic links), verified by POST /verify; stored as
-- sha256 of the hashed_token the admin API hands out, single use, short-lived
create table if not exists auth.one_time_tokens (
  id uuid primary key default extensions.gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  token_type text not null,
  token_hash text not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);
create index if not exists one_time_tokens_user_idx on auth.one_time_tokens (user_id);
alter table auth.one_time_tokens owner to supabase_auth_admin;

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

-- Realtime's own schema (Supabase Realtime creates it in every project) -------------
-- realtime.messages carries Realtime Authorization and broadcast from the database:
-- - a private channel (join config private: true) is authorised by RLS policies on
--   realtime.messages, evaluated as the joining role with its JWT claims and
--   realtime.topic() set to the channel's topic: SELECT on a row of extension
--   'broadcast' or 'presence' lets it join and receive; INSERT lets it send;
-- - a row inserted (realtime.send, realtime.broadcast_changes) is broadcast to the
--   channels of its topic: private rows to private channels whose users may read it,
--   public rows to public ones.
-- Same shape as Supabase's (partitioned by inserted_at; the local stack keeps one default
-- partition and Realtime deletes rows older than three days). RLS is on and no policy is
-- made here: until a migration adds some, only service_role joins private channels.
create schema if not exists realtime authorization supabase_admin;
grant supabase_realtime_admin to postgres;
grant usage on schema realtime to postgres, anon, authenticated, service_role, supabase_realtime_admin;
grant create on schema realtime to supabase_realtime_admin;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  constraint messages_pkey primary key (id, inserted_at)
) partition by range (inserted_at);
create table if not exists realtime.messages_default partition of realtime.messages default;
create index if not exists messages_inserted_at_topic_index on only realtime.messages
  using btree (inserted_at desc, topic) where extension = 'broadcast' and private is true;
alter table realtime.messages owner to supabase_realtime_admin;
alter table realtime.messages_default owner to supabase_realtime_admin;
alter table realtime.messages enable row level security;
grant all on realtime.messages, realtime.messages_default to supabase_realtime_admin;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;
grant delete, truncate, references, trigger on realtime.messages to postgres;

create or replace function realtime.topic() returns text
language sql stable
as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- Supabase's definition: the payload gains an "id" (the message's) unless it has one,
-- and a failure is a warning, never the caller's error.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;

create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void
language plpgsql
as $$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
    row_data := jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                   'table', table_name, 'schema', table_schema);
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception
  when others then
    raise exception 'Failed to process the row: %', sqlerrm;
end;
$$;

alter function realtime.topic() owner to supabase_realtime_admin;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
alter function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  owner to supabase_realtime_admin;
grant execute on function realtime.topic() to postgres, anon, authenticated, service_role;

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

drop function if exists _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[]);
drop function if exists _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean);
-- run() answers through OUT parameters, not a named composite type: plpgsql looks a
-- variable's named type up again by name when the type cache was invalidated (a cache
-- reset under heavy DDL), and after the role switch that lookup runs as the caller, who may
-- not use this schema ("permission denied for schema _rackpilot_rest"). The earlier run()
-- returned _rackpilot_rest.result; a return type cannot be replaced, so the type goes, and
-- the run() that returns it with it (nothing else uses the type).
drop type if exists _rackpilot_rest.result cascade;

-- p_single: the client asked for one object (Accept: application/vnd.pgrst.object+json);
-- any other row count raises PT406 so that a write touching 0 or 2+ rows rolls back.
-- p_stmt: when not null, p_sql runs as the session's prepared statement of that name
-- (created first when p_prepare), so its plan is cached instead of re-planned on every
-- request; Postgres re-checks such plans when the role (RLS), search_path or schema change.
-- p_sql is only read when p_stmt is null or p_prepare: callers may pass null otherwise.
create or replace function _rackpilot_rest.run(
  p_role text, p_claims text, p_method text, p_path text, p_headers text,
  p_search_path text, p_read_only boolean, p_sql text, p_args text[], p_single boolean,
  p_stmt text, p_prepare boolean,
  out body text, out page_total bigint, out total bigint, out status text, out headers text
)
language plpgsql
security invoker
-- no SET clause on purpose: one routes every call through fmgr_security_definer, which
-- saves and restores the GUC state around it (a few per cent of this hot path in a perf
-- profile); the session default plan_cache_mode (auto) is what the statements get anyway
as $$
begin
  -- one PERFORM: each plpgsql statement is an executor run of its own, and this is the hot path
  perform set_config('role', p_role, true), set_config('request.jwt.claims', p_claims, true),
          set_config('request.method', p_method, true), set_config('request.path', p_path, true),
          set_config('request.headers', p_headers, true), set_config('search_path', p_search_path, true),
          set_config('transaction_read_only', case when p_read_only then 'on' else 'off' end, true);
  if p_stmt is null then
    execute p_sql into body, page_total, total using p_args;
  else
    if p_prepare and not exists (select 1 from pg_prepared_statements s where s.name = p_stmt) then
      execute format('prepare %I(text[]) as %s', p_stmt, p_sql);
    end if;
    execute format('execute %I(%L)', p_stmt, p_args) into body, page_total, total;
  end if;
  if p_single and page_total is distinct from 1 then
    raise exception 'JSON object requested, multiple (or no) rows returned'
      using errcode = 'PT406', detail = format('The result contains %s rows', coalesce(page_total, 0)),
            hint = 'rackpilot.single';
  end if;
  status := nullif(current_setting('response.status', true), '');
  headers := nullif(current_setting('response.headers', true), '');
end
$$;
revoke all on function _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean, text, boolean) from public;
grant execute on function _rackpilot_rest.run(text, text, text, text, text, text, boolean, text, text[], boolean, text, boolean) to authenticator;

-- Accept: application/vnd.pgrst.plan: EXPLAIN (p_options, built by the REST layer from
-- a fixed list) of the statement run() would run, with the same role and settings, so the
-- plan is the caller's (RLS included). Text plans come back as lines joined by newlines.
create or replace function _rackpilot_rest.explain(
  p_role text, p_claims text, p_method text, p_path text, p_headers text,
  p_search_path text, p_read_only boolean, p_sql text, p_args text[], p_options text
) returns text
language plpgsql
security invoker
as $$
declare
  line text;
  lines text[] := array[]::text[];
begin
  perform set_config('role', p_role, true), set_config('request.jwt.claims', p_claims, true),
          set_config('request.method', p_method, true), set_config('request.path', p_path, true),
          set_config('request.headers', p_headers, true), set_config('search_path', p_search_path, true),
          set_config('transaction_read_only', case when p_read_only then 'on' else 'off' end, true);
  for line in execute format('explain (%s) %s', p_options, p_sql) using p_args loop
    lines := lines || line;
  end loop;
  return array_to_string(lines, E'\n');
end
$$;
revoke all on function _rackpilot_rest.explain(text, text, text, text, text, text, boolean, text, text[], text) from public;
grant execute on function _rackpilot_rest.explain(text, text, text, text, text, text, boolean, text, text[], text) to authenticator;
