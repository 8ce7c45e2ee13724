-- Enum value of the VM operation job. ALTER TYPE ... ADD VALUE cannot be used in the
-- transaction that adds it, so the value comes first, alone.
--
--   job_type vm_operation   powers VMs off, or disconnects their CD-ROM/floppy media,
--                           through their vCenter (the fixes the update wizard's pre-flight
--                           offers for a VM that would keep its host from entering
--                           maintenance mode), then refreshes their inventory rows
alter type public.job_type add value if not exists 'vm_operation';
