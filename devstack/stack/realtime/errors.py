"""Errors of the Realtime service: one root, one class per failure."""

from __future__ import annotations


class RealtimeError(Exception):
    """Root of every error raised by devstack.stack.realtime."""


class ProtocolError(RealtimeError):
    """A client frame is malformed, too large or not understood."""


class FilterError(RealtimeError):
    """A postgres_changes filter string cannot be parsed or names an unknown operator."""


class BindingError(RealtimeError):
    """A postgres_changes binding is invalid (bad event, unknown table, no privilege)."""


class SlotError(RealtimeError):
    """The logical replication slot could not be created, attached or dropped."""


class DatabaseUnavailable(RealtimeError):
    """Postgres did not answer in time (restarting, say); the caller may retry."""
