-- rackpilot edge functions, part 1: the operator decisions on blockers that resolve-blockers
-- names beyond the data model's. 'migrate_manually_done': the operator moved the VM off the
-- host; 'abort': the operator ends the job. (Enum values of their own: a migration that uses
-- a value cannot add it in the same transaction.) Jobs are written by create-job through
-- public.functions_create_job (20261206110000_jobs_through_create_job.sql).
alter type public.resolution_action add value if not exists 'migrate_manually_done';
alter type public.resolution_action add value if not exists 'abort';
