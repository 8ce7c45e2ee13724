"""Audit anchoring: the audit chain's lane heads, signed and kept outside the database.

The audit log is hash-chained in eight lanes (``supabase/migrations/*_audit.sql``). The
chain alone shows an edited row only when the later hashes were left alone: a database
superuser who recomputes the rest of a lane, or who deletes a lane's last rows, leaves a
chain that verifies. An anchor closes that gap for everything older than itself:

* every ``audit_anchor_interval`` seconds the executor reads each lane's head (id, hash)
  with the ``audit_lane_heads`` RPC, signs the heads with an Ed25519 key of its own
  (``<state_dir>/audit_anchor_key.pem``, 0600, never sent anywhere) and appends the signed
  record to ``<state_dir>/audit-anchors.jsonl`` when a head moved;
* ``python -m executor --verify-audit`` checks the database against the anchors: the chain
  verifies, every anchored row is still there, in its lane, with the anchored hash and
  contents that still hash to it, and no lane's head is older than its anchor.

What an anchor cannot see: rows written after the newest anchor. Rows rewritten or deleted
before the next anchor is taken are not detected, so the window of exposure is the audit
rows of the last ``audit_anchor_interval`` seconds (300 by default). Several executors anchor independently, so an attacker has to beat all
of them. Anchors live on the executor host; back the state folder up with the host.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import ExecutorError
from .secrets import check_key_permissions

log = logging.getLogger("rackpilot.executor.audit")

KEY_FILE = "audit_anchor_key.pem"
ANCHOR_FILE = "audit-anchors.jsonl"
KEEP_ANCHORS = 5000  # anchors kept in the file; the oldest are dropped beyond it (count)
VERIFY_ANCHORS = 500  # most recent anchors whose rows --verify-audit checks (count)


class AnchorError(ExecutorError):
    """The anchor file or its key cannot be used (unreadable, or a signature that fails)."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Anchor:
    at: str
    executor: str
    heads: dict[int, tuple[int, str]]  # lane -> (id, hash)

    def body(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "executor": self.executor,
            "heads": [{"lane": lane, "id": i, "hash": h} for lane, (i, h) in sorted(self.heads.items())],
        }


class AnchorStore:
    """The signing key and the append-only anchor file in the executor's state folder."""

    def __init__(self, state_dir: Path, executor_name: str):
        self.dir = state_dir
        self.executor = executor_name
        self.key_path = state_dir / KEY_FILE
        self.path = state_dir / ANCHOR_FILE
        self._key: Ed25519PrivateKey | None = None

    # --- key ----------------------------------------------------------------------------
    def key(self) -> Ed25519PrivateKey:
        if self._key is not None:
            return self._key
        if self.key_path.exists():
            check_key_permissions(self.key_path)
            loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise AnchorError(f"{self.key_path} is not an Ed25519 private key")
            self._key = loaded
            return loaded
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        log.info("generated the audit anchor signing key", extra={"path": str(self.key_path)})
        self._key = key
        return key

    def public_key(self) -> Ed25519PublicKey:
        return self.key().public_key()

    # --- anchors ------------------------------------------------------------------------
    def sign(self, anchor: Anchor) -> dict[str, Any]:
        body = anchor.body()
        pub = self.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"anchor": body, "public_key": _b64(pub), "signature": _b64(self.key().sign(_canonical(body)))}

    def append(self, anchor: Anchor) -> dict[str, Any]:
        record = self.sign(anchor)
        lines = self._lines()
        lines.append(json.dumps(record, sort_keys=True))
        if len(lines) > KEEP_ANCHORS:
            lines = lines[-KEEP_ANCHORS:]
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return record

    def _lines(self) -> list[str]:
        try:
            return [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def anchors(self) -> list[Anchor]:
        """Every anchor in the file, oldest first, each signature checked against this
        executor's key: a record that does not verify is an error, not skipped."""
        pub = self.public_key()
        out = []
        for n, line in enumerate(self._lines(), start=1):
            try:
                record = json.loads(line)
                body = record["anchor"]
                pub.verify(base64.b64decode(record["signature"]), _canonical(body))
                heads = {int(h["lane"]): (int(h["id"]), str(h["hash"])) for h in body["heads"]}
            except InvalidSignature:
                raise AnchorError(
                    f"{self.path}:{n}: the anchor's signature does not verify with this executor's "
                    "key (the file was edited, or comes from another executor)"
                ) from None
            except (ValueError, KeyError, TypeError) as exc:
                raise AnchorError(f"{self.path}:{n}: not an anchor record ({type(exc).__name__})") from None
            out.append(Anchor(body["at"], body["executor"], heads))
        return out

    def latest(self) -> Anchor | None:
        found = self.anchors()
        return found[-1] if found else None


def heads_from_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[int, str]]:
    return {int(r["lane"]): (int(r["id"]), str(r["hash"])) for r in rows or []}


async def anchor_once(control: Any, store: AnchorStore) -> Anchor | None:
    """Read every lane's head and append a signed anchor when a head moved since the last
    one. Returns the new anchor, or None when nothing changed."""
    heads = heads_from_rows(await control.call("audit_lane_heads", {}, retry=False))
    if not heads:
        return None
    last = store.latest()
    if last is not None and last.heads == heads:
        return None
    anchor = Anchor(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), store.executor, heads)
    store.append(anchor)
    log.info(
        "audit chain anchored", extra={"lanes": len(heads), "newest_id": max(i for i, _ in heads.values())}
    )
    return anchor


async def verify(control: Any, store: AnchorStore) -> dict[str, Any]:
    """Check the database's audit chain against this executor's anchors."""
    problems: list[str] = []
    broken = await control.call("verify_audit_chain", {}, retry=False) or []
    for row in broken:
        problems.append(f"chain broken at audit row {row.get('broken_id')}: {row.get('reason')}")
    anchors = store.anchors()[-VERIFY_ANCHORS:]
    heads_now = heads_from_rows(await control.call("audit_lane_heads", {}, retry=False))
    if anchors:
        wanted: dict[int, tuple[int, str, str]] = {}  # id -> (lane, hash, anchored at)
        for a in anchors:
            for lane, (i, h) in a.heads.items():
                wanted[i] = (lane, h, a.at)
        rows = {
            int(r["id"]): r
            for r in await control.call("audit_rows_at", {"p_ids": sorted(wanted)}, retry=False) or []
        }
        for i, (lane, h, at) in sorted(wanted.items()):
            row = rows.get(i)
            if row is None:
                problems.append(f"lane {lane}: row {i}, anchored at {at}, is gone (rows were deleted)")
            elif int(row["lane"]) != lane or row["hash"] != h:
                problems.append(
                    f"lane {lane}: row {i} no longer has the hash anchored at {at} (the lane was rewritten)"
                )
            elif row["recomputed"] != row["hash"]:
                problems.append(f"lane {lane}: row {i}'s contents no longer match its hash")
        latest = anchors[-1]
        for lane, (i, _h) in sorted(latest.heads.items()):
            now = heads_now.get(lane)
            if now is None or now[0] < i:
                problems.append(
                    f"lane {lane}: its newest row ({now[0] if now else 'none'}) is older than the "
                    f"anchored head {i} (rows at the end of the lane were deleted)"
                )
    return {
        "ok": not problems,
        "problems": problems,
        "anchors_checked": len(anchors),
        "newest_anchor": anchors[-1].at if anchors else None,
        "note": None if anchors else "no anchor yet: only the chain itself was checked",
    }
