-- rackpilot control plane, part 3: the job model and its state machine.
--
--   jobs                 the unit an operator asks for (type, params, scope, site)
--   job_tasks            one row per target (server, host, cluster, ...)
--   workflow_executions  ordered steps; each says whether re-running it is safe and keeps
--                        its checkpoint, which is what lease recovery relies on
--   job_blockers         why a job paused; blocker_resolutions: what an operator decided
--   artifacts            large payloads (SCP backups, inventory dumps) with sha256 and size
--   maintenance_windows  four-eyes approved windows that gate risky job types
--   safety_policies      per job type risk rules, a copy of policies/safety.yaml
--
-- Job status transitions (enforced by jobs_guard, for every writer):
--   pending -> running | cancelled
--   running -> paused | completed | failed | cancelled | pending (lease recovery, force_resume)
--   paused  -> pending | cancelled
--   completed, failed, cancelled are terminal: the row never changes again.
-- A paused job resumes through pending and a fresh claim (new lease, new epoch) rather than
-- jumping back to running, so every run of a job is fenced by its own epoch.
--
-- Errors raised here use SQLSTATE P0001 with a stable message prefix callers match on:
--   illegal_transition:  the state machine forbids the change
--   forbidden_transition: the change is legal but not for a user role
--   open_blockers:       a job paused for blockers resumes only once all are resolved
--   four_eyes:           a window cannot be approved by its requester
--   window_transition:   illegal maintenance window status change

create type public.job_status as enum ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled');
create type public.pause_reason as enum ('blockers', 'operator', 'executor_lost', 'window_closed');
create type public.task_status as enum ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled');
create type public.task_target_kind as enum ('server', 'host', 'cluster', 'vcenter', 'replication_pair', 'vm', 'ome_instance');
create type public.step_status as enum ('pending', 'running', 'completed', 'failed', 'skipped');
create type public.blocker_kind as enum (
  'usb_passthrough', 'pci_passthrough', 'vgpu', 'fault_tolerance', 'cdrom_connected', 'local_storage',
  'ha_admission_control', 'host_not_responding', 'pending_idrac_jobs', 'lifecycle_controller_busy',
  'replication_lag', 'other'
);
create type public.blocker_status as enum ('open', 'resolved');
create type public.resolution_action as enum (
  'power_off_vm', 'migrate_vm', 'disconnect_device', 'skip_host', 'acknowledge'
);
create type public.artifact_kind as enum ('scp_backup', 'inventory_dump', 'firmware_report', 'preflight_report', 'log');
create type public.window_status as enum ('requested', 'approved', 'rejected', 'cancelled');
create type public.risk_level as enum ('low', 'medium', 'high');

-- True for the API's user roles; false inside SECURITY DEFINER functions and for the
-- service role, which the state machine still binds but with the executor's powers.
create function public.is_user_context()
returns boolean
language sql
stable
as $$
  select current_user in ('authenticated', 'anon')
$$;

-- safety policy ------------------------------------------------------------------------
create table public.safety_policies (
  job_type                   public.job_type primary key,
  risk                       public.risk_level not null,
  requires_window            boolean not null,
  takes_hosts_out            boolean not null,
  max_hosts_out_per_cluster  integer constraint safety_policies_max_hosts_out_per_cluster_check check (max_hosts_out_per_cluster >= 1),
  max_concurrent_per_cluster integer constraint safety_policies_max_concurrent_per_cluster_check check (max_concurrent_per_cluster >= 1),
  lease_seconds              integer not null constraint safety_policies_lease_seconds_check check (lease_seconds between 10 and 3600),
  step_timeout_seconds       integer not null constraint safety_policies_step_timeout_seconds_check check (step_timeout_seconds between 1 and 86400),
  job_timeout_seconds        integer not null constraint safety_policies_job_timeout_seconds_check check (job_timeout_seconds between 1 and 604800),
  max_attempts               integer not null constraint safety_policies_max_attempts_check check (max_attempts between 1 and 100),
  constraint safety_policies_hosts_out_limit_check check (not takes_hosts_out or max_hosts_out_per_cluster is not null),
  constraint safety_policies_high_risk_window_check check (risk <> 'high' or requires_window)
);
comment on table public.safety_policies is
  'Per job type safety rules; a copy of policies/safety.yaml (tests fail when the two differ).';

-- Mirrors policies/safety.yaml. Change both together (a new migration updating these rows).
insert into public.safety_policies
  (job_type, risk, requires_window, takes_hosts_out, max_hosts_out_per_cluster, max_concurrent_per_cluster,
   lease_seconds, step_timeout_seconds, job_timeout_seconds, max_attempts)
values
  ('rolling_cluster_update', 'high',   true,  true,  1,    1,    120, 3600, 86400, 3),
  ('firmware_update',        'high',   true,  true,  1,    1,    120, 3600, 14400, 3),
  ('esxi_upgrade',           'high',   true,  true,  1,    1,    120, 3600, 28800, 3),
  ('power_operation',        'medium', false, true,  1,    1,    60,  600,  1800,  3),
  ('virtual_media_mount',    'medium', false, false, null, null, 60,  600,  1800,  3),
  ('scp_backup',             'low',    false, false, null, null, 60,  1200, 3600,  5),
  ('vcenter_sync',           'low',    false, false, null, null, 60,  600,  3600,  5),
  ('replication_sync',       'low',    false, false, null, 2,    120, 7200, 43200, 5),
  ('inventory_refresh',      'low',    false, false, null, null, 60,  600,  3600,  5),
  ('firmware_compliance',    'low',    false, false, null, null, 60,  600,  3600,  5),
  ('selftest',               'low',    false, false, null, null, 30,  60,   300,   3);
-- give the planner real statistics for this tiny table from the start
analyze public.safety_policies;

-- maintenance windows ------------------------------------------------------------------
create table public.maintenance_windows (
  id            uuid primary key default extensions.gen_random_uuid(),
  site_id       uuid not null references public.sites (id) on delete cascade,
  cluster_id    uuid references public.clusters (id) on delete cascade,
  title         text not null constraint maintenance_windows_title_check check (length(title) between 1 and 200),
  reason        text not null default '' constraint maintenance_windows_reason_check check (length(reason) <= 4000),
  starts_at     timestamptz not null,
  ends_at       timestamptz not null,
  status        public.window_status not null default 'requested',
  -- actor columns hold user ids without a foreign key: history outlives the user
  requested_by  uuid,
  approved_by   uuid,
  decided_at    timestamptz,
  decision_note text not null default '' constraint maintenance_windows_decision_note_check check (length(decision_note) <= 4000),
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint maintenance_windows_ends_after_start_check check (ends_at > starts_at),
  constraint maintenance_windows_length_check check (ends_at - starts_at <= interval '7 days'),
  -- four eyes: an approved window names an approver other than its requester
  constraint maintenance_windows_four_eyes_check check (status <> 'approved' or (approved_by is not null and requested_by is not null
                                   and approved_by <> requested_by)),
  constraint maintenance_windows_decided_at_check check ((status = 'requested') = (decided_at is null))
);
create index maintenance_windows_active_idx on public.maintenance_windows (site_id, starts_at, ends_at)
  where status = 'approved';

create function public.maintenance_windows_guard()
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
      raise exception using errcode = 'P0001',
        message = 'window_transition: a maintenance window starts as requested';
    end if;
    return new;
  end if;

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
          raise exception using errcode = '42501',
            message = 'forbidden: only approvers decide maintenance windows';
        end if;
        new.approved_by := auth.uid();
      elsif not (old.requested_by = auth.uid() or public.has_role('approver')) then
        raise exception using errcode = '42501',
          message = 'forbidden: only the requester or an approver cancels a window';
      end if;
    end if;
    if new.status = 'approved' and new.approved_by is not distinct from new.requested_by then
      raise exception using errcode = 'P0001',
        message = 'four_eyes: a maintenance window cannot be approved by the user who requested it';
    end if;
    new.decided_at := now();
  elsif new.approved_by is distinct from old.approved_by then
    raise exception using errcode = 'P0001', message = 'window_transition: approved_by changes only with a decision';
  end if;
  if old.status <> 'requested'
     and (new.starts_at, new.ends_at, new.site_id, new.cluster_id)
         is distinct from (old.starts_at, old.ends_at, old.site_id, old.cluster_id) then
    raise exception using errcode = 'P0001',
      message = 'window_transition: a decided window''s time and scope are fixed; request a new one';
  end if;
  return new;
end
$$;

create trigger maintenance_windows_guard before insert or update on public.maintenance_windows
  for each row execute function public.maintenance_windows_guard();

-- jobs -----------------------------------------------------------------------------------
create table public.jobs (
  id                    uuid primary key default extensions.gen_random_uuid(),
  type                  public.job_type not null,
  status                public.job_status not null default 'pending',
  pause_reason          public.pause_reason,
  site_id               uuid not null references public.sites (id) on delete restrict,
  -- the cluster whose hosts the job may take out of service (per-cluster concurrency)
  cluster_id            uuid references public.clusters (id) on delete set null,
  params                jsonb not null default '{}'::jsonb constraint jobs_params_check check (jsonb_typeof(params) = 'object'),
  scope                 jsonb not null default '{}'::jsonb constraint jobs_scope_check check (jsonb_typeof(scope) = 'object'),
  priority              smallint not null default 50 constraint jobs_priority_check check (priority between 0 and 100),
  description           text not null default '' constraint jobs_description_check check (length(description) <= 2000),
  created_by            uuid,
  scheduled_for         timestamptz not null default now(),
  maintenance_window_id uuid references public.maintenance_windows (id) on delete set null,
  -- credential sets the job may open (get_job_credentials refuses any other)
  credential_set_ids    uuid[] not null default '{}',
  cancel_requested_at   timestamptz,
  cancel_requested_by   uuid,
  pause_requested_at    timestamptz,
  claimed_by            uuid references public.executors (id) on delete restrict,
  lease_expires_at      timestamptz,
  lease_epoch           bigint not null default 0 constraint jobs_lease_epoch_check check (lease_epoch >= 0),
  attempts              integer not null default 0 constraint jobs_attempts_check check (attempts >= 0),
  current_step_id       uuid,
  result                jsonb,
  error                 text constraint jobs_error_check check (length(error) <= 8000),
  details               jsonb not null default '{}'::jsonb constraint jobs_details_check check (jsonb_typeof(details) = 'object'),
  created_at            timestamptz not null default now(),
  updated_at            timestamptz not null default now(),
  started_at            timestamptz,
  finished_at           timestamptz,
  -- cleanup owed on every exit path (20261207110100_cleanup_on_every_exit.sql)
  cleanup_owed_since    timestamptz,
  constraint jobs_pause_reason_check check ((status = 'paused') = (pause_reason is not null)),
  constraint jobs_claimed_by_check check ((status = 'running') = (claimed_by is not null)),
  constraint jobs_lease_check check ((status = 'running') = (lease_expires_at is not null)),
  constraint jobs_finished_at_check check ((status in ('completed', 'failed', 'cancelled')) = (finished_at is not null)),
  constraint jobs_failed_error_check check (status <> 'failed' or error is not null),
  constraint jobs_cancel_requested_check check (status <> 'cancelled' or cancel_requested_at is not null)
);
comment on column public.jobs.cleanup_owed_since is
  'Set while the job has changed target state its cleanup step must undo; no terminal status until cleared '
  '(by the executor after its cleanup completed, or by an admin''s audited abandon_cleanup).';
comment on column public.jobs.lease_epoch is
  'Fencing token: bumped by every claim and recovery; executor writes must carry the current value.';

-- the claim walks exactly this order: highest priority, then earliest schedule, then id
create index jobs_claim_idx on public.jobs (site_id, priority desc, scheduled_for, id) where status = 'pending';
create index jobs_lease_idx on public.jobs (lease_expires_at) where status = 'running';
create index jobs_cluster_active_idx on public.jobs (cluster_id) where status in ('running', 'paused');
create index jobs_created_idx on public.jobs (created_at desc);
create index jobs_window_idx on public.jobs (maintenance_window_id) where maintenance_window_id is not null;

create function public.job_transition_allowed(p_from public.job_status, p_to public.job_status)
returns boolean
language sql
immutable
as $$
  select case p_from
    when 'pending' then p_to in ('running', 'cancelled')
    when 'running' then p_to in ('paused', 'completed', 'failed', 'cancelled', 'pending')
    when 'paused'  then p_to in ('pending', 'cancelled')
    else false
  end
$$;

create table public.job_tasks (
  id          uuid primary key default extensions.gen_random_uuid(),
  job_id      uuid not null references public.jobs (id) on delete cascade,
  target_kind public.task_target_kind not null,
  target_id   uuid not null,
  target_name text not null default '' constraint job_tasks_target_name_check check (length(target_name) <= 255),
  seq         integer not null default 0 constraint job_tasks_seq_check check (seq >= 0),
  status      public.task_status not null default 'pending',
  progress    smallint not null default 0 constraint job_tasks_progress_check check (progress between 0 and 100),
  details     jsonb not null default '{}'::jsonb constraint job_tasks_details_check check (jsonb_typeof(details) = 'object'),
  result      jsonb,
  error       text constraint job_tasks_error_check check (length(error) <= 8000),
  started_at  timestamptz,
  finished_at timestamptz,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (job_id, target_kind, target_id),
  constraint job_tasks_finished_at_check check ((status in ('completed', 'failed', 'skipped', 'cancelled')) = (finished_at is not null)),
  constraint job_tasks_failed_error_check check (status <> 'failed' or error is not null)
);
create index job_tasks_target_idx on public.job_tasks (target_kind, target_id, created_at desc);

create table public.workflow_executions (
  id          uuid primary key default extensions.gen_random_uuid(),
  job_id      uuid not null references public.jobs (id) on delete cascade,
  task_id     uuid references public.job_tasks (id) on delete set null,
  seq         integer not null constraint workflow_executions_seq_check check (seq >= 0),
  step_key    text not null constraint workflow_executions_step_key_check check (step_key ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'),
  name        text not null constraint workflow_executions_name_check check (length(name) between 1 and 200),
  status      public.step_status not null default 'pending',
  -- true when re-running the step after a lost lease is harmless (reads, waits, idempotent
  -- writes); false for steps such as a firmware flash that must never run twice unseen
  resumable   boolean not null default false,
  checkpoint  jsonb,
  details     jsonb not null default '{}'::jsonb constraint workflow_executions_details_check check (jsonb_typeof(details) = 'object'),
  error       text constraint workflow_executions_error_check check (length(error) <= 8000),
  attempts    integer not null default 0 constraint workflow_executions_attempts_check check (attempts >= 0),
  -- jobs.attempts of the run that last started this step (one run = one claim)
  job_attempt integer not null default 0 constraint workflow_executions_job_attempt_check check (job_attempt >= 0),
  started_at  timestamptz,
  finished_at timestamptz,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (job_id, step_key),
  constraint workflow_executions_finished_at_check check ((status in ('completed', 'failed', 'skipped')) = (finished_at is not null)),
  constraint workflow_executions_started_at_check check (status = 'pending' or started_at is not null)
);
create index workflow_executions_job_seq_idx on public.workflow_executions (job_id, seq);

alter table public.jobs add constraint jobs_current_step_fkey
  foreign key (current_step_id) references public.workflow_executions (id) on delete set null;

create table public.job_blockers (
  id          uuid primary key default extensions.gen_random_uuid(),
  job_id      uuid not null references public.jobs (id) on delete cascade,
  kind        public.blocker_kind not null,
  host_id     uuid references public.esxi_hosts (id) on delete set null,
  vm_id       uuid references public.vms (id) on delete set null,
  server_id   uuid references public.servers (id) on delete set null,
  description text not null constraint job_blockers_description_check check (length(description) between 1 and 2000),
  details     jsonb not null default '{}'::jsonb constraint job_blockers_details_check check (jsonb_typeof(details) = 'object'),
  status      public.blocker_status not null default 'open',
  detected_at timestamptz not null default now(),
  resolved_at timestamptz,
  constraint job_blockers_resolved_at_check check ((status = 'resolved') = (resolved_at is not null))
);
create index job_blockers_job_idx on public.job_blockers (job_id);
create index job_blockers_open_idx on public.job_blockers (job_id) where status = 'open';

create table public.blocker_resolutions (
  id          uuid primary key default extensions.gen_random_uuid(),
  blocker_id  uuid not null unique references public.job_blockers (id) on delete cascade,
  job_id      uuid not null references public.jobs (id) on delete cascade,
  action      public.resolution_action not null,
  note        text not null default '' constraint blocker_resolutions_note_check check (length(note) <= 2000),
  resolved_by uuid,
  created_at  timestamptz not null default now()
);
create index blocker_resolutions_job_idx on public.blocker_resolutions (job_id);

create table public.artifacts (
  id           uuid primary key default extensions.gen_random_uuid(),
  job_id       uuid references public.jobs (id) on delete set null,
  server_id    uuid references public.servers (id) on delete set null,
  kind         public.artifact_kind not null,
  content_type text not null default 'application/octet-stream' constraint artifacts_content_type_check check (length(content_type) <= 255),
  sha256       text not null constraint artifacts_sha256_check check (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes   bigint not null constraint artifacts_size_bytes_check check (size_bytes between 0 and 67108864),
  content      bytea not null,
  created_at   timestamptz not null default now(),
  constraint artifacts_size_check check (octet_length(content) = size_bytes),
  constraint artifacts_content_sha256_check check (sha256 = encode(extensions.digest(content, 'sha256'), 'hex'))
);
create index artifacts_server_kind_idx on public.artifacts (server_id, kind, created_at desc);
create index artifacts_job_idx on public.artifacts (job_id);

-- jobs reference only credential sets of their own site
create function public.credentials_in_site(p_ids uuid[], p_site uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select not exists (select 1 from unnest(p_ids) i(id)
                      where not exists (select 1 from public.credential_sets c where c.id = i.id and c.site_id = p_site))
$$;

-- the job state machine ------------------------------------------------------------------
create function public.jobs_guard()
returns trigger
language plpgsql
as $$
declare
  v_user boolean := public.is_user_context();
begin
  if tg_op = 'INSERT' then
    if v_user then
      new.created_by := auth.uid();
    end if;
    if new.status <> 'pending' or new.claimed_by is not null or new.lease_epoch <> 0 or new.attempts <> 0 then
      raise exception using errcode = 'P0001',
        message = 'illegal_transition: a job is created pending, unclaimed, with epoch 0';
    end if;
    if not public.credentials_in_site(new.credential_set_ids, new.site_id) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: a job may reference only credential sets of its own site';
    end if;
    return new;
  end if;

  if old.status in ('completed', 'failed', 'cancelled') then
    raise exception using errcode = 'P0001',
      message = format('illegal_transition: job %s is %s and never changes again', old.id, old.status);
  end if;
  new.updated_at := now();
  -- nested, so that the helper is reached only when those columns change (never for a user)
  if (new.credential_set_ids, new.site_id) is distinct from (old.credential_set_ids, old.site_id) then
    if not public.credentials_in_site(new.credential_set_ids, new.site_id) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: a job may reference only credential sets of its own site';
    end if;
  end if;

  if new.status is distinct from old.status then
    if not public.job_transition_allowed(old.status, new.status) then
      raise exception using errcode = 'P0001',
        message = format('illegal_transition: job %s cannot go from %s to %s', old.id, old.status, new.status);
    end if;
    if v_user then
      if not ((old.status in ('pending', 'paused') and new.status = 'cancelled')
              or (old.status = 'paused' and new.status = 'pending')) then
        raise exception using errcode = 'P0001',
          message = format('forbidden_transition: users may cancel pending or paused jobs and resume paused ones, not %s -> %s',
                           old.status, new.status);
      end if;
      if old.status = 'paused' and new.status = 'pending' and old.pause_reason = 'executor_lost' then
        raise exception using errcode = 'P0001',
          message = 'forbidden_transition: a job paused as executor_lost is resumed only by an admin (force_resume)';
      end if;
      if new.status = 'cancelled' then
        new.cancel_requested_at := coalesce(old.cancel_requested_at, now());
        new.cancel_requested_by := coalesce(old.cancel_requested_by, auth.uid());
      end if;
    end if;
    if old.status = 'paused' and old.pause_reason = 'blockers' and new.status = 'pending'
       and exists (select 1 from public.job_blockers b where b.job_id = old.id and b.status = 'open') then
      raise exception using errcode = 'P0001',
        message = format('open_blockers: job %s has unresolved blockers', old.id);
    end if;
    -- bookkeeping that follows from the new status
    if new.status <> 'paused' then
      new.pause_reason := null;
    end if;
    if new.status <> 'running' then
      new.claimed_by := null;
      new.lease_expires_at := null;
    end if;
    if new.status = 'pending' then
      new.pause_requested_at := null;
    end if;
    if new.status in ('completed', 'failed', 'cancelled') then
      new.finished_at := coalesce(new.finished_at, now());
    end if;
  elsif new.status = 'paused' and new.pause_reason is distinct from old.pause_reason then
    raise exception using errcode = 'P0001', message = 'illegal_transition: pause_reason changes only with the status';
  end if;

  if v_user then
    -- requests are one-way flags stamped by the database, not by the caller
    if new.cancel_requested_at is distinct from old.cancel_requested_at and new.status <> 'cancelled' then
      if old.cancel_requested_at is not null then
        raise exception using errcode = 'P0001', message = 'illegal_transition: a cancel request cannot be withdrawn';
      end if;
      new.cancel_requested_at := now();
      new.cancel_requested_by := auth.uid();
    end if;
    if new.cancel_requested_by is distinct from old.cancel_requested_by
       and new.cancel_requested_at is not distinct from old.cancel_requested_at then
      raise exception using errcode = 'P0001', message = 'illegal_transition: cancel_requested_by is set by the database';
    end if;
    if new.pause_requested_at is distinct from old.pause_requested_at and new.status = old.status then
      if old.status <> 'running' or new.pause_requested_at is null then
        raise exception using errcode = 'P0001',
          message = 'illegal_transition: a pause can be requested only for a running job, and not withdrawn';
      end if;
      new.pause_requested_at := coalesce(old.pause_requested_at, now());
    end if;
    if (new.scheduled_for, new.priority, new.maintenance_window_id)
       is distinct from (old.scheduled_for, old.priority, old.maintenance_window_id)
       and old.status not in ('pending', 'paused') then
      raise exception using errcode = 'P0001',
        message = 'illegal_transition: schedule, priority and window change only while a job waits';
    end if;
    -- a user may attach only a window of the job's own site (and cluster); the claim still
    -- decides whether that window is approved and open
    if new.maintenance_window_id is distinct from old.maintenance_window_id and new.maintenance_window_id is not null
       and not exists (select 1 from public.maintenance_windows w
                        where w.id = new.maintenance_window_id and w.site_id = new.site_id
                          and (w.cluster_id is null or w.cluster_id = new.cluster_id)) then
      raise exception using errcode = '22023',
        message = 'invalid_argument: the maintenance window does not cover the job''s site and cluster';
    end if;
  end if;
  return new;
end
$$;

create trigger jobs_guard before insert or update on public.jobs
  for each row execute function public.jobs_guard();

create function public.blocker_resolutions_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_blocker public.job_blockers%rowtype;
begin
  select * into v_blocker from public.job_blockers where id = new.blocker_id for update;
  if not found then
    raise exception using errcode = 'P0001', message = 'not_found: no such blocker';
  end if;
  if v_blocker.status <> 'open' then
    raise exception using errcode = 'P0001', message = 'illegal_transition: the blocker is already resolved';
  end if;
  new.job_id := v_blocker.job_id;
  if public.is_user_context() or auth.uid() is not null then
    new.resolved_by := auth.uid();
  end if;
  update public.job_blockers set status = 'resolved', resolved_at = now() where id = new.blocker_id;
  return new;
end
$$;
revoke execute on function public.blocker_resolutions_guard() from public;

create trigger blocker_resolutions_guard before insert on public.blocker_resolutions
  for each row execute function public.blocker_resolutions_guard();

do $$
declare
  t text;
begin
  foreach t in array array['job_tasks', 'workflow_executions'] loop
    execute format('create trigger %I before update on public.%I for each row execute function public.touch_updated_at()',
                   t || '_touch', t);
  end loop;
end
$$;
