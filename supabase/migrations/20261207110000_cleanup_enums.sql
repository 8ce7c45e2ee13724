-- Enum values the cleanup-on-every-exit migration (20261207110100) uses. ALTER TYPE ... ADD
-- VALUE cannot be used in the transaction that adds it, so the value comes first, alone.
--
--   pause_reason cleanup_failed   the job's cleanup step (settings restored, hosts brought
--                                 back) did not complete; the job keeps its outcome and
--                                 waits for a resume (the cleanup runs again), a cancel, or
--                                 an admin's abandon_cleanup
alter type public.pause_reason add value if not exists 'cleanup_failed';
