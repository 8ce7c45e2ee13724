"""Names instead of UUIDs: users by display name or email, and sites, clusters, hosts,
servers and VMs by name, looked up once per screen and cached.

Users come from the ``user_labels`` RPC (display name or email, for callers holding a
role); the signed-in user is "you". Anything that cannot be named is shown as a short id
(8 characters); the views put the whole id in a tooltip, selectable for copying.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from console.api import Api, Row
from console.errors import ConsoleError
from console.models.common import short_id

TABLES = {
    "site": "sites",
    "cluster": "clusters",
    "host": "esxi_hosts",
    "server": "servers",
    "vm": "vms",
    "vcenter": "vcenters",
    "replication_pair": "replication_pairs",
    "window": "maintenance_windows",
}


class Names:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.me = getattr(api.session, "user_id", None)
        self._users: dict[str, str] = {}
        self._things: dict[str, dict[str, str]] = {k: {} for k in TABLES}

    # -- users ---------------------------------------------------------------------------
    def load_users(self, ids: Iterable[Any]) -> None:
        want = sorted({str(i) for i in ids if i} - set(self._users) - {str(self.me)})
        if not want:
            return
        try:
            data = self.api.session.client.rpc("user_labels", {"p_ids": want}).execute().data
            rows = cast(list[dict[str, Any]], data or [])
        except Exception:  # noqa: BLE001 - names are a nicety: an id is still correct
            rows = []
        for r in rows:
            self._users[str(r["id"])] = str(r["label"])
        for i in want:
            self._users.setdefault(i, f"user {short_id(i)}")

    def user(self, uid: Any) -> str:
        if not uid:
            return ""
        if str(uid) == str(self.me):
            return "you"
        if str(uid) not in self._users:
            self.load_users([uid])
        return self._users.get(str(uid), f"user {short_id(uid)}")

    # -- inventory -----------------------------------------------------------------------
    def load(self, kind: str, ids: Iterable[Any]) -> None:
        cache = self._things[kind]
        want = sorted({str(i) for i in ids if i} - set(cache))
        if not want:
            return
        col = "title" if kind == "window" else "name"
        try:
            rows = self.api._rest(
                f"{kind} names", lambda c: c.table(TABLES[kind]).select(f"id,{col}").in_("id", want)
            )
        except ConsoleError:
            rows = []
        for r in rows:
            cache[str(r["id"])] = str(r.get(col) or short_id(r["id"]))
        for i in want:
            cache.setdefault(i, short_id(i))

    def name(self, kind: str, oid: Any) -> str:
        if not oid:
            return ""
        if str(oid) not in self._things[kind]:
            self.load(kind, [oid])
        return self._things[kind].get(str(oid), short_id(oid))

    def remember(self, kind: str, rows: Iterable[Row]) -> None:
        """Names already at hand (a screen that loaded the rows anyway)."""
        for r in rows:
            if r.get("id") and r.get("name"):
                self._things[kind][str(r["id"])] = str(r["name"])
