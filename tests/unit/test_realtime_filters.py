"""postgres_changes filter parsing: what the local stack keeps, and the clear refusals of
what it does not (never a filter that silently matches nothing)."""

from __future__ import annotations

import pytest

from devstack.stack.realtime.errors import FilterError
from devstack.stack.realtime.filters import parse_filter


def test_supported_filters_parse():
    assert parse_filter("qty=gte.100").values == ("100",)
    assert parse_filter('name=in.(alpha,"be,ta")').values == ("alpha", "be,ta")
    assert parse_filter('name=eq."a,b"').values == ("a,b",)  # a quoted comma is part of the value


@pytest.mark.parametrize(
    "text", ["id=gt.0,id=lt.100", "id=in.(1,2),name=eq.x", "name=eq.a,b", "name=like.a%", "id=not.eq.1"]
)
def test_unsupported_filters_are_refused(text):
    with pytest.raises(FilterError):
        parse_filter(text)
