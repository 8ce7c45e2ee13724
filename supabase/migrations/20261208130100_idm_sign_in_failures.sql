-- rackpilot identity: failed directory sign-ins are limited per client address.
--
-- idm-login is open to the anon key. Until now its direct path would bind to the site's
-- directory for every password anyone sent: an open, unmetered guessing service in front
-- of the directory (and, where the directory locks accounts after failures, a way to lock
-- its users out from the internet). The executor path was limited only in how many
-- sign-ins one address may begin.
--
-- Now a credential failure (invalid_credentials, account_locked, account_disabled,
-- user_not_found) on either path is counted per (site, client address) in a one-minute
-- window; once identity_policy.sign_in_failures_per_client_per_min is reached, that address
-- gets 429 rate_limited for the rest of the window on that site, before any bind, whatever
-- password it sends. Other addresses and sites are not affected. A user in no mapped group
-- gave the right password and is not counted. Every counted failure is audited
-- (idm.sign_in_failed: site, user name as typed, address, reason, count; never a password).
-- The client address is the last X-Forwarded-For hop (the platform's proxy appends it).

alter table public.identity_policy
  add column sign_in_failures_per_client_per_min integer not null default 20
    check (sign_in_failures_per_client_per_min between 1 and 100000);
comment on column public.identity_policy.sign_in_failures_per_client_per_min is
  'failed directory sign-ins one client address may make per site in a minute before it is refused (429) for the rest of that minute';

create table public.idm_sign_in_failures (
  site_id      uuid not null references public.sites (id) on delete cascade,
  client       text not null check (length(client) <= 64),
  window_start timestamptz not null default now(),
  failures     integer not null default 0 check (failures >= 0),
  constraint idm_sign_in_failures_pkey primary key (site_id, client)
);
alter table public.idm_sign_in_failures enable row level security;
revoke all on table public.idm_sign_in_failures from public, anon, authenticated;
comment on table public.idm_sign_in_failures is
  'failed directory sign-ins per site and client address in the current minute; no API role reads or writes it';

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

revoke all on function public.idm_client_limited(uuid, text) from public, anon, authenticated;
revoke all on function public.idm_client_failed(uuid, text, text, text, text) from public, anon, authenticated;
-- only idm-login's own database connection calls them
