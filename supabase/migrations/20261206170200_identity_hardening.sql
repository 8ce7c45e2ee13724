-- rackpilot identity, part 3: two holes a hostile caller could use.
--
-- 1. A break-glass session is an admin for minutes; through REST it could grant its own
--    account a permanent role in user_roles and outlive its time box. Break-glass accounts
--    never hold a user_roles row: refused whoever asks, and provisioning refuses an account
--    whose user already has one.
-- 2. idm-login "begin" is open to the anon key. Issued (never submitted) requests no longer
--    count against the site's cap (max_open_requests now counts submitted ones), so nobody
--    can fill it with requests they never complete; and one client (the address the platform
--    puts last in X-Forwarded-For) may begin at most identity_policy.begin_per_client_per_min
--    sign-ins a minute.

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

create or replace function public.breakglass_provision(p_name text, p_user_id uuid, p_secret_hash text,
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

alter table public.identity_policy
  add column begin_per_client_per_min integer not null default 60 check (begin_per_client_per_min between 1 and 100000);
alter table public.idm_login_requests add column client text check (length(client) <= 64);
create index idm_login_requests_client_idx on public.idm_login_requests (client, created_at);

drop function public.idm_begin_login(uuid);
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
revoke execute on function public.idm_begin_login(uuid, text), public.user_roles_no_breakglass()
  from public, anon, authenticated;
