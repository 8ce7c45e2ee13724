-- rackpilot: the break-glass lockout holds per client, not per account.
--
-- Until now five wrong secrets locked a break-glass account for everyone. The anon key is
-- public, so anyone on the network could keep every break-glass account locked during the
-- very outage it exists for, and a 423 for an existing account against a 401 for an
-- unknown one told them which names exist. Break-glass secrets are 256 random bits: the
-- lockout is there to stop a client that keeps guessing, not to protect the secret.
--
-- Now failures are counted per (account name, client address), for unknown names too, so
-- a lockout says nothing about whether the account exists; the client address is the
-- last X-Forwarded-For hop, which the gateway sets and a caller cannot replace. The
-- account's failed_attempts still counts every failure (an admin sees an account under
-- attack); its locked_until is no longer set.

create table public.breakglass_lockouts (
  account_name    text not null check (length(account_name) <= 200),
  client          text not null check (length(client) <= 64),
  failed_attempts integer not null default 0 check (failed_attempts >= 0),
  locked_until    timestamptz,
  updated_at      timestamptz not null default now(),
  constraint breakglass_lockouts_pkey primary key (account_name, client)
);
alter table public.breakglass_lockouts enable row level security;
revoke all on table public.breakglass_lockouts from public, anon, authenticated;
comment on table public.breakglass_lockouts is
  'failed break-glass sign-ins per account name and client address; no API role reads or writes it';

-- A failed attempt from p_client: counted for that client (a window that ended starts the
-- count again), locked out after identity_policy.breakglass_max_failures, audited.
create or replace function public.breakglass_failed(p_name text, p_client text)
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

revoke all on function public.breakglass_failed(text, text) from public, anon, authenticated;
revoke all on function public.breakglass_client_locked(text, text) from public, anon, authenticated;
revoke all on function public.breakglass_client_cleared(text, text) from public, anon, authenticated;
-- only the break-glass function's own database connection calls them
