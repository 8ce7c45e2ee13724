-- rackpilot control plane: executor RPCs of the Dell handlers (power, virtual media, SCP
-- backup, firmware, compliance, inventory refresh).
--
-- Like the other executor RPCs they run as their owner (SECURITY DEFINER, empty
-- search_path), only the service role may call them, and every call names the executor,
-- the job and its lease epoch: public.fence_job refuses a stale epoch with 'stale_epoch'.
-- Servers and OME instances are touched only when they belong to the job's site.
--
--   executor_latest_artifact      the newest artifact of a kind for a server (SCP backup
--                                 freshness before a firmware update, diff of backups);
--                                 its content only when asked for
--   executor_upsert_server_inventory
--                                 facts and firmware inventory of many servers in one call
--   executor_touch_ome_instance   version and last sync time of an OME instance

create function public.executor_latest_artifact(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_server_id uuid,
  p_kind public.artifact_kind,
  p_with_content boolean default true
)
returns table (id uuid, job_id uuid, sha256 text, size_bytes bigint, content_type text, created_at timestamptz,
               age_seconds double precision, content_base64 text)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_job public.jobs%rowtype;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if p_server_id is null or p_kind is null then
    raise exception using errcode = '22023', message = 'invalid_argument: server id and kind are required';
  end if;
  if not exists (select 1 from public.servers s where s.id = p_server_id and s.site_id = v_job.site_id) then
    raise exception using errcode = '22023',
      message = format('invalid_argument: server %s is not in the job''s site', p_server_id);
  end if;
  return query
  select a.id, a.job_id, a.sha256, a.size_bytes, a.content_type, a.created_at,
         extract(epoch from (now() - a.created_at))::double precision,
         -- base64 without line breaks: the executor decodes it as one string
         case when coalesce(p_with_content, true) then translate(encode(a.content, 'base64'), E'\n', '') end
    from public.artifacts a
   where a.server_id = p_server_id and a.kind = p_kind
   order by a.created_at desc, a.id desc
   limit 1;
end
$$;

-- p_servers: [{"server_id": uuid,
--              "facts": {"model", "service_tag", "bios_version", "idrac_version", "lc_version",
--                        "power_state" (power_state enum), "health" (health_state enum)}  -- all optional
--              "details": {...}      merged into servers.details
--              "firmware": [{"component": text, "fqdd": text, "version": text}]  -- optional;
--                          when given it replaces the server's firmware inventory
--              "seen": true|false    false = the server did not answer (last_seen_at kept)}]
-- Returns the number of servers updated. One malformed element refuses the whole call.
create function public.executor_upsert_server_inventory(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_servers jsonb
)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job   public.jobs%rowtype;
  v_el    jsonb;
  v_sid   uuid;
  v_facts jsonb;
  v_tag   text;
  v_count integer := 0;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  if jsonb_typeof(coalesce(p_servers, 'null'::jsonb)) <> 'array' then
    raise exception using errcode = '22023', message = 'invalid_argument: servers must be a JSON array';
  end if;
  for v_el in select e from jsonb_array_elements(p_servers) e loop
    if jsonb_typeof(v_el) <> 'object' or jsonb_typeof(v_el -> 'server_id') <> 'string' then
      raise exception using errcode = '22023', message = 'invalid_argument: each element needs a server_id';
    end if;
    v_sid := (v_el ->> 'server_id')::uuid;
    if not exists (select 1 from public.servers s where s.id = v_sid and s.site_id = v_job.site_id) then
      raise exception using errcode = '22023',
        message = format('invalid_argument: server %s is not in the job''s site', v_sid);
    end if;
    v_facts := coalesce(v_el -> 'facts', '{}'::jsonb);
    if jsonb_typeof(v_facts) <> 'object' or jsonb_typeof(coalesce(v_el -> 'details', '{}'::jsonb)) <> 'object' then
      raise exception using errcode = '22023', message = 'invalid_argument: facts and details must be objects';
    end if;
    -- only a well-formed tag is kept (servers.service_tag has a format check)
    v_tag := case when upper(v_facts ->> 'service_tag') ~ '^[A-Z0-9]{5,10}$' then upper(v_facts ->> 'service_tag') end;
    update public.servers s
       set model         = coalesce(nullif(v_facts ->> 'model', ''), s.model),
           -- a service tag another server row already holds is not copied (the unique index
           -- would refuse the whole batch); the duplicate shows in details.service_tag_conflict
           service_tag   = case when exists (select 1 from public.servers o
                                              where o.service_tag = v_tag
                                                and o.id <> v_sid)
                                then s.service_tag
                                else coalesce(v_tag, s.service_tag) end,
           bios_version  = coalesce(v_facts ->> 'bios_version', s.bios_version),
           idrac_version = coalesce(v_facts ->> 'idrac_version', s.idrac_version),
           lc_version    = coalesce(v_facts ->> 'lc_version', s.lc_version),
           power_state   = coalesce((v_facts ->> 'power_state')::public.power_state, s.power_state),
           health        = coalesce((v_facts ->> 'health')::public.health_state, s.health),
           details       = s.details || coalesce(v_el -> 'details', '{}'::jsonb)
                             || jsonb_build_object('service_tag_conflict', (
                                  select o.id from public.servers o
                                   where o.service_tag = v_tag and o.id <> v_sid
                                   limit 1)),
           last_seen_at  = case when coalesce((v_el ->> 'seen')::boolean, true) then now() else s.last_seen_at end
     where s.id = v_sid;
    if v_el ? 'firmware' then
      if jsonb_typeof(v_el -> 'firmware') <> 'array'
         or exists (select 1 from jsonb_array_elements(v_el -> 'firmware') f
                     where jsonb_typeof(f) <> 'object' or coalesce(f ->> 'component', '') = ''
                        or coalesce(f ->> 'version', '') = '') then
        raise exception using errcode = '22023',
          message = 'invalid_argument: firmware must be an array of {component, fqdd, version}';
      end if;
      delete from public.server_firmware f where f.server_id = v_sid;
      insert into public.server_firmware (server_id, component, fqdd, version, observed_at)
      select distinct on (f ->> 'component', coalesce(f ->> 'fqdd', ''))
             v_sid, f ->> 'component', coalesce(f ->> 'fqdd', ''), f ->> 'version', now()
        from jsonb_array_elements(v_el -> 'firmware') f;
    end if;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

create function public.executor_touch_ome_instance(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_ome_instance_id uuid,
  p_version text default null
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  update public.ome_instances o
     set last_sync_at = now(), version = coalesce(p_version, o.version)
   where o.id = p_ome_instance_id and o.site_id = v_job.site_id;
  if not found then
    raise exception using errcode = '22023',
      message = format('invalid_argument: OME instance %s is not in the job''s site', p_ome_instance_id);
  end if;
end
$$;

revoke execute on function public.executor_latest_artifact(uuid, uuid, bigint, uuid, public.artifact_kind, boolean)
  from public, anon, authenticated;
revoke execute on function public.executor_upsert_server_inventory(uuid, uuid, bigint, jsonb)
  from public, anon, authenticated;
revoke execute on function public.executor_touch_ome_instance(uuid, uuid, bigint, uuid, text)
  from public, anon, authenticated;
grant execute on function public.executor_latest_artifact(uuid, uuid, bigint, uuid, public.artifact_kind, boolean)
  to service_role;
grant execute on function public.executor_upsert_server_inventory(uuid, uuid, bigint, jsonb) to service_role;
grant execute on function public.executor_touch_ome_instance(uuid, uuid, bigint, uuid, text) to service_role;
