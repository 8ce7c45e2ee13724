"""Prefer headers, db-tx-end, Range and the or= splitter of the REST layer (no database)."""

from __future__ import annotations

import pytest

from devstack.stack.rest import query as q
from devstack.stack.rest import service
from devstack.stack.rest.errors import RangeNotSatisfiable


@pytest.mark.parametrize(
    ("tx_end", "prefer", "rollback", "applied"),
    [
        ("commit", "tx=rollback", False, []),  # PostgREST's default: Prefer: tx is ignored
        ("commit-allow-override", "tx=rollback", True, ["tx=rollback"]),
        ("commit-allow-override", None, False, []),
        ("rollback", "tx=commit", True, []),
        ("rollback-allow-override", "tx=commit", False, ["tx=commit"]),
        ("rollback-allow-override", "return=minimal", True, []),
    ],
)
def test_db_tx_end_and_prefer_tx(monkeypatch, tx_end, prefer, rollback, applied):
    monkeypatch.setattr(service, "TX_END", tx_end)
    p = service._Prefer(prefer)
    assert p.rollback() is rollback
    assert p.applied(p.rollback()) == applied


def test_prefer_missing_default_is_read_and_reported():
    p = service._Prefer("return=representation, missing=default")
    assert p.missing_default and p.representation
    assert "missing=default" in p.applied(False)
    assert not service._Prefer("missing=null").missing_default


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("0-1", (0, None), (0, 2)),
        ("2-", (0, None), (2, None)),
        ("items=1-3", (0, None), (1, 3)),
        ("1-3", (0, 2), (1, 1)),
        ("0-9", (5, 10), (5, 5)),
        ("bogus", (3, 4), (3, 4)),  # an unreadable Range is ignored, as PostgREST does
    ],
)
def test_range_header_intersects_limit_and_offset(header, query, expected):
    assert service._intersect(*query, service._range_header(header)) == expected


@pytest.mark.parametrize(("header", "query"), [("3-1", (0, None)), ("5-6", (0, 2))])
def test_an_empty_range_is_416(header, query):
    with pytest.raises(RangeNotSatisfiable):
        service._intersect(*query, service._range_header(header))


def test_or_keeps_brace_and_bracket_literals_whole():
    assert q.split_top("id.in.(1,4),tags.cs.{is:open,priority:high}") == [
        "id.in.(1,4)",
        "tags.cs.{is:open,priority:high}",
    ]
    assert q.split_top('r.ov."[1,5)",t.cs.{"a,(b"}') == ['r.ov."[1,5)"', 't.cs.{"a,(b"}']
    req = q.parse_query([("or", "(id.in.(1,4),tags.cs.{is:open,priority:high})")])
    kind, negate, children = req.filters[0]
    assert kind == "or" and len(children) == 2 and children[1][2] == "cs"
    with pytest.raises(q.ParseError):
        q.split_top("tags.cs.{a,b")
