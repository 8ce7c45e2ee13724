-- rackpilot control plane, part 2: inventory.
--
-- Everything the executor discovers or an operator registers: sites, executors, sealed
-- credentials, Dell servers (iDRAC), vCenter clusters and hosts, VMs with the device facts
-- the maintenance-mode blocker scan needs, firmware catalogs and per-server firmware,
-- OpenManage Enterprise instances and ZFS replication pairs. Sync jobs keep most of it
-- current through the service role; RLS (a later migration) governs user access.

create type public.power_state as enum ('on', 'off', 'powering_on', 'powering_off', 'unknown');
create type public.health_state as enum ('ok', 'warning', 'critical', 'unknown');
create type public.executor_status as enum ('active', 'disabled');
create type public.credential_kind as enum ('idrac', 'vcenter', 'esxi', 'ome', 'ssh');
create type public.connection_state as enum ('connected', 'disconnected', 'not_responding', 'unknown');
-- the job types (the job model itself: 20261128010200_jobs.sql); an executor names the ones it takes
create type public.job_type as enum (
  'rolling_cluster_update', 'firmware_update', 'power_operation', 'virtual_media_mount',
  'scp_backup', 'esxi_upgrade', 'vcenter_sync', 'replication_sync',
  'inventory_refresh', 'firmware_compliance', 'selftest'
);
comment on type public.job_type is
  'selftest is the executor''s own end-to-end probe job; it touches no infrastructure.';

create table public.sites (
  id          uuid primary key default extensions.gen_random_uuid(),
  name        text not null unique constraint sites_name_check check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  description text not null default '',
  timezone    text not null default 'UTC',
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  -- the BMC call log's retention (bmc_calls, 20261206200100_fleet_intake.sql)
  bmc_call_retention_days integer not null default 30 constraint sites_bmc_call_retention_days_check check (bmc_call_retention_days between 1 and 3650)
);
comment on column public.sites.bmc_call_retention_days is
  'Days the BMC call log (bmc_calls) of this site is kept; older rows are pruned as new ones arrive.';

create table public.executors (
  id                uuid primary key default extensions.gen_random_uuid(),
  site_id           uuid not null references public.sites (id) on delete restrict,
  name              text not null constraint executors_name_check check (length(name) between 1 and 128),
  -- X25519/RSA public key (PEM or base64) that credentials are sealed to, and its id.
  public_key        text not null constraint executors_public_key_check check (length(public_key) between 32 and 8192),
  key_id            text not null constraint executors_key_id_check check (length(key_id) between 1 and 128),
  version           text not null default '' constraint executors_version_check check (length(version) <= 64),
  capabilities      jsonb not null default '{}'::jsonb constraint executors_capabilities_check check (jsonb_typeof(capabilities) = 'object'),
  status            public.executor_status not null default 'active',
  registered_at     timestamptz not null default now(),
  last_heartbeat_at timestamptz not null default now(),
  updated_at        timestamptz not null default now(),
  job_types         public.job_type[],
  -- the heartbeat's metrics (report_executor_metrics, 20261128020000_executor_runtime.sql)
  metrics           jsonb not null default '{}'::jsonb constraint executors_metrics_check check (jsonb_typeof(metrics) = 'object'),
  metrics_at        timestamptz,
  -- an identity is bound to its key; an admin's re-key lets another key take it over
  -- (rekey_executor and register_executor, 20261206150000_executor_identity.sql)
  rekey_requested_at timestamptz,
  rekey_key_id      text constraint executors_rekey_key_id_check check (rekey_key_id is null or length(rekey_key_id) between 1 and 128),
  rekey_requested_by uuid references auth.users (id) on delete set null,
  previous_key_id   text,
  rekeyed_at        timestamptz,
  unique (site_id, name)
);
comment on column public.executors.job_types is 'Job types this executor takes; null means every type.';
comment on column public.executors.metrics is
  'Last metrics the executor reported: jobs in flight, step durations, errors, API p50/p95.';
comment on column public.executors.rekey_requested_at is
  'Set by an admin''s rekey_executor: the next registration with rekey_key_id (any new key when null) takes the identity over.';
comment on column public.executors.previous_key_id is 'The key this identity was bound to before its last re-key.';

create table public.credential_sets (
  id            uuid primary key default extensions.gen_random_uuid(),
  site_id       uuid not null references public.sites (id) on delete cascade,
  name          text not null constraint credential_sets_name_check check (length(name) between 1 and 128),
  kind          public.credential_kind not null,
  -- The secret itself is stored only sealed, one envelope per executor key of the site
  -- (credential_envelopes, 20261128030100_functions_credentials.sql).
  username      text not null constraint credential_sets_username_check check (length(username) between 1 and 256),
  created_by    uuid references auth.users (id) on delete set null default auth.uid(),
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  endpoints     jsonb not null default '[]'::jsonb constraint credential_sets_endpoints_check check (jsonb_typeof(endpoints) = 'array'),
  unique (site_id, name)
);
comment on column public.credential_sets.endpoints is
  'Copy of the endpoints sealed inside the envelope ({scheme, host, port, tls}), for display. The executor '
  'trusts only the envelope; see executor/binding.py.';

create table public.servers (
  id                 uuid primary key default extensions.gen_random_uuid(),
  site_id            uuid not null references public.sites (id) on delete cascade,
  name               text not null constraint servers_name_check check (length(name) between 1 and 128),
  idrac_address      text not null constraint servers_idrac_address_check check (length(idrac_address) between 1 and 255),
  service_tag        text constraint servers_service_tag_check check (service_tag ~ '^[A-Z0-9]{5,10}$'),
  model              text not null default '',
  bios_version       text,
  idrac_version      text,
  lc_version         text,
  power_state        public.power_state not null default 'unknown',
  health             public.health_state not null default 'unknown',
  credential_set_id  uuid references public.credential_sets (id) on delete set null,
  last_seen_at       timestamptz,
  details            jsonb not null default '{}'::jsonb constraint servers_details_check check (jsonb_typeof(details) = 'object'),
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  unique (site_id, idrac_address)
);
create unique index servers_service_tag_key on public.servers (service_tag) where service_tag is not null;

create table public.vcenters (
  id                uuid primary key default extensions.gen_random_uuid(),
  site_id           uuid not null references public.sites (id) on delete cascade,
  name              text not null constraint vcenters_name_check check (length(name) between 1 and 128),
  address           text not null constraint vcenters_address_check check (length(address) between 1 and 255),
  version           text,
  credential_set_id uuid references public.credential_sets (id) on delete set null,
  last_sync_at      timestamptz,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now(),
  missing_since     timestamptz,
  -- how the executor reaches the vCenter: {"tls": {"ca_bundle" | "insecure"}} (as servers.details)
  details           jsonb not null default '{}'::jsonb constraint vcenters_details_check check (jsonb_typeof(details) = 'object'),
  unique (site_id, address)
);

create table public.clusters (
  id                      uuid primary key default extensions.gen_random_uuid(),
  vcenter_id              uuid not null references public.vcenters (id) on delete cascade,
  site_id                 uuid not null references public.sites (id) on delete cascade,
  name                    text not null,
  moref                   text not null,
  ha_enabled              boolean,
  ha_admission_control    boolean,
  drs_enabled             boolean,
  drs_automation          text constraint clusters_drs_automation_check check (drs_automation in ('manual', 'partiallyAutomated', 'fullyAutomated')),
  details                 jsonb not null default '{}'::jsonb constraint clusters_details_check check (jsonb_typeof(details) = 'object'),
  last_sync_at            timestamptz,
  created_at              timestamptz not null default now(),
  updated_at              timestamptz not null default now(),
  missing_since           timestamptz,
  unique (vcenter_id, moref)
);

create table public.esxi_hosts (
  id                uuid primary key default extensions.gen_random_uuid(),
  vcenter_id        uuid not null references public.vcenters (id) on delete cascade,
  cluster_id        uuid references public.clusters (id) on delete set null,
  server_id         uuid references public.servers (id) on delete set null,
  name              text not null,
  moref             text not null,
  esxi_version      text,
  esxi_build        text,
  connection_state  public.connection_state not null default 'unknown',
  in_maintenance    boolean not null default false,
  power_state       public.power_state not null default 'unknown',
  last_sync_at      timestamptz,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now(),
  -- how the executor reaches the host itself: {"ssh": {"address", "port", "known_hosts"}} (esxi_upgrade)
  details           jsonb not null default '{}'::jsonb constraint esxi_hosts_details_check check (jsonb_typeof(details) = 'object'),
  missing_since     timestamptz,
  unique (vcenter_id, moref)
);
comment on column public.esxi_hosts.missing_since is
  'Set by vcenter_sync when vCenter stopped reporting the object; null while it is present.';
create index esxi_hosts_cluster_idx on public.esxi_hosts (cluster_id);
create unique index esxi_hosts_server_key on public.esxi_hosts (server_id) where server_id is not null;

create table public.vms (
  id                    uuid primary key default extensions.gen_random_uuid(),
  vcenter_id            uuid not null references public.vcenters (id) on delete cascade,
  host_id               uuid references public.esxi_hosts (id) on delete set null,
  name                  text not null,
  moref                 text not null,
  power_state           public.power_state not null default 'unknown',
  -- device facts that keep a host from entering maintenance mode
  has_usb_passthrough   boolean not null default false,
  has_pci_passthrough   boolean not null default false,
  has_vgpu              boolean not null default false,
  ft_enabled            boolean not null default false,
  cdrom_connected       boolean not null default false,
  on_local_storage      boolean not null default false,
  details               jsonb not null default '{}'::jsonb constraint vms_details_check check (jsonb_typeof(details) = 'object'),
  last_sync_at          timestamptz,
  created_at            timestamptz not null default now(),
  updated_at            timestamptz not null default now(),
  missing_since         timestamptz,
  sync_hash             text,
  unique (vcenter_id, moref)
);
comment on column public.vms.sync_hash is
  'Hash of the row as vcenter_sync last stored it; cleared when anything else changes the row.';
create index vms_host_idx on public.vms (host_id);

create table public.firmware_catalogs (
  id           uuid primary key default extensions.gen_random_uuid(),
  site_id      uuid not null references public.sites (id) on delete cascade,
  name         text not null,
  url          text not null constraint firmware_catalogs_url_check check (url ~ '^https?://'),
  version      text,
  fetched_at   timestamptz,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  unique (site_id, name)
);

create table public.firmware_packages (
  id            uuid primary key default extensions.gen_random_uuid(),
  catalog_id    uuid not null references public.firmware_catalogs (id) on delete cascade,
  component     text not null,          -- e.g. BIOS, iDRAC, NIC, RAID
  model         text not null default '',
  version       text not null,
  path          text not null,
  sha256        text constraint firmware_packages_sha256_check check (sha256 ~ '^[0-9a-f]{64}$'),
  criticality   text not null default 'optional' constraint firmware_packages_criticality_check check (criticality in ('urgent', 'recommended', 'optional')),
  reboot_required boolean not null default true,
  created_at    timestamptz not null default now(),
  unique (catalog_id, component, model, version)
);

create table public.server_firmware (
  server_id     uuid not null references public.servers (id) on delete cascade,
  component     text not null,
  fqdd          text not null default '',
  version       text not null,
  observed_at   timestamptz not null default now(),
  primary key (server_id, component, fqdd)
);

create table public.ome_instances (
  id                uuid primary key default extensions.gen_random_uuid(),
  site_id           uuid not null references public.sites (id) on delete cascade,
  name              text not null,
  address           text not null,
  version           text,
  credential_set_id uuid references public.credential_sets (id) on delete set null,
  last_sync_at      timestamptz,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now(),
  unique (site_id, address)
);

create table public.replication_pairs (
  id                  uuid primary key default extensions.gen_random_uuid(),
  site_id             uuid not null references public.sites (id) on delete cascade,
  name                text not null,
  source_host         text not null,
  source_dataset      text not null constraint replication_pairs_source_dataset_check check (source_dataset ~ '^[A-Za-z0-9][A-Za-z0-9_./:-]*$'),
  target_host         text not null,
  target_dataset      text not null constraint replication_pairs_target_dataset_check check (target_dataset ~ '^[A-Za-z0-9][A-Za-z0-9_./:-]*$'),
  credential_set_id   uuid references public.credential_sets (id) on delete set null,
  schedule            text not null default '@hourly',
  retention_snapshots integer not null default 24 constraint replication_pairs_retention_snapshots_check check (retention_snapshots between 1 and 10000),
  enabled             boolean not null default true,
  last_success_at     timestamptz,
  last_snapshot       text,
  lag_seconds         integer constraint replication_pairs_lag_seconds_check check (lag_seconds >= 0),
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now(),
  unique (site_id, name),
  constraint replication_pairs_not_to_itself_check check ((source_host, source_dataset) is distinct from (target_host, target_dataset))
);

do $$
declare
  t text;
begin
  foreach t in array array['sites', 'executors', 'credential_sets', 'servers', 'vcenters', 'clusters',
                           'esxi_hosts', 'vms', 'firmware_catalogs', 'ome_instances', 'replication_pairs']
  loop
    execute format('create trigger %I before update on public.%I for each row execute function public.touch_updated_at()',
                   t || '_touch', t);
  end loop;
end
$$;
