-- rackpilot control plane, part 6: notifications and cluster safety history.
--
-- notification_outbox is a transactional outbox: the job state change and the message
-- about it commit together (trigger below), and a sender claims rows with a lease, retries
-- with backoff and marks a row dead after too many attempts. Nothing is enqueued unless an
-- enabled notification_settings row subscribes to the event, so idle sites pay nothing.

create type public.notification_channel as enum ('teams', 'email', 'webhook');
create type public.notification_event as enum (
  'job_started', 'job_completed', 'job_failed', 'job_cancelled', 'job_paused', 'job_slow',
  'window_requested', 'window_decided', 'cluster_safety_changed'
);
create type public.outbox_status as enum ('pending', 'sent', 'dead');
create type public.cluster_safety as enum ('safe', 'degraded', 'unsafe', 'unknown');

create table public.notification_settings (
  id         uuid primary key default extensions.gen_random_uuid(),
  site_id    uuid references public.sites (id) on delete cascade,   -- null: every site
  name       text not null constraint notification_settings_name_check check (length(name) between 1 and 128),
  channel    public.notification_channel not null,
  -- an e-mail address or an https URL (Teams/webhook); URLs may embed tokens, so the
  -- table is admin-only
  target     text not null constraint notification_settings_target_check check (length(target) between 3 and 2048),
  events     public.notification_event[] not null constraint notification_settings_events_check check (cardinality(events) > 0),
  job_types  public.job_type[],                                     -- null: every type
  enabled    boolean not null default true,
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint notification_settings_email_target_check check (channel <> 'email' or target ~ '^[^@\s]+@[^@\s]+$'),
  constraint notification_settings_url_target_check check (channel = 'email' or target ~ '^https?://')
);

create trigger notification_settings_touch before update on public.notification_settings
  for each row execute function public.touch_updated_at();

create table public.notification_outbox (
  id               bigint generated always as identity primary key,
  setting_id       uuid references public.notification_settings (id) on delete cascade,
  event_kind       public.notification_event not null,
  payload          jsonb not null constraint notification_outbox_payload_check check (jsonb_typeof(payload) = 'object'),
  job_id           uuid references public.jobs (id) on delete set null,
  status           public.outbox_status not null default 'pending',
  attempts         integer not null default 0 constraint notification_outbox_attempts_check check (attempts >= 0),
  next_attempt_at  timestamptz not null default now(),
  claimed_by       text,
  lease_expires_at timestamptz,
  last_error       text constraint notification_outbox_last_error_check check (length(last_error) <= 4000),
  created_at       timestamptz not null default now(),
  sent_at          timestamptz,
  constraint notification_outbox_sent_at_check check ((status = 'sent') = (sent_at is not null)),
  constraint notification_outbox_lease_check check ((claimed_by is null) = (lease_expires_at is null))
);
create index notification_outbox_due_idx on public.notification_outbox (next_attempt_at, id) where status = 'pending';
create index notification_outbox_job_idx on public.notification_outbox (job_id) where job_id is not null;

create function public.enqueue_job_notifications()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not exists (select 1 from public.notification_settings s where s.enabled) then
    return null;
  end if;
  insert into public.notification_outbox (setting_id, event_kind, payload, job_id)
  select s.id, e.event, jsonb_build_object('job_id', n.id, 'type', n.type, 'status', n.status,
                                            'pause_reason', n.pause_reason, 'site_id', n.site_id,
                                            'error', n.error, 'attempts', n.attempts), n.id
    from old_rows o
    join new_rows n on n.id = o.id
   cross join lateral (select case
            when n.status = 'running' and o.status = 'pending' and n.attempts = 1 then 'job_started'
            when n.status = 'completed' then 'job_completed'
            when n.status = 'failed' then 'job_failed'
            when n.status = 'cancelled' then 'job_cancelled'
            when n.status = 'paused' then 'job_paused'
          end::public.notification_event as event) e
    join public.notification_settings s
      on s.enabled and e.event = any (s.events)
     and (s.site_id is null or s.site_id = n.site_id)
     and (s.job_types is null or n.type = any (s.job_types))
   where o.status is distinct from n.status and e.event is not null;
  return null;
end
$$;

create trigger jobs_enqueue_notifications after update on public.jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.enqueue_job_notifications();

create table public.cluster_safety_status (
  id                   bigint generated always as identity primary key,
  cluster_id           uuid not null references public.clusters (id) on delete cascade,
  observed_at          timestamptz not null default now(),
  status               public.cluster_safety not null,
  hosts_total          integer not null constraint cluster_safety_status_hosts_total_check check (hosts_total >= 0),
  hosts_in_maintenance integer not null constraint cluster_safety_status_hosts_in_maintenance_check check (hosts_in_maintenance between 0 and hosts_total),
  hosts_disconnected   integer not null default 0 constraint cluster_safety_status_hosts_disconnected_check check (hosts_disconnected between 0 and hosts_total),
  ha_enabled           boolean,
  drs_enabled          boolean,
  details              jsonb not null default '{}'::jsonb constraint cluster_safety_status_details_check check (jsonb_typeof(details) = 'object')
);
create index cluster_safety_status_cluster_idx on public.cluster_safety_status (cluster_id, observed_at desc);
