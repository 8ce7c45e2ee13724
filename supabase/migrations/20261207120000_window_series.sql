-- Recurring maintenance windows: a series (a recurrence in the schedules' subset, a time
-- zone and a duration) whose occurrences are ordinary rows of public.maintenance_windows.
--
-- Why occurrences are real windows: everything that gates a risky job already reads
-- maintenance_windows - create-job's planning, functions_create_job, the claim's re-check of
-- the locked row and v_job_waits' codes (window_not_approved, window_not_started,
-- window_over...). An occurrence is one more window, so none of them changes and none can be
-- bypassed by a series.
--
-- Approval, four eyes either way:
--   * per occurrence: an occurrence is materialised `requested` (requested_by = the series'
--     requester) and an approver other than the requester approves it like any window
--     (maintenance-windows approve, or an UPDATE under maintenance_windows_guard);
--   * per series: an approver other than the requester approves the series; its occurrences
--     are then approved as they are materialised, with approved_by = the series' approver.
--   Rejecting or cancelling a series cancels its occurrences that have not started.
--
-- Materialising: window_series_sync(series) inserts the occurrences that end after now and
-- start within horizon_days (at most 200 per call), skipping one that overlaps a requested or
-- approved window of the same scope (a site-wide window shares its scope with every cluster).
-- It runs when a series is saved or decided (trigger) and from the schedules edge function's
-- fire action (window_series_sync_due, at most every 10 minutes per series), so the horizon
-- rolls forward while the site's executors run.
--
-- A schedule may name a series (job_schedules.window_series_id): its job is created with the
-- series' occurrence that contains the schedule's occurrence, or else the next one; the job
-- then waits for that window exactly as a hand-made job does (the claim's re-check,
-- v_job_waits). An occurrence that is not approved when the schedule fires is create-job's
-- refusal (window_not_approved), recorded on the run; the next occurrence tries again.

create table public.maintenance_window_series (
  id               uuid primary key default extensions.gen_random_uuid(),
  site_id          uuid not null references public.sites (id) on delete cascade,
  cluster_id       uuid references public.clusters (id) on delete cascade,
  title            text not null constraint maintenance_window_series_title_check check (length(title) between 1 and 200),
  reason           text not null default '' constraint maintenance_window_series_reason_check check (length(reason) <= 4000),
  recurrence       text not null constraint maintenance_window_series_recurrence_check check (length(recurrence) between 5 and 200),
  timezone         text not null default 'UTC' constraint maintenance_window_series_timezone_check check (length(timezone) between 1 and 64),
  duration_minutes integer not null constraint maintenance_window_series_duration_minutes_check check (duration_minutes between 1 and 10080),
  horizon_days     integer not null default 14 constraint maintenance_window_series_horizon_days_check check (horizon_days between 1 and 90),
  status           public.window_status not null default 'requested',
  requested_by     uuid,
  approved_by      uuid,
  decided_at       timestamptz,
  decision_note    text not null default '' constraint maintenance_window_series_decision_note_check check (length(decision_note) <= 4000),
  synced_at        timestamptz,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  constraint maintenance_window_series_four_eyes_check check (status <> 'approved' or (approved_by is not null and requested_by is not null
                                   and approved_by <> requested_by)),
  constraint maintenance_window_series_decided_at_check check ((status = 'requested') = (decided_at is null))
);
create index maintenance_window_series_site_idx on public.maintenance_window_series (site_id)
  where status in ('requested', 'approved');

alter table public.maintenance_windows
  add column series_id uuid references public.maintenance_window_series (id) on delete set null,
  add column occurrence_at timestamptz;
create unique index maintenance_windows_series_occurrence_idx on public.maintenance_windows (series_id, occurrence_at)
  where series_id is not null;

alter table public.job_schedules
  add column window_series_id uuid references public.maintenance_window_series (id) on delete set null;
grant insert (window_series_id), update (window_series_id) on public.job_schedules to authenticated;

-- the series' guard: the same rules as maintenance_windows_guard, plus a valid recurrence
create function public.maintenance_window_series_guard()
returns trigger
language plpgsql
as $$
declare
  v_user boolean := public.is_user_context();
begin
  if tg_op = 'INSERT' then
    if v_user then
      new.requested_by := auth.uid();
    end if;
    if new.status <> 'requested' or new.approved_by is not null or new.decided_at is not null then
      raise exception using errcode = 'P0001', message = 'window_transition: a window series starts as requested';
    end if;
  else
    new.updated_at := now();
    if new.requested_by is distinct from old.requested_by then
      raise exception using errcode = 'P0001', message = 'window_transition: requested_by cannot change';
    end if;
    if new.status is distinct from old.status then
      if not ((old.status = 'requested' and new.status in ('approved', 'rejected', 'cancelled'))
              or (old.status = 'approved' and new.status = 'cancelled')) then
        raise exception using errcode = 'P0001',
          message = format('window_transition: %s -> %s is not allowed', old.status, new.status);
      end if;
      if v_user then
        if new.status in ('approved', 'rejected') then
          if not public.has_role('approver') then
            raise exception using errcode = '42501', message = 'forbidden: only approvers decide maintenance windows';
          end if;
          new.approved_by := auth.uid();
        elsif not (old.requested_by = auth.uid() or public.has_role('approver')) then
          raise exception using errcode = '42501',
            message = 'forbidden: only the requester or an approver cancels a window series';
        end if;
      end if;
      if new.status = 'approved' and new.approved_by is not distinct from new.requested_by then
        raise exception using errcode = 'P0001',
          message = 'four_eyes: a window series cannot be approved by the user who requested it';
      end if;
      new.decided_at := now();
    elsif new.approved_by is distinct from old.approved_by then
      raise exception using errcode = 'P0001', message = 'window_transition: approved_by changes only with a decision';
    end if;
    if old.status <> 'requested'
       and (new.recurrence, new.timezone, new.duration_minutes, new.site_id, new.cluster_id)
           is distinct from (old.recurrence, old.timezone, old.duration_minutes, old.site_id, old.cluster_id) then
      raise exception using errcode = 'P0001',
        message = 'window_transition: a decided series'' recurrence and scope are fixed; request a new one';
    end if;
  end if;
  if new.cluster_id is not null
     and not exists (select 1 from public.clusters c where c.id = new.cluster_id and c.site_id = new.site_id) then
    raise exception using errcode = 'P0001', message = 'cluster_wrong_site: the cluster belongs to another site';
  end if;
  begin
    perform public.schedule_next_run(new.recurrence, new.timezone, now());
  exception when invalid_parameter_value then
    raise exception using errcode = '22023',
      message = format('invalid_argument: %L is not a time zone Postgres knows', new.timezone);
  end;
  return new;
end
$$;
create trigger maintenance_window_series_guard before insert or update on public.maintenance_window_series
  for each row execute function public.maintenance_window_series_guard();

-- Materialise a series' occurrences (see the header); answers how many were inserted.
create function public.window_series_sync(p_series_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_s      public.maintenance_window_series%rowtype;
  v_dur    interval;
  v_t      timestamptz;
  v_end    timestamptz;
  v_n      integer := 0;
  v_rows   integer;
  v_loops  integer := 0;
begin
  select * into v_s from public.maintenance_window_series where id = p_series_id for update;
  if not found then
    return 0;
  end if;
  update public.maintenance_window_series set synced_at = now() where id = p_series_id;
  if v_s.status in ('rejected', 'cancelled') then
    update public.maintenance_windows
       set status = 'cancelled', decision_note = format('the series was %s', v_s.status)
     where series_id = v_s.id and status in ('requested', 'approved') and starts_at > now();
    return 0;
  end if;
  -- the same lock maintenance-windows takes for its overlap checks
  perform pg_advisory_xact_lock(hashtextextended('rackpilot:windows:' || v_s.site_id::text, 0));
  v_dur := make_interval(mins => v_s.duration_minutes);
  v_t := public.schedule_next_run(v_s.recurrence, v_s.timezone, now() - v_dur);
  while v_t is not null and v_t < now() + make_interval(days => v_s.horizon_days) and v_loops < 200 loop
    v_loops := v_loops + 1;
    v_end := v_t + v_dur;
    if not exists (
         select 1 from public.maintenance_windows w
          where w.site_id = v_s.site_id and w.status in ('requested', 'approved')
            and (w.cluster_id is null or v_s.cluster_id is null or w.cluster_id = v_s.cluster_id)
            and w.starts_at < v_end and w.ends_at > v_t) then
      insert into public.maintenance_windows (site_id, cluster_id, title, reason, starts_at, ends_at, requested_by,
                                              series_id, occurrence_at)
      values (v_s.site_id, v_s.cluster_id, v_s.title, v_s.reason, v_t, v_end, v_s.requested_by, v_s.id, v_t)
      on conflict (series_id, occurrence_at) where series_id is not null do nothing;
      get diagnostics v_rows = row_count;
      v_n := v_n + v_rows;
    end if;
    v_t := public.schedule_next_run(v_s.recurrence, v_s.timezone, v_t);
  end loop;
  if v_s.status = 'approved' then
    update public.maintenance_windows
       set status = 'approved', approved_by = v_s.approved_by, decision_note = 'approved with its series'
     where series_id = v_s.id and status = 'requested' and ends_at > now();
  end if;
  return v_n;
end
$$;

-- The schedules edge function's fire action: roll the horizon of the site's live series.
create function public.window_series_sync_due(p_site_id uuid default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
  v_n  integer := 0;
begin
  for v_id in
    select s.id from public.maintenance_window_series s
     where s.status in ('requested', 'approved') and (p_site_id is null or s.site_id = p_site_id)
       and (s.synced_at is null or s.synced_at < now() - interval '10 minutes')
     order by s.synced_at nulls first
     limit 50
     for update skip locked
  loop
    v_n := v_n + public.window_series_sync(v_id);
  end loop;
  return v_n;
end
$$;

-- saved or decided: materialise (or cancel) at once, as the owner (the occurrences'
-- requested_by/approved_by are the series', never the caller's)
create function public.maintenance_window_series_after()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT'
     or (new.status, new.recurrence, new.timezone, new.duration_minutes, new.horizon_days)
        is distinct from (old.status, old.recurrence, old.timezone, old.duration_minutes, old.horizon_days) then
    if tg_op = 'UPDATE' and old.status = 'requested' and new.status = 'requested' then
      -- a requested series re-planned: its undecided future occurrences follow it
      delete from public.maintenance_windows
       where series_id = new.id and status = 'requested' and starts_at > now()
         and not exists (select 1 from public.jobs j where j.maintenance_window_id = maintenance_windows.id);
    end if;
    perform public.window_series_sync(new.id);
  end if;
  return null;
end
$$;
create trigger maintenance_window_series_after after insert or update on public.maintenance_window_series
  for each row execute function public.maintenance_window_series_after();

do $$
declare
  f text;
begin
  foreach f in array array['public.window_series_sync(uuid)', 'public.window_series_sync_due(uuid)'] loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
revoke execute on function public.maintenance_window_series_guard() from public, anon;
revoke execute on function public.maintenance_window_series_after() from public, anon, authenticated;

alter table public.maintenance_window_series enable row level security;
revoke all on public.maintenance_window_series from anon, authenticated;
grant select on public.maintenance_window_series to authenticated;
grant insert (site_id, cluster_id, title, reason, recurrence, timezone, duration_minutes, horizon_days)
  on public.maintenance_window_series to authenticated;
grant update (title, reason, recurrence, timezone, duration_minutes, horizon_days, status, decision_note)
  on public.maintenance_window_series to authenticated;
create policy maintenance_window_series_select_viewer on public.maintenance_window_series for select to authenticated
  using ((select public.has_role('viewer')));
create policy maintenance_window_series_insert_operator on public.maintenance_window_series for insert
  to authenticated with check ((select public.has_role('operator')));
create policy maintenance_window_series_update_operator on public.maintenance_window_series for update
  to authenticated using ((select public.has_role('operator'))) with check ((select public.has_role('operator')));

-- the audit trail records series as it records windows
create trigger audit_maintenance_window_series_insert after insert on public.maintenance_window_series
  referencing new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_maintenance_window_series_update after update on public.maintenance_window_series
  referencing old table as old_rows new table as new_rows for each statement execute function public.audit_changes();
create trigger audit_maintenance_window_series_delete after delete on public.maintenance_window_series
  referencing old table as old_rows for each statement execute function public.audit_changes();
