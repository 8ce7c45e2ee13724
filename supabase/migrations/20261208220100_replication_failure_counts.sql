-- rackpilot control plane: a scheduled replication_sync job that fails also counts as that
-- occurrence's attempt (issue 23).
--
-- 20261208220000 made a cancelled scheduled job count. A scheduled job that fails before it
-- takes its pair (before replication_begin: say the executor cannot open the sealed SSH
-- credential, or a host key no longer matches) left last_attempt_at unset in the same way,
-- so every scheduler round (30 s by default) made the pair a new job that failed again: a
-- loop of failed jobs and their notifications instead of one failure per occurrence. Now
-- failed counts like cancelled; the next job comes one schedule interval later. A job that
-- fails after taking the pair has its attempt recorded already (replication_begin and
-- replication_record); the trigger only moves last_attempt_at forward, never back.

drop trigger if exists jobs_replication_cancel_counts on public.jobs;
create trigger jobs_replication_cancel_counts after update of status on public.jobs
  for each row
  when (new.status in ('cancelled', 'failed') and old.status is distinct from new.status
        and new.type = 'replication_sync' and new.details ->> 'scheduled' = 'true')
  execute function public.replication_cancel_counts_as_attempt();

comment on function public.replication_cancel_counts_as_attempt() is
  'Trigger: a scheduled replication_sync job that ends cancelled or failed counts as its pairs'' attempt (last_attempt_at).';
