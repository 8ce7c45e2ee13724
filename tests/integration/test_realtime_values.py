"""Realtime's pure parts: wal2json value conversion, filters and frame decoding.

No stack needed; these pin the exact forms Supabase Realtime sends and accepts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.stack.realtime.errors import FilterError, ProtocolError
from devstack.stack.realtime.filters import parse_filter
from devstack.stack.realtime.protocol import decode_binary, decode_text, encode, encode_change
from devstack.stack.realtime.replication import StreamSpec
from devstack.stack.realtime.values import commit_timestamp, convert, iso_timestamp, parse_array


def test_values_are_typed_as_to_jsonb_does():
    assert convert("int8", 5) == 5 and convert("bool", True) is True and convert("text", None) is None
    assert convert("jsonb", '{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert convert("timestamptz", "2026-01-02 03:04:05.123+00") == "2026-01-02T03:04:05.123+00:00"
    assert convert("timestamptz", "2026-01-02 03:04:05+05:30") == "2026-01-02T03:04:05+05:30"
    assert convert("timestamp", "2026-01-02 03:04:05") == "2026-01-02T03:04:05"
    assert convert("timestamptz", "infinity") == "infinity"
    assert convert("date", "2026-01-02") == "2026-01-02"
    assert convert("_int4", "{{1,2},{3,NULL}}") == [[1, 2], [3, None]]
    assert convert("_bool", "{t,f}") == [True, False]
    assert convert("_text", '{plain,"with space","q\\"uote",NULL,"NULL"}') == [
        "plain",
        "with space",
        'q"uote',
        None,
        "NULL",
    ]
    assert convert("_float8", "{1.5,2}") == [1.5, 2]
    assert convert("_jsonb", '{"{\\"a\\": 1}"}') == [{"a": 1}]
    assert convert("_text", "[0:1]={a,b}") == ["a", "b"]
    assert convert("_text", "{broken") == "{broken"


def test_commit_timestamp_is_utc_milliseconds():
    assert commit_timestamp("2026-01-02 03:04:05.987654+00") == "2026-01-02T03:04:05.987Z"
    assert commit_timestamp("2026-01-02 05:04:05+02") == "2026-01-02T03:04:05.000Z"
    assert iso_timestamp("short") == "short"


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
        )
    )
)
def test_text_arrays_round_trip(items):
    def quote(x):
        if x is None:
            return "NULL"
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'

    assert parse_array("{" + ",".join(quote(x) for x in items) + "}") == items


def test_filters_compare_by_column_type():
    types = {"qty": "int4", "name": "text", "at": "timestamptz", "id": "uuid", "ok": "bool"}
    rec = {
        "qty": 10,
        "name": "be,ta",
        "at": "2026-01-02T03:04:05+00:00",
        "id": "6F9619FF-8B86-D011-B42D-00C04FC964FF".lower(),
        "ok": True,
        "none": None,
    }
    t = lambda f: parse_filter(f).matches(rec, types)  # noqa: E731
    assert t("qty=eq.10") and t("qty=gt.9") and t("qty=gte.10") and t("qty=lt.11") and t("qty=lte.10")
    assert not t("qty=neq.10") and not t("qty=gt.10") and t("qty=neq.11")
    assert t("qty=in.(1,10)") and not t("qty=in.(1,2)")
    assert t('name=in.(alpha,"be,ta")') and t('name=eq."be,ta"')  # unquoted, a comma splits filters
    assert t("at=gt.2026-01-02T03:00:00Z") and not t("at=lt.2026-01-02 03:00:00+00")
    assert t("id=eq.6F9619FF-8B86-D011-B42D-00C04FC964FF") and t("ok=eq.true")
    assert not t("none=eq.x") and not t("none=neq.x") and not t("missing=eq.1")
    assert not t("qty=eq.notanumber")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "qty",
        "qty=",
        "qty=eq",
        "qty=like.x",
        "=eq.1",
        "qty=in.1,2",
        "qty=in.()",
        "x" * 2000,
        "name=eq.be,ta",
    ],
)
def test_bad_filters_are_refused(bad):
    with pytest.raises(FilterError):
        parse_filter(bad)


def test_frames_both_versions():
    f = decode_text('{"topic":"realtime:a","event":"phx_join","payload":{"x":1},"ref":"1","join_ref":"1"}')
    assert (f.topic, f.event, f.payload, f.ref, f.join_ref) == ("realtime:a", "phx_join", {"x": 1}, "1", "1")
    g = decode_text('["1","2","realtime:a","broadcast",{"event":"e"}]')
    assert (g.join_ref, g.ref, g.event) == ("1", "2", "broadcast")
    for bad in (
        "nope",
        "[1,2]",
        '{"topic":"","event":"x"}',
        '{"topic":"t","event":5}',
        '{"topic":"t","event":"e","ref":{"a":1}}',
    ):
        with pytest.raises(ProtocolError):
            decode_text(bad)
    assert json.loads(encode("1.0.0", "t", "e", {}, "3")) == {
        "event": "e",
        "payload": {},
        "ref": "3",
        "topic": "t",
        "join_ref": None,
    }
    assert json.loads(encode("2.0.0", "t", "e", {}, "3", "1")) == ["1", "3", "t", "e", {}]
    change = json.loads(encode_change("1.0.0", '"realtime:a"', "[4]", '{"type":"INSERT"}'))
    assert change == {
        "event": "postgres_changes",
        "payload": {"ids": [4], "data": {"type": "INSERT"}},
        "ref": None,
        "topic": "realtime:a",
    }
    assert json.loads(encode_change("2.0.0", '"t"', "[4]", "{}")) == [
        None,
        None,
        "t",
        "postgres_changes",
        {"ids": [4], "data": {}},
    ]


def test_binary_broadcast_push_of_supabase_js():
    # kind 3, join_ref "1", ref "2", topic "realtime:r", event "ev", no metadata, JSON payload
    body = b'{"x":1}'
    frame = bytes([3, 1, 1, 10, 2, 0, 1]) + b"1" + b"2" + b"realtime:r" + b"ev" + body
    f = decode_binary(frame)
    assert (f.topic, f.event, f.ref, f.join_ref) == ("realtime:r", "broadcast", "2", "1")
    assert f.payload == {"type": "broadcast", "event": "ev", "payload": {"x": 1}}
    with pytest.raises(ProtocolError):
        decode_binary(frame[:12])
    with pytest.raises(ProtocolError):
        decode_binary(b"\x04" + frame[1:])


def test_stream_spec_options_escape_table_names():
    spec = StreamSpec(
        tables=frozenset({("public", "jobs"), ("we,ird", "t.a b")}), actions=frozenset({"insert"})
    )
    opts = spec.options()
    # realtime.messages' partitions always stream (broadcast from the database)
    assert opts["add-tables"] == "public.jobs,we\\,ird.t\\.a\\ b,realtime.*" and opts["actions"] == "insert"
    assert StreamSpec().options()["add-tables"] == "realtime.*"
    assert "add-tables" not in StreamSpec(all_tables=True).options()
    # inserts are always decoded (for realtime.messages), whatever the publication publishes
    assert (
        StreamSpec(tables=frozenset({("public", "jobs")}), actions=frozenset({"delete"})).options()["actions"]
        == "delete,insert"
    )
