-- rackpilot control plane, part 5: the audit log.
--
-- Append-only: UPDATE, DELETE and TRUNCATE are refused by triggers, whoever asks (the
-- service role included), and no API role holds write privileges on the table.
-- Hash-chained in lanes: the log is eight interleaved chains (lane 0..7). A writing transaction
-- takes one lane's transaction-scoped advisory lock (the first free one, so concurrent
-- writers rarely wait) and keeps it until commit; each row stores its lane and the hash
-- of the previous row of that lane. Within a lane the lock makes chain order the commit
-- order, so no chain ever forks, and ids are assigned inside the lock. A single global
-- chain would serialise every audited transaction (every job claim) on one lock from its
-- first audit row to its commit; lanes keep the same tamper evidence per chain.
-- verify_audit_chain() recomputes every lane and returns the first row that does not fit.
-- Chaining needs READ COMMITTED (each statement sees the previous holder's commit); a
-- stricter isolation level could not see a concurrent append and is refused.
--
-- Actor: the signed-in user (auth.uid()), else the executor an RPC acts for, else the
-- service role or the database role itself. A transaction may attach a note
-- (set_config('rackpilot.audit_note', ..., true)), as force_resume does.

create table public.audit_log (
  id          bigint primary key,
  lane        smallint not null constraint audit_log_lane_check check (lane between 0 and 7),
  occurred_at timestamptz not null default now(),
  actor_kind  text not null constraint audit_log_actor_kind_check check (actor_kind in ('user', 'executor', 'service', 'system')),
  actor_id    uuid,
  actor_role  text not null,
  action      text not null,
  table_name  text,
  row_id      text,
  old_data    jsonb,
  new_data    jsonb,
  note        text,
  -- hex sha256; written only by audit_log_chain (a regex check here costs more per row
  -- than the hash itself)
  prev_hash   text not null constraint audit_log_prev_hash_check check (length(prev_hash) = 64),
  hash        text not null constraint audit_log_hash_check check (length(hash) = 64)
);
create sequence public.audit_log_id_seq owned by public.audit_log.id;
create index audit_log_row_idx on public.audit_log (table_name, row_id, id);
create index audit_log_lane_idx on public.audit_log (lane, id);

create function public.audit_row_hash(
  p_prev_hash text, p_id bigint, p_lane smallint, p_occurred_at timestamptz, p_actor_kind text, p_actor_id uuid,
  p_actor_role text, p_action text, p_table_name text, p_row_id text, p_old_data jsonb,
  p_new_data jsonb, p_note text
)
returns text
language sql
stable
-- no SET clause: it keeps the function inlinable, which makes verify_audit_chain several
-- times faster; every name inside is schema-qualified, so the caller's path cannot matter
as $$
  -- a JSON array is an unambiguous encoding of the fields (no separator games)
  select encode(extensions.digest(convert_to(jsonb_build_array(
           p_prev_hash, p_id, p_lane, (extract(epoch from p_occurred_at) * 1000000)::bigint, p_actor_kind,
           p_actor_id, p_actor_role, p_action, p_table_name, p_row_id, p_old_data, p_new_data, p_note
         )::text, 'UTF8'), 'sha256'), 'hex')
$$;

create function public.audit_log_chain()
returns trigger
language plpgsql
as $$
declare
  -- 'lane:hash' of this transaction's last row, while it holds that lane's lock
  v_tail text := nullif(current_setting('rackpilot.audit_tail', true), '');
  v_lane smallint;
  v_prev text;
begin
  if v_tail is null then
    if current_setting('transaction_isolation') <> 'read committed' then
      raise exception using errcode = 'P0001',
        message = 'audit_isolation: audited writes need READ COMMITTED so the audit chain sees concurrent appends';
    end if;
    for i in 0..7 loop
      if pg_try_advisory_xact_lock(hashtext('rackpilot.audit_log'), (pg_backend_pid() + i) % 8) then
        v_lane := (pg_backend_pid() + i) % 8;
        exit;
      end if;
    end loop;
    if v_lane is null then
      v_lane := pg_backend_pid() % 8;
      perform pg_advisory_xact_lock(hashtext('rackpilot.audit_log'), v_lane);
    end if;
    select a.hash into v_prev from public.audit_log a where a.lane = v_lane order by a.id desc limit 1;
    v_prev := coalesce(v_prev, repeat('0', 64));
  else
    v_lane := split_part(v_tail, ':', 1)::smallint;
    v_prev := split_part(v_tail, ':', 2);
  end if;
  -- The lock is held until commit, so this transaction's own last hash stays the lane's
  -- tail: it is cached in a transaction-local setting, which a rolled-back savepoint
  -- reverts together with its rows (and with the lock if the savepoint took it).
  new.id := nextval('public.audit_log_id_seq');
  new.lane := v_lane;
  new.prev_hash := v_prev;
  new.hash := public.audit_row_hash(new.prev_hash, new.id, new.lane, new.occurred_at, new.actor_kind, new.actor_id,
                                    new.actor_role, new.action, new.table_name, new.row_id, new.old_data,
                                    new.new_data, new.note);
  perform set_config('rackpilot.audit_tail', v_lane || ':' || new.hash, true);
  return new;
end
$$;

create trigger audit_log_chain before insert on public.audit_log
  for each row execute function public.audit_log_chain();

create function public.audit_log_immutable()
returns trigger
language plpgsql
as $$
begin
  raise exception using errcode = 'P0001',
    message = format('audit_append_only: audit_log rows cannot be changed (%s refused)', tg_op);
end
$$;

create trigger audit_log_no_change before update or delete on public.audit_log
  for each row execute function public.audit_log_immutable();
create trigger audit_log_no_truncate before truncate on public.audit_log
  for each statement execute function public.audit_log_immutable();

-- Returns nothing when the chain is intact, else the first broken row and why.
create function public.verify_audit_chain()
returns table (broken_id bigint, reason text, expected text, found text)
language sql
stable
security definer
set search_path = ''
as $$
  with c as (
    select a.id, a.prev_hash, a.hash,
           coalesce(lag(a.hash) over (partition by a.lane order by a.id), repeat('0', 64)) as expected_prev,
           public.audit_row_hash(a.prev_hash, a.id, a.lane, a.occurred_at, a.actor_kind, a.actor_id, a.actor_role,
                                 a.action, a.table_name, a.row_id, a.old_data, a.new_data, a.note) as recomputed
      from public.audit_log a
  )
  select c.id,
         case when c.prev_hash <> c.expected_prev then 'prev_hash does not match the previous row''s hash in its lane'
              else 'hash does not match the row''s contents' end,
         case when c.prev_hash <> c.expected_prev then c.expected_prev else c.recomputed end,
         case when c.prev_hash <> c.expected_prev then c.prev_hash else c.hash end
    from c
   where c.prev_hash <> c.expected_prev or c.hash <> c.recomputed
   order by c.id
   limit 1
$$;

-- actor and note -------------------------------------------------------------------------
-- plpgsql rather than SQL: a SQL function called from FROM is planned again on every
-- call, and this one runs once per audited statement (every claim)
create function public.audit_actor(out kind text, out actor_id uuid, out actor_role text)
language plpgsql
stable
as $$
declare
  v_uid uuid := auth.uid();
  v_exec text := nullif(current_setting('rackpilot.executor_id', true), '');
  v_role text := auth.role();
begin
  kind := case when v_uid is not null then 'user'
               when v_exec is not null then 'executor'
               when v_role = 'service_role' then 'service'
               else 'system' end;
  actor_id := coalesce(v_uid, v_exec::uuid);
  actor_role := coalesce(v_role, session_user::text);
end
$$;

-- jobs: every state change, cancel/pause request and window change -------------------------
create function public.audit_jobs()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, new_data, note)
    select a.kind, a.actor_id, a.actor_role, 'job.created', 'jobs', n.id::text,
           jsonb_build_object('type', n.type, 'status', n.status, 'site_id', n.site_id, 'cluster_id', n.cluster_id,
                              'priority', n.priority, 'scheduled_for', n.scheduled_for, 'params', n.params,
                              'scope', n.scope, 'maintenance_window_id', n.maintenance_window_id,
                              'created_by', n.created_by),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from new_rows n cross join public.audit_actor() a;
  elsif tg_op = 'UPDATE' then
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, old_data, new_data, note)
    select a.kind, a.actor_id, a.actor_role,
           case when o.status is distinct from n.status then 'job.status'
                when o.cancel_requested_at is distinct from n.cancel_requested_at then 'job.cancel_requested'
                when o.pause_requested_at is distinct from n.pause_requested_at then 'job.pause_requested'
                else 'job.rescheduled' end,
           'jobs', n.id::text,
           jsonb_build_object('status', o.status, 'pause_reason', o.pause_reason, 'lease_epoch', o.lease_epoch,
                              'claimed_by', o.claimed_by, 'scheduled_for', o.scheduled_for, 'priority', o.priority,
                              'maintenance_window_id', o.maintenance_window_id),
           jsonb_build_object('status', n.status, 'pause_reason', n.pause_reason, 'lease_epoch', n.lease_epoch,
                              'claimed_by', n.claimed_by, 'attempts', n.attempts, 'error', n.error,
                              'cancel_requested_at', n.cancel_requested_at, 'pause_requested_at', n.pause_requested_at,
                              'scheduled_for', n.scheduled_for, 'priority', n.priority,
                              'maintenance_window_id', n.maintenance_window_id),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from old_rows o
      join new_rows n on n.id = o.id
     cross join public.audit_actor() a
     where o.status is distinct from n.status
        or o.cancel_requested_at is distinct from n.cancel_requested_at
        or o.pause_requested_at is distinct from n.pause_requested_at
        or (o.scheduled_for, o.priority, o.maintenance_window_id)
           is distinct from (n.scheduled_for, n.priority, n.maintenance_window_id);
  else
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, old_data, note)
    select a.kind, a.actor_id, a.actor_role, 'job.deleted', 'jobs', o.id::text,
           jsonb_build_object('type', o.type, 'status', o.status, 'site_id', o.site_id),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from old_rows o cross join public.audit_actor() a;
  end if;
  return null;
end
$$;

create trigger audit_jobs_insert after insert on public.jobs
  referencing new table as new_rows for each statement execute function public.audit_jobs();
create trigger audit_jobs_update after update on public.jobs
  referencing old table as old_rows new table as new_rows for each statement execute function public.audit_jobs();
create trigger audit_jobs_delete after delete on public.jobs
  referencing old table as old_rows for each statement execute function public.audit_jobs();

-- inventory, credentials, roles, windows, decisions: generic row diff ----------------------
-- Keys that change on every sync or heartbeat are left out (they are not decisions), and
-- credential ciphertext never enters the log.
create function public.audit_redact(p_row jsonb)
returns jsonb
language sql
immutable
as $$
  select p_row - array['sealed_secret', 'updated_at', 'last_heartbeat_at', 'last_sync_at', 'last_seen_at', 'observed_at']
$$;

create function public.audit_row_key(p_row jsonb)
returns text
language sql
immutable
as $$
  select coalesce(p_row ->> 'id', p_row ->> 'user_id', p_row ->> 'job_type',
                  (p_row ->> 'server_id') || '/' || (p_row ->> 'component') || '/' || (p_row ->> 'fqdd'))
$$;

create function public.audit_changes()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, new_data, note)
    select a.kind, a.actor_id, a.actor_role, tg_table_name || '.insert', tg_table_name,
           public.audit_row_key(to_jsonb(n)), public.audit_redact(to_jsonb(n)),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from new_rows n cross join public.audit_actor() a;
  elsif tg_op = 'UPDATE' then
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, old_data, new_data, note)
    select a.kind, a.actor_id, a.actor_role, tg_table_name || '.update', tg_table_name, d.key,
           (select jsonb_object_agg(k.key, d.old -> k.key) from jsonb_object_keys(d.new || d.old) k(key)
             where d.old -> k.key is distinct from d.new -> k.key),
           (select jsonb_object_agg(k.key, d.new -> k.key) from jsonb_object_keys(d.new || d.old) k(key)
             where d.old -> k.key is distinct from d.new -> k.key),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from (select public.audit_row_key(to_jsonb(n)) as key, public.audit_redact(to_jsonb(o)) as old,
                   public.audit_redact(to_jsonb(n)) as new
              from old_rows o join new_rows n on public.audit_row_key(to_jsonb(o)) = public.audit_row_key(to_jsonb(n))) d
     cross join public.audit_actor() a
     where d.old <> d.new;
  else
    insert into public.audit_log (actor_kind, actor_id, actor_role, action, table_name, row_id, old_data, note)
    select a.kind, a.actor_id, a.actor_role, tg_table_name || '.delete', tg_table_name,
           public.audit_row_key(to_jsonb(o)), public.audit_redact(to_jsonb(o)),
           nullif(current_setting('rackpilot.audit_note', true), '')
      from old_rows o cross join public.audit_actor() a;
  end if;
  return null;
end
$$;

do $$
declare
  t text;
begin
  foreach t in array array['sites', 'executors', 'credential_sets', 'servers', 'vcenters', 'clusters', 'esxi_hosts',
                           'vms', 'firmware_catalogs', 'firmware_packages', 'server_firmware', 'ome_instances',
                           'replication_pairs', 'user_roles', 'maintenance_windows', 'blocker_resolutions',
                           'safety_policies']
  loop
    execute format('create trigger audit_%s_insert after insert on public.%I referencing new table as new_rows '
                   'for each statement execute function public.audit_changes()', t, t);
    execute format('create trigger audit_%s_update after update on public.%I referencing old table as old_rows '
                   'new table as new_rows for each statement execute function public.audit_changes()', t, t);
    execute format('create trigger audit_%s_delete after delete on public.%I referencing old table as old_rows '
                   'for each statement execute function public.audit_changes()', t, t);
  end loop;
end
$$;
