-- rackpilot edge functions, part 1: what create-job and resolve-blockers need beyond the
-- data model.
--
-- The functions run every statement as the caller (role authenticated, the caller's JWT
-- claims), so RLS and column grants decide as they do for REST. One write a user role
-- cannot make directly is needed: job_tasks rows. They are derived here, by a SECURITY
-- DEFINER function, from the scope of a job the caller has just inserted in the same
-- transaction (which RLS and jobs_guard already vetted, and which the audit log records
-- with its scope). That is the whole bypass: no other job, no caller-supplied rows.

-- Operator decisions on blockers as the edge function names them. 'migrate_manually_done':
-- the operator moved the VM off the host; 'abort': the operator ends the job.
alter type public.resolution_action add value if not exists 'migrate_manually_done';
alter type public.resolution_action add value if not exists 'abort';

create function public.functions_create_job_tasks(p_job_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.jobs%rowtype;
  v_count integer;
begin
  if not public.has_role('operator') then
    raise exception using errcode = '42501', message = 'forbidden: creating job tasks needs the operator role';
  end if;
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  -- created_at defaults to now(), the transaction's start: equal only for a row inserted
  -- by this very transaction
  if not found or v_job.created_by is distinct from auth.uid() or v_job.created_at <> now()
     or v_job.status <> 'pending' then
    raise exception using errcode = '42501',
      message = 'forbidden: tasks are created only for a job the caller inserted in this transaction';
  end if;
  if exists (select 1 from public.job_tasks t where t.job_id = p_job_id) then
    raise exception using errcode = 'P0001', message = 'illegal_transition: the job already has its tasks';
  end if;
  if jsonb_typeof(v_job.scope -> 'targets') is distinct from 'array' or jsonb_array_length(v_job.scope -> 'targets') = 0 then
    raise exception using errcode = '22023', message = 'invalid_argument: the job scope names no targets';
  end if;
  insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq)
  select p_job_id, (t.value ->> 'kind')::public.task_target_kind, (t.value ->> 'id')::uuid,
         left(coalesce(t.value ->> 'name', ''), 255), (t.ordinality - 1)::integer
    from jsonb_array_elements(v_job.scope -> 'targets') with ordinality t;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function public.functions_create_job_tasks(uuid) is
  'create-job: one job_tasks row per scope target of a job the caller inserted in the current transaction.';

revoke execute on function public.functions_create_job_tasks(uuid) from public, anon;
grant execute on function public.functions_create_job_tasks(uuid) to authenticated;
