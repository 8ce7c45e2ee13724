-- Enum values the fleet-intake migrations (20261206200100 onwards) use. ALTER TYPE ... ADD
-- VALUE cannot be used in the transaction that adds it, so the values come first, alone.
--
--   job_type discovery_scan      probe IP ranges and host lists for Redfish/iDRAC services
--                                with the site's credential sets; register what answers
--   job_type catalog_refresh     download a registered firmware catalog, check it, and load
--                                its packages into firmware_packages
--   task_target_kind site        a job whose target is a whole site (discovery, a site-wide
--                                inventory or compliance run)
--   task_target_kind firmware_catalog  a job whose target is a registered catalog
alter type public.job_type add value if not exists 'discovery_scan';
alter type public.job_type add value if not exists 'catalog_refresh';
alter type public.task_target_kind add value if not exists 'site';
alter type public.task_target_kind add value if not exists 'firmware_catalog';
