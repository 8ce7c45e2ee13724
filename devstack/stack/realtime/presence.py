"""Presence as Supabase Realtime does it (Phoenix.Presence under the Phoenix protocol).

A channel tracks one payload under its presence key (``config.presence.key``, a fresh
UUID when empty). Each tracked payload is a *meta*: the payload plus a unique ``phx_ref``
(and ``phx_ref_prev`` after an update). The state of a topic groups metas by key:
``{key: {"metas": [meta, ...]}}``; a change is a ``presence_diff``
``{"joins": {...}, "leaves": {...}}`` in the same shape. Public and private channels of
one name are separate topics, as for broadcast.

The service (service.py) decides who gets what, as Supabase does:
- ``presence_state`` right after a join with presence enabled (for a private channel only
  with the presence read policy), and when a ``track`` is what enables presence;
- ``presence_diff`` to every channel of a public topic, and to the channels of a private
  topic that have presence enabled and may read presence;
- tracking on a private channel needs the presence write policy (INSERT on
  realtime.messages with extension ``presence``);
- leaving, a socket closing or a channel being replaced or revoked untracks it.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from .channels import Channel

PRESENCE_CLIENT_MAX_CALLS = 5  # track/untrack messages per channel per window, Supabase's default (count)
PRESENCE_CLIENT_WINDOW_S = 30.0  # that window (s)

Group = tuple[str, bool]  # (topic, private)


def new_ref() -> str:
    return secrets.token_urlsafe(12)


class PresenceRegistry:
    """Who is tracked on which topic: {(topic, private): {channel: (key, meta)}}."""

    def __init__(self) -> None:
        self.topics: dict[Group, dict[Channel, tuple[str, dict[str, Any]]]] = {}

    @staticmethod
    def group(channel: Channel) -> Group:
        return channel.topic, channel.private

    def state(self, group: Group) -> dict[str, dict[str, list[dict[str, Any]]]]:
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for key, meta in self.topics.get(group, {}).values():
            out.setdefault(key, {"metas": []})["metas"].append(meta)
        return out

    def track(self, channel: Channel, payload: dict[str, Any]) -> dict[str, Any]:
        """Track (or update) ``channel``'s payload; returns the presence_diff."""
        entries = self.topics.setdefault(self.group(channel), {})
        key = channel.presence_key
        old = entries.get(channel)
        meta = {**payload, "phx_ref": new_ref()}
        leaves: dict[str, Any] = {}
        if old is not None:
            meta["phx_ref_prev"] = old[1]["phx_ref"]
            leaves = {old[0]: {"metas": [old[1]]}}
        entries[channel] = (key, meta)
        return {"joins": {key: {"metas": [meta]}}, "leaves": leaves}

    def untrack(self, channel: Channel) -> dict[str, Any] | None:
        """Forget ``channel``'s presence; the presence_diff, or None if it tracked nothing."""
        group = self.group(channel)
        entries = self.topics.get(group)
        if not entries or channel not in entries:
            return None
        key, meta = entries.pop(channel)
        if not entries:
            del self.topics[group]
        return {"joins": {}, "leaves": {key: {"metas": [meta]}}}


def presence_key(config: dict[str, Any]) -> str:
    """The key a channel tracks under: ``config.presence.key`` when it is a non-empty
    string, number or boolean (JSON object keys are strings), else a fresh UUID."""
    presence = config.get("presence")
    key = presence.get("key") if isinstance(presence, dict) else None
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(key)
    if isinstance(key, str) and key:
        return key
    return str(uuid.uuid1())


def presence_enabled(config: dict[str, Any]) -> bool:
    """``config.presence.enabled`` (booleans or "true"/"false"); a join without a
    ``presence`` object has presence enabled, as Supabase's join payload rules say."""
    presence = config.get("presence")
    if not isinstance(presence, dict):
        return True
    enabled = presence.get("enabled", False)
    if isinstance(enabled, str):
        return enabled.lower() == "true"
    return bool(enabled)
