-- rackpilot: audit anchoring.
--
-- The hash chain (audit_log, lanes 0..7) shows any edit that leaves later hashes alone. A
-- database superuser can still edit a row and recompute every later hash of its lane, or
-- delete a lane's last rows, and verify_audit_chain() stays clean. Executors therefore
-- anchor the chain outside the database: every few minutes each executor reads every
-- lane's head (id and hash), signs it with a key of its own and keeps the signed heads in
-- its state folder (executor/audit_anchor.py). `python -m executor --verify-audit` later
-- checks that each anchored row is still there with the anchored hash and that the chain
-- is intact, so a rewrite or truncation older than the last anchor is found.
--
-- Both functions only read, and only the service role (the executor) may call them.

create function public.audit_lane_heads()
returns table (lane smallint, id bigint, hash text, rows_in_lane bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select h.lane, h.id, h.hash, c.n
    from (select distinct on (a.lane) a.lane, a.id, a.hash
            from public.audit_log a
           order by a.lane, a.id desc) h
    join (select a.lane, count(*) as n from public.audit_log a group by a.lane) c using (lane)
   order by h.lane
$$;

-- The anchored rows as the database holds them now (id, lane and stored hash), with the
-- hash recomputed from the row's contents, so an anchored row whose contents changed is
-- seen even if its stored hash was left alone.
create function public.audit_rows_at(p_ids bigint[])
returns table (id bigint, lane smallint, hash text, recomputed text)
language sql
stable
security definer
set search_path = ''
as $$
  select a.id, a.lane, a.hash,
         public.audit_row_hash(a.prev_hash, a.id, a.lane, a.occurred_at, a.actor_kind, a.actor_id, a.actor_role,
                               a.action, a.table_name, a.row_id, a.old_data, a.new_data, a.note)
    from public.audit_log a
   where a.id = any (p_ids)
   order by a.id
$$;

revoke all on function public.audit_lane_heads() from public, anon, authenticated;
revoke all on function public.audit_rows_at(bigint[]) from public, anon, authenticated;
grant execute on function public.audit_lane_heads() to service_role;
grant execute on function public.audit_rows_at(bigint[]) to service_role;
