-- public.safety_policies from the job types' declarations (executor/jobtypes.py: risk,
-- requires_window, takes_hosts_out) and policies/safety.yaml (limits, timeouts, attempts).
-- Generated: python -m devstack.policies safety-migration <file>. Every row is upserted, so
-- after this migration the table holds what the declarations say, whatever earlier
-- migrations inserted; tests/unit/test_jobtypes.py fails when the declarations or
-- safety.yaml change and the newest such migration no longer holds what they generate.

insert into public.safety_policies (job_type, risk, requires_window, takes_hosts_out, max_hosts_out_per_cluster, max_concurrent_per_cluster, lease_seconds, step_timeout_seconds, job_timeout_seconds, max_attempts)
values
  ('rolling_cluster_update', 'high', true, true, 1, 1, 120, 3600, 86400, 3),
  ('firmware_update', 'high', true, true, 1, 1, 120, 3600, 14400, 3),
  ('esxi_upgrade', 'high', true, true, 1, 1, 120, 3600, 28800, 3),
  ('power_operation', 'medium', false, true, 1, 1, 60, 600, 1800, 3),
  ('virtual_media_mount', 'medium', false, false, null, null, 60, 600, 1800, 3),
  ('scp_backup', 'low', false, false, null, null, 60, 1200, 3600, 5),
  ('vcenter_sync', 'low', false, false, null, null, 60, 600, 3600, 5),
  ('replication_sync', 'low', false, false, null, 2, 120, 7200, 43200, 5),
  ('inventory_refresh', 'low', false, false, null, null, 60, 600, 3600, 5),
  ('firmware_compliance', 'low', false, false, null, null, 60, 600, 3600, 5),
  ('discovery_scan', 'low', false, false, null, null, 60, 1800, 7200, 5),
  ('catalog_refresh', 'low', false, false, null, null, 60, 900, 3600, 5),
  ('directory_sync', 'low', false, false, null, null, 60, 600, 1800, 5),
  ('vm_operation', 'medium', false, false, null, null, 60, 600, 1800, 3),
  ('selftest', 'low', false, false, null, null, 30, 60, 300, 3)
on conflict (job_type) do update set risk = excluded.risk, requires_window = excluded.requires_window, takes_hosts_out = excluded.takes_hosts_out, max_hosts_out_per_cluster = excluded.max_hosts_out_per_cluster, max_concurrent_per_cluster = excluded.max_concurrent_per_cluster, lease_seconds = excluded.lease_seconds, step_timeout_seconds = excluded.step_timeout_seconds, job_timeout_seconds = excluded.job_timeout_seconds, max_attempts = excluded.max_attempts;
