"""Audit anchoring: lane heads signed outside the database catch what the chain cannot.

The happy path runs through the real control plane (REST RPCs with the service key, and
`python -m executor --verify-audit`). The attacks are a database superuser's: ordinary
triggers off (session_replication_role = replica), one lane rewritten with every later
hash recomputed, or a lane's last rows deleted. They run inside a transaction that is rolled
back, so the shared log stays intact; the anchor check reads that transaction through
`SqlControl`, which calls the same SQL functions the RPCs are (a transport, not a double).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid

import pytest

from executor.audit_anchor import AnchorError, AnchorStore, anchor_once, verify
from executor.config import ExecutorSettings
from executor.control import ControlPlane

from .pgutil import connect


class SqlControl:
    """control.call(fn, params) over one psycopg2 transaction (see the module docstring)."""

    def __init__(self, cur):
        self.cur = cur

    async def call(self, fn: str, params: dict, retry: bool = True):
        args = ", ".join(f"{k} => %({k})s" for k in params)
        self.cur.execute(f"select to_jsonb(r) from public.{fn}({args}) r", params)
        return [row[0] for row in self.cur.fetchall()]


def settings(supabase_env, tmp_path) -> ExecutorSettings:
    return ExecutorSettings(
        supabase_url=supabase_env["SUPABASE_URL"],
        supabase_key=supabase_env["SUPABASE_SERVICE_ROLE_KEY"],
        site="anchor-test",
        executor_name="anchor-test",
        state_dir=tmp_path / "state",
    )


def write_audit_rows(db_url: str, n: int = 6) -> None:
    with contextlib.closing(connect(db_url)) as c, c.cursor() as cur:
        for _ in range(n):
            cur.execute("insert into public.sites (name) values (%s)", (f"anchor-{uuid.uuid4().hex[:10]}",))


def run(coro):
    return asyncio.run(coro)


def test_anchor_and_verify_through_the_control_plane(supabase_env, db_url, tmp_path):
    write_audit_rows(db_url)
    s = settings(supabase_env, tmp_path)
    store = AnchorStore(s.state_dir, s.executor_name)

    async def go():
        control = ControlPlane(s)
        try:
            first = await anchor_once(control, store)
            again = await anchor_once(control, store)  # nothing moved in between: nothing appended
            return first, again, await verify(control, store)
        finally:
            await control.close()

    first, again, report = run(go())
    assert first is not None and first.heads
    assert again is None or again.heads != first.heads  # only a moved head is anchored again
    assert report["ok"], report["problems"]
    assert report["anchors_checked"] >= 1
    assert oct(store.key_path.stat().st_mode & 0o777) == "0o600"

    env = {
        **os.environ,
        "RACKPILOT_SUPABASE_URL": s.supabase_url,
        "RACKPILOT_SUPABASE_KEY": s.supabase_key.get_secret_value(),
        "RACKPILOT_SITE": s.site,
        "RACKPILOT_EXECUTOR_NAME": s.executor_name,
        "RACKPILOT_STATE_DIR": str(s.state_dir),
    }
    res = subprocess.run(
        [sys.executable, "-m", "executor", "--verify-audit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True
    assert s.supabase_key.get_secret_value() not in res.stdout + res.stderr


def test_api_roles_cannot_read_lane_heads(db_url):
    with contextlib.closing(connect(db_url)) as c, c.cursor() as cur:
        for fn in ("audit_lane_heads()", "audit_rows_at(bigint[])"):
            for role in ("anon", "authenticated"):
                cur.execute("select has_function_privilege(%s, %s, 'execute')", (role, f"public.{fn}"))
                assert cur.fetchone() == (False,), (role, fn)


@pytest.fixture
def anchored(db_url, tmp_path):
    """Audit rows, then an anchor of the lane heads taken over SQL; yields (store, lane, anchored head)."""
    write_audit_rows(db_url, 8)
    store = AnchorStore(tmp_path / "state", "anchor-test")
    with contextlib.closing(connect(db_url)) as c, c.cursor() as cur:
        anchor = run(anchor_once(SqlControl(cur), store))
        # the lane with the most rows below its head, so that a rewrite can start well inside it
        cur.execute("select lane, count(*) from public.audit_log group by lane order by 2 desc limit 1")
        lane = cur.fetchone()[0]
    return store, lane, anchor.heads[lane][0]


RECOMPUTE_LANE_FROM = """
do $$
declare r record; prev text;
begin
  select a.hash into prev from public.audit_log a where a.lane = %(lane)s and a.id < %(start)s order by a.id desc limit 1;
  prev := coalesce(prev, repeat('0', 64));
  for r in select * from public.audit_log a where a.lane = %(lane)s and a.id >= %(start)s order by a.id loop
    update public.audit_log a
       set prev_hash = prev,
           hash = public.audit_row_hash(prev, r.id, r.lane, r.occurred_at, r.actor_kind, r.actor_id, r.actor_role,
                                        r.action, r.table_name, r.row_id, r.old_data, r.new_data, r.note)
     where a.id = r.id
    returning a.hash into prev;
  end loop;
end $$
"""


def test_a_rewritten_lane_passes_the_chain_check_but_not_the_anchor(db_url, anchored):
    store, lane, head = anchored
    tamper = connect(db_url, autocommit=False)
    try:
        with tamper.cursor() as t:
            t.execute("set local session_replication_role = replica")
            t.execute(
                "select id from public.audit_log where lane = %s and id <= %s order by id desc offset 2 limit 1",
                (lane, head),
            )
            victim = t.fetchone()[0]
            t.execute("update public.audit_log set note = 'forged' where id = %s", (victim,))
            t.execute(RECOMPUTE_LANE_FROM, {"lane": lane, "start": victim})
            t.execute("select count(*) from public.verify_audit_chain()")
            assert t.fetchone() == (0,)  # the attack is real: the chain alone sees nothing

            report = run(verify(SqlControl(t), store))
            assert not report["ok"]
            assert any(f"lane {lane}: row {head}" in p and "rewritten" in p for p in report["problems"]), (
                report
            )
    finally:
        tamper.rollback()
        tamper.close()


def test_a_truncated_lane_tail_is_found(db_url, anchored):
    store, lane, head = anchored
    tamper = connect(db_url, autocommit=False)
    try:
        with tamper.cursor() as t:
            t.execute("set local session_replication_role = replica")
            t.execute(
                "select id from public.audit_log where lane = %s and id <= %s order by id desc offset 1 limit 1",
                (lane, head),
            )
            cut = t.fetchone()[0]
            t.execute("delete from public.audit_log where lane = %s and id > %s", (lane, cut))
            t.execute("select count(*) from public.verify_audit_chain()")
            assert t.fetchone() == (0,)

            report = run(verify(SqlControl(t), store))
            assert not report["ok"]
            assert any(f"row {head}" in p and "gone" in p for p in report["problems"]), report
            assert any("older than the anchored head" in p for p in report["problems"]), report
    finally:
        tamper.rollback()
        tamper.close()


def test_an_edited_anchor_file_is_refused(anchored):
    store, lane, head = anchored
    lines = store.path.read_text().splitlines()
    record = json.loads(lines[-1])
    record["anchor"]["heads"][0]["id"] += 1000
    store.path.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    with pytest.raises(AnchorError, match="signature does not verify"):
        store.anchors()
