-- rackpilot control plane, part 1: application roles and the helpers every RLS policy uses.
--
-- Roles form a ladder, declared in order so that enum comparison is the ladder:
--   viewer < operator < approver < admin
-- has_role(r) is true when the caller's role is r or any role above it (an admin can do
-- everything an approver can, and so on). policies/access.yaml spells out, per table, the
-- roles that may act; tests hold the live database to that file.
--
-- Users without a row in user_roles have no application role and see nothing.

create type public.app_role as enum ('viewer', 'operator', 'approver', 'admin');
comment on type public.app_role is
  'Application roles, least to most privileged; has_role() treats each as including those below it.';

create table public.user_roles (
  user_id    uuid primary key references auth.users (id) on delete cascade,
  role       public.app_role not null,
  granted_by uuid references auth.users (id) on delete set null,
  granted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- where the role came from (directory sign-in and sync: 20261206170100_identity.sql)
  source     text not null default 'manual' constraint user_roles_source_check check (source in ('manual', 'directory'))
);
comment on table public.user_roles is 'One application role per user (rackpilot dev user add, or an admin).';
comment on column public.user_roles.source is
  'manual: granted by an admin; directory: set from directory groups at sign-in and by the sync.';

-- Runs as the table owner so that policies on user_roles itself can call it without
-- recursing into user_roles' own RLS.
create function public.current_app_role()
returns public.app_role
language sql
stable
security definer
set search_path = ''
as $$
  select ur.role from public.user_roles ur where ur.user_id = auth.uid()
$$;
comment on function public.current_app_role() is
  'The calling user''s application role, or null for anonymous callers and users without one.';

create function public.has_role(p_role public.app_role)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(public.current_app_role() >= p_role, false)
$$;
comment on function public.has_role(public.app_role) is
  'True when the caller holds p_role or a higher role (admin > approver > operator > viewer).';

revoke execute on function public.current_app_role() from public;
revoke execute on function public.has_role(public.app_role) from public;
grant execute on function public.current_app_role() to anon, authenticated, service_role;
grant execute on function public.has_role(public.app_role) to anon, authenticated, service_role;

-- Function conventions in rackpilot's schema: SECURITY DEFINER functions pin
-- search_path = '' (nothing a caller sets can redirect them). Invoker functions (triggers,
-- small helpers) qualify every name instead and carry no SET clause: a SET clause costs a
-- configuration save/restore on every call and keeps SQL helpers from being inlined, which
-- matters for triggers that fire on every claimed job.

-- Generic updated_at maintenance for every table that has the column.
create function public.touch_updated_at()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger user_roles_touch before update on public.user_roles
  for each row execute function public.touch_updated_at();
