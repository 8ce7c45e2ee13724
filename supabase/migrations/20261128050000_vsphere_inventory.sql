-- rackpilot control plane: vCenter inventory sync for the executor.
--
-- vsphere_sync_inventory() takes one vCenter's inventory in a few requests (the REST layer
-- caps a body at 1 MiB, so a large vCenter's VMs come in chunks) and applies each set-wise in
-- one transaction, epoch-checked like every executor write. Each part of p_inventory is
-- optional and handled when present:
--   clusters + hosts   upserted; clusters/hosts not listed are vanished
--   vms                a chunk of VMs, upserted (hosts must be stored first)
--   vm_hashes          {moref: hash} of every VM this sync read: VMs not listed are
--                      vanished, and the answer's vms_stale names the VMs whose row is
--                      absent, marked missing or holds another hash; only those are sent
--   vm_morefs          every VM moref of this sync, without hashes (an older executor)
--   safety             per-cluster safety status, recorded when changed
-- A sync interrupted between requests leaves rows of the previous and the current state;
-- every request is idempotent and the next sync completes it.
--   * upserts by (vcenter_id, moref); a row is only rewritten when a value changed, so a
--     repeated sync of an unchanged vCenter writes nothing (and wakes no Realtime listener);
--   * objects the vCenter no longer reports get missing_since (or are deleted with p_prune);
--     an object that comes back has missing_since cleared;
--   * hosts are linked to Dell servers of the same site by service tag, else by BMC address;
--   * a cluster safety status is recorded only when it differs from the last one, and each
--     change (not a cluster's first observation) is queued in notification_outbox for
--     settings subscribed to cluster_safety_changed.
--   * a re-sync of an unchanged vCenter is one request that writes no VM: the executor
--     stores a content hash with every VM row (vms.sync_hash, a hash of the row it sent);
--     vms_sync_hash_guard clears it when anyone but the sync writes the row (an admin's
--     correction, even one that sets sync_hash) or its host is deleted, so the next sync
--     sends the VM again and puts the vCenter's values back;
--   * a request holding only a chunk of VMs takes a share lock on the vCenter row and leaves
--     it unwritten, so chunks of one sync do not queue behind each other's row lock;
--   * the VMs, hosts and clusters a sync no longer sees are found in one pass: the moref
--     list is a JSON object keyed by moref (vm_morefs is turned into one) and each stored
--     row is looked up in it with ? (a binary search on the object's sorted keys), whatever
--     the plan (an anti-join against the unnested list ran as a 3,200 x 3,200 nested loop).
-- Errors (SQLSTATE 22023 invalid_argument, P0001 not_found / stale_epoch) as in the
-- executor RPC migration. The columns the sync keeps (missing_since, details, sync_hash) are
-- in the inventory tables (20261128010100_inventory.sql).

create function public.vms_sync_hash_guard()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- vsphere_sync_inventory() marks its own writes; its hash stays only while the row holds
  -- the values it was computed from (its host deleted in the same sync: cleared too)
  if coalesce(current_setting('rackpilot.vsphere_sync', true), '') <> 'on'
     or (new.sync_hash is not distinct from old.sync_hash
         and (old.host_id, old.name, old.power_state, old.has_usb_passthrough, old.has_pci_passthrough, old.has_vgpu,
              old.ft_enabled, old.cdrom_connected, old.on_local_storage, old.details)
             is distinct from
             (new.host_id, new.name, new.power_state, new.has_usb_passthrough, new.has_pci_passthrough, new.has_vgpu,
              new.ft_enabled, new.cdrom_connected, new.on_local_storage, new.details)) then
    new.sync_hash := null;
  end if;
  return new;
end
$$;

revoke execute on function public.vms_sync_hash_guard() from public, anon, authenticated;
create trigger vms_sync_hash_guard before update on public.vms for each row
  when (new.sync_hash is not null)
  execute function public.vms_sync_hash_guard();

create function public.vsphere_normalise_address(p_address text)
returns text
language sql
immutable
set search_path = ''
as $$
  -- "https://10.0.0.5:443/" and "10.0.0.5:443" name the same BMC
  select nullif(rtrim(lower(regexp_replace(coalesce(p_address, ''), '^[a-z]+://', '')), '/'), '')
$$;

create function public.vsphere_sync_inventory(
  p_executor_id uuid,
  p_job_id uuid,
  p_epoch bigint,
  p_vcenter_id uuid,
  p_inventory jsonb,
  p_prune boolean default false
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job       public.jobs%rowtype;
  v_vc        public.vcenters%rowtype;
  v_now       timestamptz := now();
  v_has_hosts boolean := p_inventory ? 'hosts';
  v_has_hashes boolean := p_inventory ? 'vm_hashes';
  v_has_vms   boolean := p_inventory ? 'vm_morefs' or p_inventory ? 'vm_hashes';
  -- a chunk of VMs only: reads the vCenter row, does not lock it against other chunks
  v_vms_only  boolean := not exists (select 1 from jsonb_object_keys(p_inventory) k where k <> 'vms');
  v_clusters  jsonb := coalesce(p_inventory -> 'clusters', '[]'::jsonb);
  v_hosts     jsonb := coalesce(p_inventory -> 'hosts', '[]'::jsonb);
  v_vms       jsonb := coalesce(p_inventory -> 'vms', '[]'::jsonb);
  v_safety    jsonb := coalesce(p_inventory -> 'safety', '[]'::jsonb);
  v_morefs    jsonb := coalesce(p_inventory -> 'vm_morefs', '[]'::jsonb);
  v_hashes    jsonb := coalesce(p_inventory -> 'vm_hashes', '{}'::jsonb);
  v_seen      jsonb := '{}'::jsonb;  -- moref -> anything: every VM of this sync, looked up with ?
  v_seen_n    integer := 0;
  v_hosts_seen    jsonb;  -- moref -> true, as v_seen
  v_clusters_seen jsonb;
  v_stale     jsonb := '[]'::jsonb;
  c_changed   integer; c_missing integer;
  h_changed   integer; h_missing integer;
  m_changed   integer; m_missing integer;
  v_linked    integer;
  v_changes   jsonb;
begin
  v_job := public.fence_job(p_executor_id, p_job_id, p_epoch);
  -- this transaction's VM writes are the sync's own (see vms_sync_hash_guard)
  perform set_config('rackpilot.vsphere_sync', 'on', true);
  if p_inventory is null or jsonb_typeof(p_inventory) <> 'object' then
    raise exception using errcode = '22023', message = 'invalid_argument: inventory must be a JSON object';
  end if;
  if jsonb_typeof(v_clusters) <> 'array' or jsonb_typeof(v_hosts) <> 'array' or jsonb_typeof(v_vms) <> 'array'
     or jsonb_typeof(v_safety) <> 'array' or jsonb_typeof(v_morefs) <> 'array' then
    raise exception using errcode = '22023',
      message = 'invalid_argument: clusters, hosts, vms, vm_morefs and safety must be arrays';
  end if;
  if jsonb_typeof(v_hashes) <> 'object'
     or exists (select 1 from jsonb_each(v_hashes) e where jsonb_typeof(e.value) <> 'string') then
    raise exception using errcode = '22023',
      message = 'invalid_argument: vm_hashes must be an object of moref -> hash strings';
  end if;
  if p_inventory ? 'vm_morefs' and v_has_hashes then
    raise exception using errcode = '22023', message = 'invalid_argument: send vm_morefs or vm_hashes, not both';
  end if;
  if v_has_hashes then
    v_seen := v_hashes;
  elsif p_inventory ? 'vm_morefs' then
    select coalesce(jsonb_object_agg(e, true), '{}'::jsonb) into v_seen from jsonb_array_elements_text(v_morefs) e;
  end if;
  select count(*) into v_seen_n from jsonb_object_keys(v_seen);
  if v_vms_only then
    select * into v_vc from public.vcenters where id = p_vcenter_id for share;
  else
    select * into v_vc from public.vcenters where id = p_vcenter_id for update;
  end if;
  if not found or v_vc.site_id <> v_job.site_id then
    raise exception using errcode = 'P0001', message = format('not_found: no vCenter %s at the job''s site', p_vcenter_id);
  end if;

  if not v_vms_only then
    update public.vcenters
       set version = coalesce(p_inventory ->> 'version', version), last_sync_at = v_now, missing_since = null
     where id = p_vcenter_id;
  end if;

  -- clusters ------------------------------------------------------------------------------
  with src as (
    select * from jsonb_to_recordset(v_clusters) as x(moref text, name text, ha_enabled boolean,
      ha_admission_control boolean, drs_enabled boolean, drs_automation text, details jsonb)
  ), up as (
    insert into public.clusters as c (vcenter_id, site_id, name, moref, ha_enabled, ha_admission_control,
                                      drs_enabled, drs_automation, details, last_sync_at)
    select p_vcenter_id, v_vc.site_id, s.name, s.moref, s.ha_enabled, s.ha_admission_control, s.drs_enabled,
           nullif(s.drs_automation, ''), coalesce(s.details, '{}'::jsonb), v_now
      from src s
    on conflict (vcenter_id, moref) do update
       set name = excluded.name, ha_enabled = excluded.ha_enabled,
           ha_admission_control = excluded.ha_admission_control, drs_enabled = excluded.drs_enabled,
           drs_automation = excluded.drs_automation, details = excluded.details, missing_since = null,
           last_sync_at = excluded.last_sync_at
     where (c.name, c.ha_enabled, c.ha_admission_control, c.drs_enabled, c.drs_automation, c.details, c.missing_since)
           is distinct from (excluded.name, excluded.ha_enabled, excluded.ha_admission_control, excluded.drs_enabled,
                             excluded.drs_automation, excluded.details, null::timestamptz)
    returning 1
  )
  select count(*) into c_changed from up;

  -- hosts: cluster by moref, server by service tag, else by BMC address -------------------
  with src as (
    select * from jsonb_to_recordset(v_hosts) as x(moref text, name text, cluster_moref text, esxi_version text,
      esxi_build text, connection_state text, in_maintenance boolean, power_state text, service_tag text,
      bmc_address text)
  ), resolved as (
    select s.*, c.id as cluster_id,
           coalesce(
             (select sv.id from public.servers sv
               where sv.site_id = v_vc.site_id and s.service_tag <> '' and sv.service_tag = upper(s.service_tag)
               limit 1),
             (select sv.id from public.servers sv
               where sv.site_id = v_vc.site_id and s.bmc_address <> ''
                 and public.vsphere_normalise_address(sv.idrac_address) = public.vsphere_normalise_address(s.bmc_address)
               limit 1)) as server_id
      from src s
      left join public.clusters c on c.vcenter_id = p_vcenter_id and c.moref = s.cluster_moref
  ), linkable as (
    -- a server already linked to another host keeps that link (a unique index guards it)
    select r.*, case when r.server_id is null or exists (
                   select 1 from public.esxi_hosts o
                    where o.server_id = r.server_id and not (o.vcenter_id = p_vcenter_id and o.moref = r.moref))
                 then null else r.server_id end as link_id
      from resolved r
  ), up as (
    insert into public.esxi_hosts as h (vcenter_id, cluster_id, server_id, name, moref, esxi_version, esxi_build,
                                        connection_state, in_maintenance, power_state, last_sync_at)
    select p_vcenter_id, l.cluster_id, l.link_id, l.name, l.moref, nullif(l.esxi_version, ''),
           nullif(l.esxi_build, ''), l.connection_state::public.connection_state, coalesce(l.in_maintenance, false),
           l.power_state::public.power_state, v_now
      from linkable l
    on conflict (vcenter_id, moref) do update
       set cluster_id = excluded.cluster_id, server_id = coalesce(excluded.server_id, h.server_id),
           name = excluded.name, esxi_version = excluded.esxi_version, esxi_build = excluded.esxi_build,
           connection_state = excluded.connection_state, in_maintenance = excluded.in_maintenance,
           power_state = excluded.power_state, missing_since = null, last_sync_at = excluded.last_sync_at
     where (h.cluster_id, h.server_id, h.name, h.esxi_version, h.esxi_build, h.connection_state, h.in_maintenance,
            h.power_state, h.missing_since)
           is distinct from (excluded.cluster_id, coalesce(excluded.server_id, h.server_id), excluded.name,
                             excluded.esxi_version, excluded.esxi_build, excluded.connection_state,
                             excluded.in_maintenance, excluded.power_state, null::timestamptz)
    returning 1
  )
  select count(*) into h_changed from up;

  -- VMs -------------------------------------------------------------------------------------
  m_changed := 0;
  if jsonb_array_length(v_vms) > 0 then
    with src as (
      select * from jsonb_to_recordset(v_vms) as x(moref text, name text, host_moref text, power_state text,
        has_usb_passthrough boolean, has_pci_passthrough boolean, has_vgpu boolean, ft_enabled boolean,
        cdrom_connected boolean, on_local_storage boolean, details jsonb, sync_hash text)
    ), up as (
      insert into public.vms as v (vcenter_id, host_id, name, moref, power_state, has_usb_passthrough,
                                   has_pci_passthrough, has_vgpu, ft_enabled, cdrom_connected, on_local_storage,
                                   details, sync_hash, last_sync_at)
      select p_vcenter_id, h.id, s.name, s.moref, s.power_state::public.power_state,
             coalesce(s.has_usb_passthrough, false), coalesce(s.has_pci_passthrough, false),
             coalesce(s.has_vgpu, false), coalesce(s.ft_enabled, false), coalesce(s.cdrom_connected, false),
             coalesce(s.on_local_storage, false), coalesce(s.details, '{}'::jsonb), nullif(s.sync_hash, ''), v_now
        from src s
        left join public.esxi_hosts h on h.vcenter_id = p_vcenter_id and h.moref = s.host_moref
      on conflict (vcenter_id, moref) do update
         set host_id = excluded.host_id, name = excluded.name, power_state = excluded.power_state,
             has_usb_passthrough = excluded.has_usb_passthrough, has_pci_passthrough = excluded.has_pci_passthrough,
             has_vgpu = excluded.has_vgpu, ft_enabled = excluded.ft_enabled,
             cdrom_connected = excluded.cdrom_connected, on_local_storage = excluded.on_local_storage,
             details = excluded.details, sync_hash = excluded.sync_hash, missing_since = null,
             last_sync_at = excluded.last_sync_at
       where (v.host_id, v.name, v.power_state, v.has_usb_passthrough, v.has_pci_passthrough, v.has_vgpu,
              v.ft_enabled, v.cdrom_connected, v.on_local_storage, v.details, v.sync_hash, v.missing_since)
             is distinct from (excluded.host_id, excluded.name, excluded.power_state, excluded.has_usb_passthrough,
                               excluded.has_pci_passthrough, excluded.has_vgpu, excluded.ft_enabled,
                               excluded.cdrom_connected, excluded.on_local_storage, excluded.details,
                               excluded.sync_hash, null::timestamptz)
      returning 1
    )
    select count(*) into m_changed from up;
  end if;

  -- vanished objects ---------------------------------------------------------------------------
  if v_has_vms then
    if p_prune then
      delete from public.vms v where v.vcenter_id = p_vcenter_id and not (v_seen ? v.moref);
    else
      update public.vms v set missing_since = v_now
       where v.vcenter_id = p_vcenter_id and v.missing_since is null and not (v_seen ? v.moref);
    end if;
    get diagnostics m_missing = row_count;
  end if;
  if v_has_hashes then
    -- the VMs to send: new, vanished before, or stored from other values (or changed by
    -- someone else since: vms_sync_hash_guard cleared their hash)
    select coalesce(jsonb_agg(e.key order by e.key), '[]'::jsonb) into v_stale
      from jsonb_each_text(v_hashes) e
      left join public.vms v on v.vcenter_id = p_vcenter_id and v.moref = e.key
     where v.id is null or v.missing_since is not null or v.sync_hash is distinct from e.value;
  end if;
  if v_has_hosts then
    select coalesce(jsonb_object_agg(e ->> 'moref', true), '{}'::jsonb) into v_hosts_seen
      from jsonb_array_elements(v_hosts) e where e ->> 'moref' is not null;
    select coalesce(jsonb_object_agg(e ->> 'moref', true), '{}'::jsonb) into v_clusters_seen
      from jsonb_array_elements(v_clusters) e where e ->> 'moref' is not null;
    if p_prune then
      delete from public.esxi_hosts h where h.vcenter_id = p_vcenter_id and not (v_hosts_seen ? h.moref);
      get diagnostics h_missing = row_count;
      delete from public.clusters c where c.vcenter_id = p_vcenter_id and not (v_clusters_seen ? c.moref);
      get diagnostics c_missing = row_count;
    else
      update public.esxi_hosts h set missing_since = v_now
       where h.vcenter_id = p_vcenter_id and h.missing_since is null and not (v_hosts_seen ? h.moref);
      get diagnostics h_missing = row_count;
      update public.clusters c set missing_since = v_now
       where c.vcenter_id = p_vcenter_id and c.missing_since is null and not (v_clusters_seen ? c.moref);
      get diagnostics c_missing = row_count;
    end if;
  end if;

  select count(*) into v_linked from public.esxi_hosts h where h.vcenter_id = p_vcenter_id and h.server_id is not null;

  -- cluster safety: record changes only, and tell subscribers ------------------------------------
  with src as (
    select c.id as cluster_id, x.*
      from jsonb_to_recordset(v_safety) as x(cluster_moref text, status text, hosts_total integer,
             hosts_in_maintenance integer, hosts_disconnected integer, ha_enabled boolean, drs_enabled boolean,
             details jsonb)
      join public.clusters c on c.vcenter_id = p_vcenter_id and c.moref = x.cluster_moref
  ), prev as (
    select distinct on (s.cluster_id) s.cluster_id, s.status::text as status
      from public.cluster_safety_status s
     where s.cluster_id in (select cluster_id from src)
     order by s.cluster_id, s.observed_at desc, s.id desc
  ), changed as (
    select s.*, p.status as previous from src s left join prev p on p.cluster_id = s.cluster_id
     where p.status is distinct from s.status
  ), ins as (
    insert into public.cluster_safety_status (cluster_id, status, hosts_total, hosts_in_maintenance,
                                              hosts_disconnected, ha_enabled, drs_enabled, details)
    select ch.cluster_id, ch.status::public.cluster_safety, ch.hosts_total, ch.hosts_in_maintenance,
           ch.hosts_disconnected, ch.ha_enabled, ch.drs_enabled, coalesce(ch.details, '{}'::jsonb)
      from changed ch
    returning cluster_id, status
  ), outbox as (
    insert into public.notification_outbox (setting_id, event_kind, payload, job_id)
    select ns.id, 'cluster_safety_changed',
           jsonb_build_object('cluster_id', ch.cluster_id, 'cluster_moref', ch.cluster_moref, 'status', ch.status,
                              'previous', ch.previous, 'site_id', v_vc.site_id, 'vcenter_id', p_vcenter_id,
                              'reasons', coalesce(ch.details -> 'reasons', '[]'::jsonb)),
           p_job_id
      from changed ch
      join public.notification_settings ns
        on ns.enabled and 'cluster_safety_changed' = any (ns.events)
       and (ns.site_id is null or ns.site_id = v_vc.site_id)
     -- the first observation of a cluster is recorded, not announced
     where ch.previous is not null
    returning 1
  )
  select coalesce(jsonb_agg(jsonb_build_object('cluster_id', ch.cluster_id, 'status', ch.status,
                                               'previous', ch.previous)), '[]'::jsonb)
    into v_changes
    from changed ch;

  return jsonb_build_object(
    'vcenter_id', p_vcenter_id,
    'clusters', jsonb_build_object('seen', jsonb_array_length(v_clusters), 'changed', c_changed, 'missing', coalesce(c_missing, 0)),
    'hosts', jsonb_build_object('seen', jsonb_array_length(v_hosts), 'changed', h_changed, 'missing', coalesce(h_missing, 0),
                                'linked', v_linked),
    'vms', jsonb_build_object('seen', greatest(jsonb_array_length(v_vms), v_seen_n),
                              'changed', m_changed, 'missing', coalesce(m_missing, 0)),
    'vms_stale', v_stale,
    'safety_changes', v_changes,
    'pruned', coalesce(p_prune, false));
end
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    'public.vsphere_sync_inventory(uuid, uuid, bigint, uuid, jsonb, boolean)',
    'public.vsphere_normalise_address(text)'
  ] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
