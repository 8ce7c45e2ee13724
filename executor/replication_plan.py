"""What a replication sends and what retention prunes: pure functions over snapshot lists.

The rules (after zrepl and bzfs):

* **Common base.** Snapshots are the same when their GUIDs are equal (names may differ).
  The base of an incremental is the newest source snapshot *or bookmark* whose GUID is a
  destination snapshot. A bookmark keeps the base alive after its snapshot was pruned.
* **Divergence.** The destination's newest snapshot must be that common one: a newer
  snapshot on the destination (someone snapshotted the replica) is refused as diverged, as
  is a destination written to since (the receive says so). Never rolled back.
* **Full sends** only when the destination dataset does not exist at all and a full send
  is allowed (the pair's ``allow_full_send``, or a job in ``full`` mode). A destination that
  exists without a common snapshot is never overwritten.
* **Incremental kind.** From a snapshot base: ``-I`` (every snapshot in between travels,
  so the destination keeps the source's history); from a bookmark: ``-i`` (a bookmark can
  only be an ``-i`` base).
* **Retention** (both sides, only snapshots named with the job's prefix): keep the newest
  ``keep_last``, plus one per bucket of a grid such as ``24x1h,7x1d`` (the oldest snapshot in
  each bucket, counted back from now), and never: the newest common snapshot, a held
  snapshot, or (source) a snapshot not yet on the destination.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta

from .targets.zfs import DestinationDiverged, NoCommonBase, Snap

_GRID_PART = re.compile(r"^\s*(\d{1,4})\s*x\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_GRID_BUCKETS = 10000


class GridError(ValueError):
    """A retention grid is not of the form ``24x1h,7x1d``."""


def parse_grid(spec: str | None) -> list[tuple[int, int]]:
    """``"24x1h,7x1d"`` -> [(24, 3600), (7, 86400)]; empty or None -> []."""
    if not spec or not spec.strip():
        return []
    out = []
    for part in spec.split(","):
        m = _GRID_PART.match(part)
        if not m:
            raise GridError(f"retention grid part {part.strip()!r} is not COUNTxINTERVAL (e.g. 24x1h)")
        count, n, unit = int(m.group(1)), int(m.group(2)), m.group(3)
        if count < 1 or n < 1:
            raise GridError("retention grid counts and intervals are at least 1")
        out.append((count, n * _UNIT[unit]))
    if sum(c for c, _ in out) > MAX_GRID_BUCKETS:
        raise GridError(f"a retention grid has at most {MAX_GRID_BUCKETS} buckets")
    return out


@dataclass
class SendPlan:
    kind: str  # "incremental" | "full" | "resume" | "none"
    target: Snap | None  # the snapshot the destination will have
    base: Snap | None = None  # snapshot or bookmark
    intermediates: bool = False
    common: Snap | None = None  # newest common snapshot/bookmark before this send
    reason: str = ""

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "snapshot": self.target.name if self.target else None,
            "base": self.base.name if self.base else None,
            "flag": "-I" if self.intermediates else ("-i" if self.base else None),
            "reason": self.reason,
        }


def newest_common(src: list[Snap], dst: list[Snap]) -> Snap | None:
    """The newest source snapshot or bookmark whose GUID a destination snapshot has."""
    dst_guids = {s.guid for s in dst if s.kind == "snapshot"}
    best = None
    for s in src:  # oldest first
        if s.guid in dst_guids and (
            best is None
            or s.createtxg > best.createtxg
            or s.createtxg == best.createtxg
            and s.kind == "snapshot"
        ):
            best = s
    return best


def plan_send(
    src: list[Snap],
    dst: list[Snap] | None,
    *,
    allow_full: bool,
    target_dataset: str = "",
    source_dataset: str = "",
) -> SendPlan:
    """What to send so the destination ends at the source's newest snapshot.

    ``dst`` None: the destination dataset does not exist. Raises NoCommonBase or
    DestinationDiverged (nothing is sent, nothing destroyed)."""
    src_snaps = [s for s in src if s.kind == "snapshot"]
    if not src_snaps:
        return SendPlan("none", None, reason="the source has no snapshot")
    newest = src_snaps[-1]
    if dst is None:
        if not allow_full:
            raise NoCommonBase(
                f"{target_dataset or 'the destination'} does not exist and the pair does not allow "
                f"a full send",
                operation="plan",
            )
        return SendPlan("full", newest, reason="the destination does not exist: full send")
    dst_snaps = [s for s in dst if s.kind == "snapshot"]
    common = newest_common(src, dst)
    if common is None:
        if dst_snaps:
            raise NoCommonBase(
                f"{target_dataset or 'the destination'} has {len(dst_snaps)} snapshot(s) and none is "
                f"on {source_dataset or 'the source'}: it holds other data, which rackpilot never "
                f"overwrites",
                operation="plan",
            )
        raise NoCommonBase(
            f"{target_dataset or 'the destination'} exists but has no snapshot to build on; "
            f"rackpilot never overwrites an existing dataset",
            operation="plan",
        )
    if dst_snaps and dst_snaps[-1].guid != common.guid:
        newer = [
            s.short
            for s in dst_snaps
            if s.createtxg > max((d.createtxg for d in dst_snaps if d.guid == common.guid), default=-1)
        ]
        raise DestinationDiverged(
            f"{target_dataset or 'the destination'} has snapshot(s) {newer[:5]} newer than the "
            f"newest common one {common.short}",
            operation="plan",
        )
    if common.guid == newest.guid:
        return SendPlan("none", newest, common=common, reason="the destination is up to date")
    if common.kind == "bookmark":
        return SendPlan(
            "incremental",
            newest,
            base=common,
            intermediates=False,
            common=common,
            reason=f"incremental from bookmark {common.short}",
        )
    return SendPlan(
        "incremental",
        newest,
        base=common,
        intermediates=True,
        common=common,
        reason=f"incremental from {common.short}",
    )


@dataclass
class PrunePlan:
    destroy: list[Snap] = field(default_factory=list)
    keep: list[Snap] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)  # name -> why it is never pruned here


def plan_prune(
    snaps: list[Snap],
    *,
    prefix: str,
    keep_last: int,
    grid: list[tuple[int, int]],
    now: float,
    common_guid: int | None,
    held: AbstractSet[str] = frozenset(),
    unreplicated_after: int | None = None,
    time_of=None,
) -> PrunePlan:
    """Which of ``snaps`` (one side; snapshots only) retention destroys.

    Only snapshots named ``<prefix>_...`` are candidates. ``common_guid``: the newest common
    snapshot, never destroyed. ``held``: names with any hold. ``unreplicated_after``: on the
    source, the createtxg of the newest common one: newer snapshots are not on the
    destination yet and are kept. ``time_of(snap)`` gives a snapshot's time (default its
    creation)."""
    time_of = time_of or (lambda s: s.creation)
    plan = PrunePlan()
    ours = []
    for s in snaps:
        if s.kind != "snapshot":
            continue
        if not s.short.startswith(prefix + "_"):
            continue
        if common_guid is not None and s.guid == common_guid:
            plan.protected[s.name] = "newest common snapshot"
        elif s.name in held:
            plan.protected[s.name] = "held"
        elif unreplicated_after is not None and s.createtxg > unreplicated_after:
            plan.protected[s.name] = "not replicated yet"
        ours.append(s)
    ours.sort(key=lambda s: (time_of(s), s.createtxg), reverse=True)  # newest first
    keep = {s.name for s in ours[: max(keep_last, 0)]}
    # grid: consecutive buckets back from now; in each, the oldest snapshot survives
    edge = now
    buckets: list[tuple[float, float]] = []
    for count, length in grid:
        for _ in range(count):
            buckets.append((edge - length, edge))
            edge -= length
    if buckets:
        by_time = sorted(ours, key=lambda s: (time_of(s), s.createtxg))  # oldest first
        j = 0
        for lo, hi in sorted(buckets):
            while j < len(by_time) and time_of(by_time[j]) < lo:
                j += 1
            if j < len(by_time) and time_of(by_time[j]) < hi:
                keep.add(by_time[j].name)
        # anything newer than now (clock skew) is kept, not pruned
        keep |= {s.name for s in ours if time_of(s) >= now}
    for s in sorted(ours, key=lambda s: s.createtxg):
        if s.name in keep or s.name in plan.protected:
            plan.keep.append(s)
        else:
            plan.destroy.append(s)
    return plan


def lag_seconds(newest_on_destination_creation: float | None, now: float) -> float | None:
    """How far the replica is behind: the age of the newest snapshot it has (None: never synced)."""
    if newest_on_destination_creation is None:
        return None
    return max(0.0, now - newest_on_destination_creation)


def grid_span(grid: list[tuple[int, int]]) -> timedelta:
    return timedelta(seconds=sum(c * n for c, n in grid))
