"""Every edge function action, called as anon and as each application role, against
policies/access.yaml's `functions:` section.

Each cell is a real call through supabase-py's ``functions.invoke`` with a body that is
valid for the action and a fresh piece of state for it (a running job to pause, a window
someone else requested to approve, ...), so an allowed role must get a 2xx and a refused
role a 403 (anon: 401) that wrote nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._functions_support import (
    ROLES,
    FnEnv,
    close_env,
    counts,
    insert_blocker,
    insert_job,
    insert_window,
    invoke,
    make_env,
    q,
    window_slot,
)
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

ROOT = Path(__file__).resolve().parents[2]
POLICY = yaml.safe_load((ROOT / "policies" / "access.yaml").read_text())["functions"]
COPY = json.loads((ROOT / "supabase" / "functions" / "_shared" / "function-access.json").read_text())


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def _body(env: FnEnv, fn: str, action: str, role: str) -> dict[str, Any]:
    """A body that succeeds for ``role`` if the role is allowed, with fresh state behind it."""
    f, c, u = env.fleet, env.conn, env.users
    me = u[role].user_id if role in u else u["viewer"].user_id
    other = u["viewer"].user_id if role != "viewer" else u["operator"].user_id
    name = f"{role}-{fn}-{action}-{env.tag}"
    if fn == "create-job":
        return {
            "type": "scp_backup",
            "params": {"server_ids": [f.standalone_server]},
            "dry_run": action == "dry_run",
        }
    if fn == "job-control":
        state = {
            "pause": ("running", None),
            "resume": ("paused", "operator"),
            "cancel": ("pending", None),
            "retry": ("failed", None),
            "force_resume": ("paused", "executor_lost"),
        }[action]
        body = {"action": action, "job_id": insert_job(c, f, *state)}
        if action == "force_resume":
            body["reason"] = "executor host replaced; the interrupted step is safe to repeat"
        return body
    if fn == "resolve-blockers":
        job = insert_job(c, f, "paused", "blockers")
        return {
            "job_id": job,
            "decisions": [{"blocker_id": insert_blocker(c, job, None, None, "other"), "decision": "abort"}],
        }
    if fn == "maintenance-windows":
        if action == "create":
            starts, ends = window_slot()
            return {
                "action": "create",
                "site_id": f.site_a,
                "title": name,
                "starts_at": starts,
                "ends_at": ends,
            }
        if action == "create_series":
            # horizon one day: its occurrences stay clear of window_slot()'s (two days on)
            return {
                "action": "create_series",
                "site_id": f.site_a,
                "title": name,
                "recurrence": "0 4 * * *",
                "duration_minutes": 30,
                "horizon_days": 1,
            }
        if action.endswith("_series"):
            requester = me if action == "cancel_series" else other
            series = q(
                c,
                "insert into public.maintenance_window_series (site_id, title, recurrence, duration_minutes, "
                "horizon_days, requested_by) values (%s, %s, '30 5 * * *', 30, 1, %s) returning id",
                f.site_a,
                name,
                requester,
            )[0]["id"]
            return {"action": action, "series_id": str(series)}
        requester = me if action == "cancel" else other
        return {"action": action, "window_id": insert_window(c, f.site_a, requester)}
    if fn == "encrypt-credentials":
        if action == "seal":
            return {
                "action": "seal",
                "site_id": f.site_a,
                "name": name,
                "kind": "idrac",
                "username": "root",
                "secret": "matrix-secret-1",
                "endpoints": [{"url": "https://10.30.0.1"}],
            }
        if action == "reseal":
            cred = q(
                c,
                INSERT_SEALED_CREDENTIAL,
                f.site_a,
                name,
                "idrac",
                "root",
                f.executor_key.kid,
                "x" * 40,
            )[0]["id"]
            return {
                "action": "reseal",
                "credential_set_id": str(cred),
                "secret": "matrix-secret-2",
                "endpoints": [{"url": "https://10.30.0.1"}],
            }
        return {"action": "status", "site_id": f.site_a}
    if fn == "notification-settings":
        if action == "upsert":
            return {
                "action": "upsert",
                "settings": [
                    {"name": name, "channel": "email", "target": "ops@example.com", "events": ["job_failed"]}
                ],
            }
        if action == "delete":
            sid = q(
                c,
                "insert into public.notification_settings (name, channel, target, events) "
                "values (%s, 'email', 'ops@example.com', '{job_failed}') returning id",
                name,
            )[0]["id"]
            return {"action": "delete", "ids": [str(sid)]}
        return {"action": "list"}
    if fn == "schedules":  # save (fire is the service role's, outside the matrix)
        return {
            "action": "save",
            "site_id": f.site_a,
            "name": name,
            "job_type": "vcenter_sync",
            "params": {"vcenter_id": f.vcenter},
            "recurrence": "@hourly",
        }
    raise AssertionError(f"no body for {fn}.{action}")


def test_the_functions_copy_of_the_policy_matches_access_yaml():
    ladder = list(ROLES)
    assert set(COPY) == set(POLICY)
    for fn, actions in POLICY.items():
        assert set(actions) == set(COPY[fn]), fn
        for action, roles in actions.items():
            least = COPY[fn][action]
            assert sorted(roles) == sorted(ladder[ladder.index(least) :]), f"{fn}.{action}"


def _cells() -> list[tuple[str, str, str]]:
    return [
        (fn, action, role)
        for fn, actions in sorted(POLICY.items())
        for action in sorted(actions)
        for role in ("anon", *ROLES)
    ]


def test_every_role_by_function_cell(env: FnEnv, stack):
    checked = 0
    failures: list[str] = []
    for fn, action, role in _cells():
        body = _body(env, fn, action, role)
        before = counts(env)
        if role == "anon":
            # the anon key is a valid JWT but no user: the function refuses it
            status, data = env.raw.call(fn, body, env.raw.anon)
            expect: Callable[[int], bool] = lambda s: s == 401  # noqa: E731
        else:
            status, data = invoke(env.users[role], fn, body)
            allowed = role in POLICY[fn][action]
            expect = (lambda s: 200 <= s < 300) if allowed else (lambda s: s == 403)  # noqa: E731
        if not expect(status):
            failures.append(f"{fn}.{action} as {role}: {status} {data}")
        if not 200 <= status < 300 and counts(env) != before:
            failures.append(f"{fn}.{action} as {role}: refused ({status}) but rows changed")
        if status == 403:
            assert "role" in data["error"], data
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked == len(_cells()) == 115
    print(f"\nfunctions access matrix: {checked} cells ({len(_cells()) // 5} actions x 5 callers)")


def test_forged_and_missing_tokens_are_refused_by_the_gateway(env: FnEnv):
    body = {"type": "scp_backup", "params": {"server_ids": [env.fleet.standalone_server]}}
    token = env.users["admin"].token
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    before = counts(env)
    for fn in POLICY:
        for t in (None, forged, "not.a.jwt"):
            status, data = env.raw.call(fn, body, t, headers={"apikey": ""} if t is None else None)
            assert status == 401, (fn, t, data)
            assert set(data) >= {"error", "code", "details"}, data
    assert counts(env) == before
