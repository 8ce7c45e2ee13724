"""console.identity.directory_login tries a sign-in again after the function's "busy"
answer (409, its "retry it"), and nothing else. The function is replaced by a stand-in
that answers in order: no real peer is needed for the client's retry rule itself (the
sign-in paths run against slapd in tests/integration/test_identity*.py)."""

from __future__ import annotations

import pytest

from console import identity


def _answers(monkeypatch, answers: list):
    calls = []

    def once(*args):
        calls.append(args)
        a = answers[len(calls) - 1]
        if isinstance(a, Exception):
            raise a
        return a

    monkeypatch.setattr(identity, "_directory_login_once", once)
    monkeypatch.setattr(identity, "BUSY_PAUSE_S", 0.0)
    return calls


def test_busy_is_tried_again_and_the_sign_in_goes_through(monkeypatch):
    busy = identity.IdentityError(409, "busy", "the record is locked by another operation; retry it")
    calls = _answers(monkeypatch, [busy, busy, {"role": "operator"}])
    assert identity.directory_login("u", "k", "dc1", "alice", "pw") == {"role": "operator"}
    assert len(calls) == 3


def test_other_refusals_are_not_retried_and_busy_not_for_ever(monkeypatch):
    wrong = identity.IdentityError(401, "invalid_credentials", "wrong username or password")
    calls = _answers(monkeypatch, [wrong])
    with pytest.raises(identity.IdentityError) as info:
        identity.directory_login("u", "k", "dc1", "alice", "pw")
    assert info.value.code == "invalid_credentials" and len(calls) == 1

    busy = identity.IdentityError(409, "busy", "retry it")
    calls = _answers(monkeypatch, [busy] * (identity.BUSY_RETRIES + 1))
    with pytest.raises(identity.IdentityError) as info:
        identity.directory_login("u", "k", "dc1", "alice", "pw")
    assert info.value.code == "busy" and len(calls) == identity.BUSY_RETRIES + 1
