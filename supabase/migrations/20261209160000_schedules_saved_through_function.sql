-- Schedules are saved only through the `schedules` edge function (action save).
--
-- A hostile review found that an operator could POST (or PATCH) /rest/v1/job_schedules with
-- params create-job refuses - a malformed vm_ids list, a VM of another site, a __proto__
-- key - and have it stored (201): only the console's form checked them. Each occurrence
-- runs create-job's checks again when it fires (20261206200200_job_schedules.sql), so the
-- stored row gained no authority, but the bad input was kept and every occurrence failed.
--
-- Now the template is written through one SECURITY DEFINER function, for the service role
-- only, that the schedules function calls after create-job's request checks (the params
-- against their job type's schema, prototype keys, the targets exist, are visible to the
-- caller and belong to the schedule's site, named credential sets and the window series are
-- of that site); not the executor-availability and window checks, which are the occurrence's
-- to make when it fires. The caller's JWT claims stay set for that call, so the function
-- checks the operator role itself and the caller becomes the schedule's owner.
--
-- Operators keep, through REST: reading, deleting, and the columns that carry no job input
-- (name, priority, description, recurrence, time zone, missed policy, enabled). Inserting,
-- and changing job_type, params, site_id or window_series_id, go through the function.

revoke insert on public.job_schedules from authenticated;
revoke update (job_type, params, site_id, window_series_id) on public.job_schedules from authenticated;
drop policy job_schedules_insert_operator on public.job_schedules;

-- p_id null: a new schedule of p_site_id; otherwise that schedule (of p_site_id) is
-- rewritten with the given template. The caller (auth.uid(), an operator) becomes the owner.
create function public.functions_save_schedule(
  p_id               uuid,
  p_site_id          uuid,
  p_name             text,
  p_job_type         public.job_type,
  p_params           jsonb,
  p_priority         smallint,
  p_description      text,
  p_recurrence       text,
  p_timezone         text,
  p_missed_policy    text,
  p_enabled          boolean,
  p_window_series_id uuid
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := auth.uid();
  v_id  uuid;
begin
  if v_uid is null or not public.has_role('operator') then
    raise exception using errcode = '42501',
      message = 'forbidden: schedules are saved by operators, through the schedules function';
  end if;
  if p_site_id is null or p_job_type is null or p_params is null then
    raise exception using errcode = '22023', message = 'invalid_argument: a schedule needs a site, a job type and params';
  end if;
  if p_id is null then
    insert into public.job_schedules (site_id, name, job_type, params, priority, description, recurrence, timezone,
                                      missed_policy, enabled, window_series_id, owner_id)
    values (p_site_id, p_name, p_job_type, p_params, p_priority, p_description, p_recurrence, p_timezone,
            p_missed_policy, p_enabled, p_window_series_id, v_uid)
    returning id into v_id;
  else
    update public.job_schedules
       set name = p_name, job_type = p_job_type, params = p_params, priority = p_priority,
           description = p_description, recurrence = p_recurrence, timezone = p_timezone,
           missed_policy = p_missed_policy, enabled = p_enabled, window_series_id = p_window_series_id,
           owner_id = v_uid
     where id = p_id and site_id = p_site_id
    returning id into v_id;
    if v_id is null then
      raise exception using errcode = 'P0001', message = 'not_found: no such schedule of the site';
    end if;
  end if;
  return v_id;
end
$$;
comment on function public.functions_save_schedule(uuid, uuid, text, public.job_type, jsonb, smallint, text, text, text,
                                                   text, boolean, uuid) is
  'The one write of a schedule''s template: the schedules function (action save) calls it after create-job''s request checks.';
revoke execute on function public.functions_save_schedule(uuid, uuid, text, public.job_type, jsonb, smallint, text, text,
                                                          text, text, boolean, uuid) from public, anon, authenticated;
grant execute on function public.functions_save_schedule(uuid, uuid, text, public.job_type, jsonb, smallint, text, text,
                                                         text, text, boolean, uuid) to service_role;

-- The guard reported every refused recurrence as an unknown time zone: the parsers raise
-- invalid_argument with SQLSTATE 22023, the code an unknown zone raises, and one handler
-- caught both. Now the zone is checked on its own, and a bad recurrence keeps its own words
-- (the save answers 400 invalid_argument naming what is wrong). Otherwise unchanged.
create or replace function public.job_schedules_guard()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  if tg_op = 'INSERT'
     or (new.job_type, new.params, new.priority, new.description, new.site_id)
        is distinct from (old.job_type, old.params, old.priority, old.description, old.site_id)
     or (new.enabled and not old.enabled) then
    if public.is_user_context() then
      new.owner_id := auth.uid();
    end if;
  end if;
  if tg_op = 'INSERT' or (new.recurrence, new.timezone, new.enabled)
                         is distinct from (old.recurrence, old.timezone, old.enabled) then
    begin
      perform now() at time zone new.timezone;
    exception when invalid_parameter_value then
      raise exception using errcode = '22023',
        message = format('invalid_argument: %L is not a time zone Postgres knows', new.timezone);
    end;
    new.next_run_at := case when new.enabled then public.schedule_next_run(new.recurrence, new.timezone, now()) end;
  end if;
  return new;
end
$$;
