"""Supabase-compatible Realtime for the local stack (served by the gateway at /realtime/v1).

postgres_changes from a wal2json logical replication slot, filtered per subscriber by RLS,
and client-to-client broadcast, over the Phoenix websocket protocol the official clients
speak. See service.py for the protocol, dispatch.py for delivery, replication.py for the
stream.
"""

from .errors import (
    BindingError,
    DatabaseUnavailable,
    FilterError,
    ProtocolError,
    RealtimeError,
    SlotError,
)
from .service import RealtimeService

__all__ = [
    "BindingError",
    "DatabaseUnavailable",
    "FilterError",
    "ProtocolError",
    "RealtimeError",
    "RealtimeService",
    "SlotError",
]
