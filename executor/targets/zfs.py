"""ZFS over SSH: validated names, the commands replication runs, their output parsed, and one
error class per failure an operator must tell apart.

Names follow ZFS's own rules (``zfs_namecheck.c``), narrowed where a name would need
care in a shell or a log: a component is ``[A-Za-z0-9_.:-]``, never ``.`` or ``..``; the
pool (first component) starts with a letter and is none of ZFS's reserved words; the
whole name stays under ZFS's 256 bytes. ZFS itself also allows spaces; rackpilot does
not. ``%`` (ZFS's temporary names), ``@``/``#`` outside their one place, NUL, ``;``,
``$()``, quotes and every other character are refused. Every argument is then quoted for
the remote shell anyway (:meth:`executor.targets.ssh.SshStack.argv`).

Commands are built as argv lists here; nothing from a job, a pair row or a remote host's
output is ever pasted into a command line unvalidated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import TargetError
from .ssh import CommandResult, SshEndpoint, SshStack

ZFS = "zfs"
MAX_NAME_LEN = 255  # bytes (ZFS_MAX_DATASET_NAME_LEN is 256 with the NUL)
_COMPONENT = re.compile(r"^[A-Za-z0-9_.:-]+$")
_POOL_RESERVED = {
    "mirror",
    "raidz",
    "raidz1",
    "raidz2",
    "raidz3",
    "draid",
    "spare",
    "log",
    "cache",
    "special",
    "dedup",
}
HOLD_TAG = "rackpilot"  # hold tag on the base of the next incremental (both sides)
TOKEN_RE = re.compile(r"^[0-9A-Za-z+/=_-]{1,8192}$")  # a resume token as zfs prints it


# --- errors ---------------------------------------------------------------------------------------
class ReplicationError(TargetError):
    """Root of ZFS replication failures. None of them destroys anything: rackpilot never
    rolls a destination back, never receives with -F and never destroys a snapshot that is
    the newest common one or held."""


class DatasetNameError(ReplicationError, ValueError):
    """A dataset, snapshot or bookmark name breaks ZFS's (narrowed) naming rules."""

    hint = "names are [A-Za-z0-9_.:-] components separated by '/', the pool starting with a letter"


class DestinationDiverged(ReplicationError):
    """The destination was written to, or has snapshots the source lacks, since the last
    replicated snapshot. rackpilot does not roll it back (that would destroy data)."""

    hint = (
        "someone wrote to the replica or snapshotted it: inspect it, then roll it back by hand "
        "(zfs rollback) or move it aside; rackpilot never discards replica data itself"
    )


class DatasetBusy(ReplicationError):
    """The dataset is busy (a receive or another operation in progress, a held snapshot)."""

    hint = "another replication or operation holds the dataset; the next run retries"


class NoSpace(ReplicationError):
    """The destination pool ran out of space."""

    hint = "free space on the destination pool or raise its quota; the partial receive is kept for resuming"


class NoCommonBase(ReplicationError):
    """Source and destination share no snapshot or bookmark, and the pair does not allow a full send."""

    hint = (
        "allow a full send on the pair (or run the job in full mode) to seed an empty destination; "
        "a destination holding other data is never overwritten"
    )


class DatasetMissing(ReplicationError):
    """The dataset does not exist on that host."""


class ResumeTokenInvalid(ReplicationError):
    """The destination's resume token no longer matches what the source has."""

    hint = "the partial receive is kept; an operator may abort it on the destination (zfs receive -A)"


class ZfsCommandFailed(ReplicationError):
    """A zfs command failed for a reason not covered by a more specific class."""


# --- names ----------------------------------------------------------------------------------------
def _check_components(ds: str, what: str) -> None:
    if not ds:
        raise DatasetNameError(f"{what}: empty dataset name")
    parts = ds.split("/")
    for p in parts:
        if not p:
            raise DatasetNameError(f"{what} {ds!r}: empty component (leading, trailing or double '/')")
        if p in (".", ".."):
            raise DatasetNameError(f"{what} {ds!r}: '.' and '..' are not dataset components")
        if not _COMPONENT.match(p):
            raise DatasetNameError(f"{what} {ds!r}: component {p!r} has characters outside [A-Za-z0-9_.:-]")
    pool = parts[0]
    if not pool[0].isalpha():
        raise DatasetNameError(f"{what} {ds!r}: the pool name must start with a letter")
    if pool in _POOL_RESERVED or re.match(r"^c[0-9]", pool):
        raise DatasetNameError(f"{what} {ds!r}: {pool!r} is reserved by ZFS as a pool name")


def _check_text(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise DatasetNameError(f"{what}: not a string")
    if "\x00" in name:
        raise DatasetNameError(f"{what}: NUL in name")
    if len(name.encode()) > MAX_NAME_LEN:
        raise DatasetNameError(f"{what}: longer than {MAX_NAME_LEN} bytes")
    return name


def dataset_name(name: object) -> str:
    """``name`` if it is a valid dataset name (pool/fs/...), else DatasetNameError."""
    s = _check_text(name, "dataset")
    if "@" in s or "#" in s:
        raise DatasetNameError(f"dataset {s!r}: '@' and '#' belong to snapshot and bookmark names only")
    _check_components(s, "dataset")
    return s


def short_name(name: object, what: str = "snapshot") -> str:
    """A snapshot's or bookmark's own part (after ``@``/``#``)."""
    s = _check_text(name, what)
    if not s or not _COMPONENT.match(s) or s in (".", ".."):
        raise DatasetNameError(f"{what} name {s!r}: one component of [A-Za-z0-9_.:-]")
    return s


def snapshot_name(name: object) -> str:
    """``pool/fs@snap`` validated."""
    s = _check_text(name, "snapshot")
    ds, sep, snap = s.partition("@")
    if not sep:
        raise DatasetNameError(f"snapshot {s!r}: no '@'")
    dataset_name(ds)
    short_name(snap)
    return s


def bookmark_name(name: object) -> str:
    s = _check_text(name, "bookmark")
    ds, sep, bm = s.partition("#")
    if not sep:
        raise DatasetNameError(f"bookmark {s!r}: no '#'")
    dataset_name(ds)
    short_name(bm, "bookmark")
    return s


def prefix_name(prefix: object) -> str:
    """A snapshot prefix: a short name without '_' at its end (the timestamp follows '_')."""
    s = short_name(prefix, "snapshot prefix")
    if len(s) > 64:
        raise DatasetNameError("snapshot prefix: at most 64 characters")
    return s


def new_snapshot_short(prefix: str, when: datetime) -> str:
    """rackpilot's naming scheme: ``<prefix>_<UTC yyyy-mm-ddThh:mm:ss.ffffffZ>``; sortable,
    parseable back to its time (:func:`snapshot_time`), unique at microsecond resolution."""
    return f"{prefix_name(prefix)}_{when.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def snapshot_time(short: str, prefix: str) -> datetime | None:
    """The time in a rackpilot snapshot name of ``prefix``; None for any other snapshot."""
    if not short.startswith(prefix + "_"):
        return None
    try:
        return datetime.strptime(short[len(prefix) + 1 :], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# --- listings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snap:
    """A snapshot or bookmark of one dataset, as ``zfs list -p`` reports it."""

    name: str  # full name (pool/fs@x or pool/fs#x)
    guid: int
    createtxg: int
    creation: int  # unix seconds
    kind: str  # "snapshot" | "bookmark"

    @property
    def short(self) -> str:
        return self.name.split("@" if self.kind == "snapshot" else "#", 1)[1]

    @property
    def dataset(self) -> str:
        return self.name.split("@" if self.kind == "snapshot" else "#", 1)[0]


def parse_list(text: str, dataset: str) -> list[Snap]:
    """Lines of ``zfs list -H -p -o name,guid,createtxg,creation,type``, oldest first; lines of
    other datasets and unparseable ones are refused (a host answering oddly is not trusted)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise ZfsCommandFailed(f"unexpected zfs list line {line[:120]!r}")
        name, guid, txg, creation, kind = cols
        if kind == "snapshot":
            snapshot_name(name)
        elif kind == "bookmark":
            bookmark_name(name)
        else:
            raise ZfsCommandFailed(f"unexpected zfs list type {kind!r}")
        s = Snap(name, int(guid), int(txg), int(creation), kind)
        if s.dataset != dataset:
            raise ZfsCommandFailed(f"zfs list of {dataset} returned {name}")
        out.append(s)
    return sorted(out, key=lambda s: (s.createtxg, s.kind != "snapshot", s.name))


# --- command lines --------------------------------------------------------------------------------
def cmd_list(dataset: str) -> list[str]:
    return [
        ZFS,
        "list",
        "-H",
        "-p",
        "-o",
        "name,guid,createtxg,creation,type",
        "-t",
        "snapshot,bookmark",
        "-s",
        "createtxg",
        "-d",
        "1",
        dataset_name(dataset),
    ]


def cmd_exists(dataset: str) -> list[str]:
    return [ZFS, "list", "-H", "-p", "-o", "name", dataset_name(dataset)]


def cmd_resume_token(dataset: str) -> list[str]:
    return [ZFS, "get", "-H", "-p", "-o", "value", "receive_resume_token", dataset_name(dataset)]


def cmd_snapshot(snapshot: str) -> list[str]:
    return [ZFS, "snapshot", snapshot_name(snapshot)]


def cmd_send(
    snapshot: str,
    *,
    base: str | None = None,
    intermediates: bool = False,
    dry_run: bool = False,
    raw: bool = False,
) -> list[str]:
    """``zfs send`` of ``snapshot``; incremental from ``base`` (a snapshot or bookmark of the
    same dataset: ``-i``, or ``-I`` with every snapshot in between)."""
    argv = [ZFS, "send"]
    if dry_run:
        argv += ["-n", "-P"]
    if raw:
        argv.append("-w")
    if base is not None:
        if "#" in base:
            bookmark_name(base)
            if intermediates:
                raise DatasetNameError("-I takes a snapshot base, not a bookmark")
        else:
            snapshot_name(base)
        if base.split("@")[0].split("#")[0] != snapshot.split("@")[0]:
            raise DatasetNameError(f"base {base} is not of the dataset of {snapshot}")
        argv += ["-I" if intermediates else "-i", base]
    return [*argv, snapshot_name(snapshot)]


def cmd_send_resume(token: str, *, dry_run: bool = False) -> list[str]:
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise ResumeTokenInvalid("the destination's resume token is not one zfs would print")
    return [ZFS, "send", *(["-n", "-P"] if dry_run else []), "-t", token]


def cmd_recv(dataset: str) -> list[str]:
    # -s: an interrupted receive is kept and resumable. -u: not mounted. Never -F: a
    # destination that changed is refused, not rolled back.
    return [ZFS, "receive", "-s", "-u", dataset_name(dataset)]


def cmd_hold(snapshot: str, tag: str = HOLD_TAG) -> list[str]:
    return [ZFS, "hold", short_name(tag, "hold tag"), snapshot_name(snapshot)]


def cmd_release(snapshot: str, tag: str = HOLD_TAG) -> list[str]:
    return [ZFS, "release", short_name(tag, "hold tag"), snapshot_name(snapshot)]


def cmd_holds(snapshots: list[str]) -> list[str]:
    return [ZFS, "holds", "-H", *[snapshot_name(s) for s in snapshots]]


def cmd_bookmark(snapshot: str, bookmark: str) -> list[str]:
    return [ZFS, "bookmark", snapshot_name(snapshot), bookmark_name(bookmark)]


def cmd_destroy(name: str) -> list[str]:
    """Destroy ONE snapshot or bookmark; never a dataset, never a range or a recursive destroy."""
    if "@" in name:
        snapshot_name(name)
        if "%" in name or "," in name:
            raise DatasetNameError("one snapshot at a time")
    else:
        bookmark_name(name)
    return [ZFS, "destroy", name]


def parse_send_size(text: str) -> int | None:
    """The estimated stream size from ``zfs send -n -P`` (its ``size`` line)."""
    for line in text.splitlines():
        cols = line.split("\t")
        if cols[0] == "size" and len(cols) >= 2 and cols[-1].isdigit():
            return int(cols[-1])
    return None


def classify(stderr: str, *, target: str, operation: str) -> ReplicationError:
    """The error class of a failed zfs command, from zfs's words."""
    text = stderr.strip()
    low = text.lower()
    msg = " ".join(text.splitlines()[:3])[:500] or "zfs failed without a message"
    kw = {"target": target, "operation": operation}
    if (
        "has been modified" in low
        or "destination has snapshots" in low
        or "most recent snapshot" in low
        and "does not match" in low
        or "destination already exists" in low
        or "destination" in low
        and "exists" in low
        and "must specify -f" in low
    ):
        return DestinationDiverged(msg, **kw)
    if "out of space" in low or "no space left" in low or "quota exceeded" in low:
        return NoSpace(msg, **kw)
    if "dataset is busy" in low or "resource busy" in low or "is busy" in low:
        return DatasetBusy(msg, **kw)
    if "dataset does not exist" in low:
        return DatasetMissing(msg, **kw)
    if (
        "resume token" in low
        or "kernel modules must be upgraded to receive this stream" in low
        or "incremental source" in low
        and "no longer exists" in low
    ):
        return ResumeTokenInvalid(msg, **kw)
    return ZfsCommandFailed(msg, **kw)


# --- one host ------------------------------------------------------------------------------------
class ZfsHost:
    """The zfs commands of replication on one host, over the job's SSH stack."""

    def __init__(self, ssh: SshStack, ep: SshEndpoint, *, timeout: float = 300.0):
        self.ssh = ssh
        self.ep = ep
        self.timeout = timeout

    @property
    def display(self) -> str:
        return self.ep.display

    async def _run(
        self, argv: list[str], operation: str, *, ok_missing: bool = False
    ) -> CommandResult | None:
        res = await self.ssh.run(self.ep, argv, timeout=self.timeout, operation=operation)
        if res.exit_status != 0:
            err = classify(res.stderr or res.stdout, target=self.display, operation=operation)
            if ok_missing and isinstance(err, DatasetMissing):
                return None
            raise err
        return res

    async def exists(self, dataset: str) -> bool:
        return await self._run(cmd_exists(dataset), "zfs list", ok_missing=True) is not None

    async def snapshots(self, dataset: str) -> list[Snap] | None:
        """Snapshots and bookmarks, oldest first; None when the dataset does not exist."""
        res = await self._run(cmd_list(dataset), "zfs list", ok_missing=True)
        return None if res is None else parse_list(res.stdout, dataset)

    async def resume_token(self, dataset: str) -> str | None:
        res = await self._run(cmd_resume_token(dataset), "zfs get receive_resume_token", ok_missing=True)
        if res is None:
            return None
        value = res.stdout.strip()
        return None if value in ("", "-") else value

    async def snapshot(self, snapshot: str) -> None:
        await self._run(cmd_snapshot(snapshot), "zfs snapshot")

    async def send_size(self, snapshot: str, base: str | None, intermediates: bool) -> int | None:
        res = await self._run(
            cmd_send(snapshot, base=base, intermediates=intermediates, dry_run=True), "zfs send -n"
        )
        assert res is not None
        return parse_send_size(res.stdout + "\n" + res.stderr)

    async def hold(self, snapshot: str) -> None:
        res = await self.ssh.run(self.ep, cmd_hold(snapshot), timeout=self.timeout, operation="zfs hold")
        if res.exit_status != 0 and "tag already exists" not in res.stderr:
            raise classify(res.stderr, target=self.display, operation="zfs hold")

    async def release(self, snapshot: str) -> None:
        res = await self.ssh.run(
            self.ep, cmd_release(snapshot), timeout=self.timeout, operation="zfs release"
        )
        if res.exit_status != 0 and "no such tag" not in res.stderr and "does not exist" not in res.stderr:
            raise classify(res.stderr, target=self.display, operation="zfs release")

    async def holds(self, snapshots: list[str]) -> dict[str, set[str]]:
        if not snapshots:
            return {}
        out: dict[str, set[str]] = {s: set() for s in snapshots}
        for i in range(0, len(snapshots), 200):  # a bounded command line
            res = await self._run(cmd_holds(snapshots[i : i + 200]), "zfs holds")
            assert res is not None
            for line in res.stdout.splitlines():
                cols = line.split("\t")
                if len(cols) >= 2 and cols[0] in out:
                    out[cols[0]].add(cols[1])
        return out

    async def bookmark(self, snapshot: str, bookmark: str) -> None:
        res = await self.ssh.run(
            self.ep, cmd_bookmark(snapshot, bookmark), timeout=self.timeout, operation="zfs bookmark"
        )
        if res.exit_status != 0 and "already exists" not in res.stderr:
            raise classify(res.stderr, target=self.display, operation="zfs bookmark")

    async def destroy(self, name: str) -> None:
        await self._run(cmd_destroy(name), "zfs destroy")


__all__ = [
    "ReplicationError",
    "DatasetNameError",
    "DestinationDiverged",
    "DatasetBusy",
    "NoSpace",
    "NoCommonBase",
    "DatasetMissing",
    "ResumeTokenInvalid",
    "ZfsCommandFailed",
    "Snap",
    "ZfsHost",
    "dataset_name",
    "snapshot_name",
    "bookmark_name",
    "short_name",
    "prefix_name",
    "new_snapshot_short",
    "snapshot_time",
    "parse_list",
    "classify",
    "cmd_send",
    "cmd_send_resume",
    "cmd_recv",
    "HOLD_TAG",
]
