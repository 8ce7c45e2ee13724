"""``rackpilot demo``: rackpilot's main job on the local stack, end to end and visible.

It brings the local stack up (creating and migrating it on first use), creates the demo
users, prints the URL and keys in .env form, and then does a round trip through every
control-plane service the official clients use:

1. Auth: the demo operator signs in with supabase-py (password grant).
2. Realtime: the operator subscribes to ``postgres_changes`` on the jobs table.
3. REST: the operator reads the seeded site and creates a job, under RLS.
4. Realtime: the INSERT arrives on the subscription.
5. Functions: ``hello`` answers with the operator's identity.

Without ``--once`` the stack stays up until Ctrl-C, then stops cleanly. With ``--once``
it runs the round trip, stops what it started and exits 0 (non-zero on any failure).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from typing import Any

DEMO_USERS = {
    "operator@rackpilot.local": "operator",
    "approver@rackpilot.local": "approver",
    "admin@rackpilot.local": "admin",
    "viewer@rackpilot.local": "viewer",
}


class DemoError(RuntimeError):
    pass


def say(step: str, detail: str = "") -> None:
    print(f"  \u2713 {step}" + (f" \u2014 {detail}" if detail else ""), flush=True)


def _demo_passwords(st) -> dict[str, str]:
    """Demo users' passwords, generated once per stack and kept 0600 in its state folder."""
    path = st.cfg.state_dir / "demo-users.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {email: secrets.token_urlsafe(12) for email in DEMO_USERS}
    path.touch(mode=0o600)
    path.write_text(json.dumps(data, indent=2))
    return data


async def round_trip(st, passwords: dict[str, str]) -> dict[str, Any]:
    from supabase import acreate_client

    env = st.env()
    email = "operator@rackpilot.local"
    client = await acreate_client(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
    t0 = time.perf_counter()
    session = await client.auth.sign_in_with_password({"email": email, "password": passwords[email]})
    if not session.user:
        raise DemoError("sign-in returned no user")
    say("auth", f"signed in as {session.user.email} ({(time.perf_counter() - t0) * 1000:.0f} ms)")

    received: asyncio.Queue = asyncio.Queue()
    subscribed = asyncio.Event()

    def on_change(payload: dict) -> None:
        received.put_nowait(payload)

    def on_status(status, err=None) -> None:
        if str(status).endswith("SUBSCRIBED"):
            subscribed.set()

    channel = client.channel("demo-jobs")
    channel.on_postgres_changes("INSERT", schema="public", table="jobs", callback=on_change)
    await channel.subscribe(on_status)
    await asyncio.wait_for(subscribed.wait(), 10)
    say("realtime", "subscribed to INSERTs on public.jobs")

    sites = (await client.table("sites").select("id,name").order("name").execute()).data
    if not sites:
        raise DemoError("the operator sees no site: the seed did not run or RLS hides it")
    site = sites[0]
    say("rest", f"{len(sites)} site(s) visible to the operator; using {site['name']!r}")

    t_insert = time.perf_counter()
    job = await client.functions.invoke(
        "create-job",
        invoke_options={"body": {"type": "selftest", "site_id": site["id"], "params": {"steps": 3},
                                 "targets": []}},
    ) if st.has_function("create-job") else None
    if job is None:
        inserted = (await client.table("jobs").insert(
            {"type": "selftest", "site_id": site["id"], "params": {"steps": 3}}).execute()).data
        job_id = inserted[0]["id"]
    else:
        job_id = json.loads(job)["job_id"]
    say("rest", f"created job {job_id}")

    payload = await asyncio.wait_for(received.get(), 10)
    latency = (time.perf_counter() - t_insert) * 1000
    record = payload.get("data", {}).get("record") or payload.get("record") or {}
    if str(record.get("id")) != str(job_id):
        raise DemoError(f"realtime delivered another row: {record.get('id')}")
    say("realtime", f"INSERT of job {job_id} delivered ({latency:.0f} ms after the write)")

    hello = json.loads(await client.functions.invoke("hello", invoke_options={"body": {}}))
    say("functions", f"hello answered: {hello}")

    await client.remove_channel(channel)
    await client.auth.sign_out()
    return {"job_id": job_id, "realtime_ms": round(latency, 1)}


def run_demo(once: bool = False) -> int:
    from devstack.cli import add_user
    from devstack.stack.stack import Stack, StackError

    st = Stack()
    started_here = not st.healthy()
    print(f"rackpilot demo \u2014 local stack in {st.cfg.state_dir}", flush=True)
    try:
        st.up()
        say("stack", f"Postgres on 127.0.0.1:{st.cfg.db_port}, gateway on {st.cfg.api_url}")
        passwords = _demo_passwords(st)
        for email, role in DEMO_USERS.items():
            add_user(st, email, role, passwords[email])
        say("users", ", ".join(f"{e} ({r})" for e, r in DEMO_USERS.items())
            + f"; passwords in {st.cfg.state_dir / 'demo-users.json'}")
        print("\n# .env for the official clients and the executor")
        for k, v in st.env().items():
            print(f"{k}={v}")
        print(flush=True)
        result = asyncio.run(round_trip(st, passwords))
        print(f"\nround trip OK: {json.dumps(result)}", flush=True)
    except (StackError, DemoError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if once and started_here:
            st.down()
        return 1
    if once:
        if started_here:
            st.down()
        return 0
    print("the stack stays up; press Ctrl-C to stop it", flush=True)
    stop = {"flag": False}

    def _stop(*_: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop["flag"]:
        time.sleep(0.2)
    print("\nstopping the local stack\u2026", flush=True)
    st.down()
    return 0
