-- rackpilot identity: a client address over its begin limit is told so (429 rate_limited),
-- not "busy".
--
-- idm_begin_login refused the (begin_per_client_per_min + 1)-th begin of one address in a
-- minute with 'busy: too many sign-ins from this address; retry in a minute'. idm-login
-- answers an unknown "busy:" code as 409 busy, the same code as a locked row (55P03), and
-- a busy answer reads as "retry it now": the console's sign-in tried again three times in
-- 1.4 s, inside the same minute, and a reader took the refusal for a lock held somewhere.
-- It is the per-address limit, like the failed sign-in limit beside it
-- (20261208130100_idm_sign_in_failures.sql: 429 rate_limited), and is now answered the
-- same way. 'busy' stays for what does clear in a moment: too many sign-ins in flight for
-- the site (max_open_requests).
--
-- The body is 20261206170200_identity_hardening.sql's but for that message.

create or replace function public.idm_begin_login(p_site_id uuid, p_client text)
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
    raise exception using errcode = 'P0001',
      message = 'rate_limited: too many sign-ins from this address; try again in a minute';
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
revoke execute on function public.idm_begin_login(uuid, text) from public, anon, authenticated;
