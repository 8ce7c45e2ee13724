"""Hostile dataset names on a replication pair, sent the way an admin's console or notebook
sends them - through the REST API with the admin's own session (supabase-py) - are refused
with an error naming the dataset rule, and no row is written; a NUL is refused as well
(issue 23). The executor's own check is tests/unit/test_replication_plan.py; the console
form's is tests/unit/test_console_replication.py."""

from __future__ import annotations

import json

import pytest
from postgrest.exceptions import APIError

from tests.integration._functions_support import close_env, counts, make_env, q

HOSTILE = [
    "tank/a;reboot",
    "tank/$(reboot)",
    "tank/`id`",
    "tank/a b",
    "tank/../etc",
    "../tank",
    "tank/a\x00b",
    "tank//a",
    "tank/a\nb",
    "tank/a'b",
    "mirror/a",
]


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def _row(env, name: str, **cols) -> dict:
    return {
        "site_id": env.fleet.site_a,
        "name": name,
        "source_host": "zfs1",
        "source_dataset": "tank/vm",
        "target_host": "zfs2",
        "target_dataset": "backup/vm",
        **cols,
    }


def _count(env, like: str) -> int:
    return q(env.conn, "select count(*)::int as n from public.replication_pairs where name like %s", like)[0][
        "n"
    ]


@pytest.mark.parametrize("column", ["source_dataset", "target_dataset"])
@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_an_admin_cannot_register_a_pair_with_a_hostile_dataset_name(env, column, bad):
    admin = env.users["admin"].client
    name = f"hostile-{env.tag}-{column}-{abs(hash(bad))}"
    with pytest.raises(APIError) as err:
        admin.table("replication_pairs").insert(_row(env, name, **{column: bad})).execute()
    e = err.value
    assert str(e.code).startswith(("22", "23")), (e.code, e.message)  # bad data, not a server fault
    if "\x00" not in bad:
        assert f'check constraint "replication_pairs_{column}' in (e.message or ""), e.message
    else:  # the platform's answer, as hosted Supabase's PostgREST gives it (docs/replication.md)
        assert (e.code, e.message) == ("22P05", "unsupported Unicode escape sequence"), (e.code, e.message)
    assert "Traceback" not in str(e.message)
    assert _count(env, name) == 0


def test_a_nul_sent_to_rest_directly_gets_the_platforms_400(env):
    """REST direct, as any HTTP client sends it: JSON's \\u0000 reaches Postgres, which
    cannot store it in text; the answer is the platform's 400 with SQLSTATE 22P05 (the same
    on hosted Supabase), which names no field - the console and create-job refuse a NUL
    themselves, naming it. Nothing is written."""
    name = f"nul-{env.tag}"
    url = env.stack.env()["SUPABASE_URL"] + "/rest/v1/replication_pairs"
    body = json.dumps(_row(env, name, source_dataset="tank/a\x00b"))
    assert "\\u0000" in body
    r = env.raw.http.post(
        url,
        content=body.encode(),
        headers={
            "apikey": env.raw.anon,
            "authorization": f"Bearer {env.users['admin'].token}",
            "content-type": "application/json",
        },
    )
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()
    assert (err["code"], err["message"]) == ("22P05", "unsupported Unicode escape sequence"), err
    assert "\\u0000" in (err.get("details") or ""), err
    assert _count(env, name) == 0


def test_the_same_admin_registers_a_pair_with_good_names(env):
    admin = env.users["admin"].client
    name = f"good-{env.tag}"
    row = admin.table("replication_pairs").insert(_row(env, name, source_dataset="tank/vm-01.a:b")).execute()
    assert row.data[0]["source_dataset"] == "tank/vm-01.a:b"
    assert _count(env, name) == 1


@pytest.mark.parametrize("bad", ["x;reboot", "$(id)", "a b", "..", "a\x00", "a/b", "a@b", "-rf"], ids=repr)
def test_create_job_refuses_a_hostile_snapshot_prefix(env, bad):
    """The one name a replication_sync job itself carries (its snapshot prefix) is checked by
    create-job against the job's schema: 400, the field named, no job written."""
    before = counts(env)
    status, body = env.raw.call(
        "create-job",
        {
            "type": "replication_sync",
            "params": {"replication_pair_ids": [env.fleet.replication_pair], "snapshot_prefix": bad},
        },
        env.users["operator"].token,
    )
    assert status == 400, (status, body)
    assert "snapshot_prefix" in json.dumps(body), body
    assert "Traceback" not in json.dumps(body) and "stack" not in body
    assert counts(env) == before
