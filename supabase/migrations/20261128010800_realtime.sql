-- rackpilot control plane, part 9: Realtime.
--
-- Job progress streams to notebooks and wakes executors. Replica identity FULL makes every
-- UPDATE carry the whole previous row, so subscribers get a complete old_record (the
-- status a job left, the step's previous state) and Realtime can apply RLS to DELETEs.
-- The cost is a larger WAL record per update on these four tables only.

do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

alter table public.jobs replica identity full;
alter table public.job_tasks replica identity full;
alter table public.workflow_executions replica identity full;
alter table public.job_blockers replica identity full;

alter publication supabase_realtime add table public.jobs, public.job_tasks, public.workflow_executions, public.job_blockers;
