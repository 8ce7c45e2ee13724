-- rackpilot identity: a cap on failed break-glass attempts per client address, across names.
--
-- The break-glass lockout holds per (account name, client address) so a guesser cannot
-- lock the holder out (20261207150000). A guesser that changes the name every time was not
-- limited at all, and each attempt costs the function a full scrypt (N=2^15, 32 MiB), known
-- name or not: an anonymous address could keep the function's CPU and memory busy during
-- the outage break-glass exists for. Now an address whose failures over all names within
-- identity_policy.breakglass_lockout_s reach breakglass_failures_per_client is refused
-- (429 rate_limited) before any hash is computed, and the refusal is audited
-- (breakglass.rate_limited, severity high). Other addresses are not affected.

alter table public.identity_policy
  add column breakglass_failures_per_client integer not null default 50
    check (breakglass_failures_per_client between 1 and 100000);
comment on column public.identity_policy.breakglass_failures_per_client is
  'failed break-glass attempts one client address may make over all account names within breakglass_lockout_s before it is refused (429)';

create index breakglass_lockouts_client_idx on public.breakglass_lockouts (client, updated_at);

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

revoke all on function public.breakglass_client_busy(text) from public, anon, authenticated;
-- only the break-glass function's own database connection calls it
