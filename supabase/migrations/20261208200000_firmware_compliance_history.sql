-- rackpilot control plane: firmware compliance over time (issue 19, the Reports' chart).
--
-- Today's compliance is computed, not stored: v_firmware_compliance compares each server's
-- firmware inventory (server_firmware, replaced by every inventory read) with the site's
-- registered catalogs, so yesterday's answer is gone once a server is read again. This keeps
-- one snapshot per server per run:
--
--   firmware_compliance_history  one row per (run, server): the components the run's read left
--                                compliant, outdated (urgent among them) and unknown, and the
--                                verdict the fleet screen shows (compliant, outdated, partly
--                                unknown, no inventory)
--   v_firmware_compliance_history  the same rows with the server's name and the job's type
--
-- Filled by SQL on the result: when an inventory_refresh or firmware_compliance job ends
-- (completed or failed: a run that read some servers and not others still observed those),
-- every server of the job's site (or of its params.server_ids) that the run read, i.e. whose
-- last_seen_at is at or after the job's start, gets a snapshot computed exactly as
-- v_firmware_compliance computes it now. A server the run could not read gets none. Ending
-- the same job twice (a retried status update) keeps one row per server (the later one).

create table public.firmware_compliance_history (
  id           bigint generated always as identity primary key,
  site_id      uuid not null references public.sites (id) on delete cascade,
  server_id    uuid not null references public.servers (id) on delete cascade,
  job_id       uuid references public.jobs (id) on delete set null,
  recorded_at  timestamptz not null default now(),
  verdict      text not null constraint firmware_compliance_history_verdict_check check (verdict in ('compliant', 'outdated', 'partly unknown', 'no inventory')),
  compliant    boolean not null generated always as (verdict = 'compliant') stored,
  components   integer not null default 0 constraint firmware_compliance_history_components_check check (components >= 0),
  outdated     integer not null default 0 constraint firmware_compliance_history_outdated_check check (outdated >= 0),
  urgent       integer not null default 0 constraint firmware_compliance_history_urgent_check check (urgent >= 0),
  unknown      integer not null default 0 constraint firmware_compliance_history_unknown_check check (unknown >= 0),
  unique (job_id, server_id)
);
create index firmware_compliance_history_site_idx
  on public.firmware_compliance_history (site_id, recorded_at desc);
create index firmware_compliance_history_server_idx
  on public.firmware_compliance_history (server_id, recorded_at desc);

alter table public.firmware_compliance_history enable row level security;
revoke all on public.firmware_compliance_history from anon, authenticated;
grant select, delete on public.firmware_compliance_history to authenticated;
-- its identity sequence too (the platform's defaults grant the API roles USAGE and UPDATE on
-- every new sequence): nothing writes the history but its SQL trigger
-- (tests/integration/test_hostile_review.py checks every sequence of public)
revoke all on sequence public.firmware_compliance_history_id_seq from anon, authenticated;
create policy firmware_compliance_history_select_viewer on public.firmware_compliance_history
  for select to authenticated using ((select public.has_role('viewer')));
create policy firmware_compliance_history_delete_admin on public.firmware_compliance_history
  for delete to authenticated using ((select public.has_role('admin')));

-- the snapshot of one job's servers (the trigger below; owner only)
create function public.record_firmware_compliance(p_job_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job   public.jobs%rowtype;
  v_ids   uuid[];
  v_count integer;
begin
  select * into v_job from public.jobs j where j.id = p_job_id;
  if not found then
    return 0;
  end if;
  if jsonb_typeof(v_job.params -> 'server_ids') = 'array' and jsonb_array_length(v_job.params -> 'server_ids') > 0 then
    select array_agg(x::uuid) into v_ids
      from jsonb_array_elements_text(v_job.params -> 'server_ids') x
     where x ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
  end if;
  insert into public.firmware_compliance_history
         (site_id, server_id, job_id, recorded_at, verdict, components, outdated, urgent, unknown)
  select s.site_id, s.id, v_job.id, now(),
         case when coalesce(c.components, 0) = 0 then 'no inventory'
              when c.outdated > 0 then 'outdated'
              when c.unknown > 0 then 'partly unknown'
              else 'compliant' end,
         coalesce(c.components, 0), coalesce(c.outdated, 0), coalesce(c.urgent, 0), coalesce(c.unknown, 0)
    from public.servers s
    left join lateral (
      select count(*)::integer as components,
             count(*) filter (where f.compliance = 'outdated')::integer as outdated,
             count(*) filter (where f.compliance = 'outdated' and f.criticality = 'urgent')::integer as urgent,
             count(*) filter (where f.compliance = 'unknown')::integer as unknown
        from public.v_firmware_compliance f
       where f.server_id = s.id
    ) c on true
   where s.site_id = v_job.site_id
     and (v_ids is null or s.id = any (v_ids))
     and s.last_seen_at is not null
     and s.last_seen_at >= coalesce(v_job.started_at, v_job.created_at)
  on conflict (job_id, server_id) do update
     set recorded_at = excluded.recorded_at, verdict = excluded.verdict,
         components = excluded.components, outdated = excluded.outdated,
         urgent = excluded.urgent, unknown = excluded.unknown;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
revoke execute on function public.record_firmware_compliance(uuid) from public, anon, authenticated;

create function public.jobs_record_firmware_compliance()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.record_firmware_compliance(new.id);
  return null;
end
$$;
revoke execute on function public.jobs_record_firmware_compliance() from public, anon, authenticated;

create trigger jobs_record_firmware_compliance
  after update of status on public.jobs
  for each row
  when (new.status in ('completed', 'failed') and old.status is distinct from new.status
        and new.type::text in ('inventory_refresh', 'firmware_compliance'))
  execute function public.jobs_record_firmware_compliance();

create view public.v_firmware_compliance_history with (security_invoker = true) as
select h.id, h.site_id, h.server_id, s.name as server_name, h.job_id, j.type::text as job_type,
       h.recorded_at, h.verdict, h.compliant, h.components, h.outdated, h.urgent, h.unknown
  from public.firmware_compliance_history h
  join public.servers s on s.id = h.server_id
  left join public.jobs j on j.id = h.job_id;
revoke all on public.v_firmware_compliance_history from anon, authenticated;
grant select on public.v_firmware_compliance_history to authenticated;
