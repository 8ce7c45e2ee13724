"""A `zfs` command stand-in for the lab's storage hosts (stdlib only: sshd runs it with -S).

There is no ZFS kernel module here, so each simulated host keeps its datasets in a folder:

    <root>/state.json            datasets, snapshots (guid, createtxg, creation, holds,
                                 manifest), bookmarks, partial receives, the txg counter
    <root>/data/<ds>/live/       the dataset's files
    <root>/data/<ds>/snap/<s>/   a snapshot's files (a copy, immutable)
    <root>/data/<ds>.partial     the bytes of an interrupted resumable receive
    <root>/inject.json           errors to inject (see INJECT)

It implements what replication runs, with zfs's flags, words and exit codes:

    zfs list -H [-p] -o name[,guid,createtxg,creation,type] [-t snapshot,bookmark] [-s createtxg] [-d 1] DS
    zfs get -H -p -o value receive_resume_token DS
    zfs create [-p] DS
    zfs snapshot DS@S
    zfs send [-n -P] [-w] [-i|-I BASE] DS@S      zfs send [-n -P] -t TOKEN
    zfs receive|recv [-s] [-u] DS                 zfs receive -A DS
    zfs hold TAG DS@S | release TAG DS@S | holds -H DS@S...
    zfs bookmark DS@S DS#B
    zfs destroy DS@S | DS#B

Streams are a header line and a body of file records (changed and deleted files per
snapshot, then the snapshot's identity); an incremental carries only what changed since
its base, whose manifest a bookmark keeps too. A receive checks what zfs checks: an
incremental's source must be the destination's newest snapshot, and the destination
unmodified since (never -F here); a full stream needs a new dataset. With -s, a stream
that ends early is kept with a resume token, and `send -t` regenerates the same stream
from the token's offset.

INJECT (inject.json, each entry {"times": n} consumed per use, or true for always):
    busy: {"ops": ["send", "receive", "snapshot", ...]}  -> "dataset is busy"
    nospace: {}                 receive fails "out of space" after the stream (partial kept)
    break_after: {"bytes": N}   send dies (SIGKILL) after N body bytes: a broken stream
    recv_break_after: {"bytes": N}  receive stops after N body bytes, partial kept
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAGIC = b"RPZFS1 "
CHUNK = 1 << 16


class _HungUp(Exception):
    pass


class ZfsFail(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --- state ----------------------------------------------------------------------------------------
class Host:
    def __init__(self, root: str):
        self.root = Path(root)
        self._lock_fh: Any = None
        self.state: dict[str, Any] = {}

    def __enter__(self) -> Host:
        self._lock_fh = open(self.root / "state.lock", "a+")
        fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
        p = self.root / "state.json"
        self.state = json.loads(p.read_text()) if p.exists() else {"txg": 1, "datasets": {}, "partials": {}}
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None or exc[0] is ZfsFail:
                tmp = self.root / "state.json.tmp"
                tmp.write_text(json.dumps(self.state))
                os.replace(tmp, self.root / "state.json")
        finally:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()

    def dir(self, ds: str) -> Path:
        return self.root / "data" / urllib.parse.quote(ds, safe="")

    def ds(self, name: str) -> dict[str, Any]:
        d = self.state["datasets"].get(name)
        if d is None:
            raise ZfsFail(f"cannot open '{name}': dataset does not exist")
        return d

    def next_txg(self) -> int:
        self.state["txg"] += 1
        return self.state["txg"]


def inject(root: Path, key: str, op: str | None = None) -> dict[str, Any] | None:
    """The injection entry for ``key`` (consuming one use), or None."""
    p = root / "inject.json"
    lock = open(root / "inject.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not p.exists():
            return None
        data = json.loads(p.read_text() or "{}")
        entry = data.get(key)
        if not entry:
            return None
        if op is not None and op not in entry.get("ops", [op]):
            return None
        times = entry.get("times")
        if isinstance(times, int):
            if times <= 0:
                return None
            entry["times"] = times - 1
            p.write_text(json.dumps(data))
        return entry
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def check_busy(root: Path, op: str, name: str) -> None:
    if inject(root, "busy", op):
        raise ZfsFail(f"cannot {op} '{name}': dataset is busy")


def manifest(d: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    if not d.exists():
        return out
    for dirpath, _dirs, files in os.walk(d):
        for f in files:
            p = Path(dirpath) / f
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[str(p.relative_to(d))] = [p.stat().st_size, h.hexdigest()]
    return out


def split_snap(name: str, sep: str = "@") -> tuple[str, str]:
    ds, s, short = name.partition(sep)
    if not s or not ds or not short:
        raise ZfsFail(f"cannot open '{name}': invalid name")
    return ds, short


def newest(d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    snaps = d["snapshots"]
    if not snaps:
        return None
    short = max(snaps, key=lambda k: snaps[k]["createtxg"])
    return short, snaps[short]


# --- stream ---------------------------------------------------------------------------------------
def stream_records(h: Host, ds: str, base_manifest: dict[str, list] | None, snaps: list[str]) -> list[tuple]:
    """[(kind, meta, source path or None)] of the stream body, deterministic."""
    d = h.ds(ds)
    recs: list[tuple] = []
    prev = dict(base_manifest or {})
    for short in snaps:
        s = d["snapshots"][short]
        man = s["manifest"]
        for path in sorted(man):
            if prev.get(path) != man[path]:
                recs.append(("F", {"p": path, "n": man[path][0]}, h.dir(ds) / "snap" / short / path))
        for path in sorted(set(prev) - set(man)):
            recs.append(("D", {"p": path}, None))
        recs.append(
            ("S", {"short": short, "guid": s["guid"], "creation": s["creation"], "manifest": man}, None)
        )
        prev = man
    return recs


def rec_header(kind: str, meta: dict[str, Any]) -> bytes:
    return kind.encode() + json.dumps(meta, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def body_size(recs: list[tuple]) -> int:
    return sum(len(rec_header(k, m)) + (m["n"] if k == "F" else 0) for k, m, _ in recs)


def body_chunks(recs: list[tuple]):
    for kind, meta, src in recs:
        yield rec_header(kind, meta)
        if kind == "F":
            with open(src, "rb") as fh:
                left = meta["n"]
                while left > 0:
                    b = fh.read(min(CHUNK, left))
                    if not b:
                        raise ZfsFail("snapshot file changed under the send")
                    left -= len(b)
                    yield b


def make_token(info: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(info, sort_keys=True).encode()).decode().rstrip("=")


def read_token(token: str) -> dict[str, Any]:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise ZfsFail("cannot resume send: 'invalid resume token' is corrupt") from None


def plan_stream(h: Host, snapname: str, base: str | None, intermediates: bool) -> tuple[dict[str, Any], list]:
    ds, short = split_snap(snapname)
    d = h.ds(ds)
    if short not in d["snapshots"]:
        raise ZfsFail(f"cannot open '{snapname}': dataset does not exist")
    to = d["snapshots"][short]
    if base is None:
        order = [short]
        return (
            {
                "kind": "full",
                "dataset": ds,
                "from_guid": None,
                "snaps": order,
                "to_guid": to["guid"],
                "fromname": None,
                "toname": snapname,
                "I": False,
            },
            stream_records(h, ds, None, order),
        )
    bsep = "#" if "#" in base else "@"
    bds, bshort = split_snap(base, bsep)
    if bds != ds:
        raise ZfsFail(f"cannot send '{snapname}': incremental source must be in same filesystem")
    src = (d["bookmarks"] if bsep == "#" else d["snapshots"]).get(bshort)
    if src is None:
        raise ZfsFail(f"cannot send '{snapname}': incremental source '{base}' does not exist")
    if src["createtxg"] >= to["createtxg"]:
        raise ZfsFail(f"cannot send '{snapname}': incremental source must be earlier than destination")
    if intermediates:
        order = sorted(
            (k for k, v in d["snapshots"].items() if src["createtxg"] < v["createtxg"] <= to["createtxg"]),
            key=lambda k: d["snapshots"][k]["createtxg"],
        )
    else:
        order = [short]
    return (
        {
            "kind": "incremental",
            "dataset": ds,
            "from_guid": src["guid"],
            "snaps": order,
            "to_guid": to["guid"],
            "fromname": base,
            "toname": snapname,
            "I": intermediates,
        },
        stream_records(h, ds, src["manifest"], order),
    )


def cmd_send(root: Path, args: list[str]) -> int:
    dry = "-n" in args
    args = [a for a in args if a not in ("-n", "-P", "-w", "-v", "-nP", "-Pn")]
    token = base = None
    intermediates = False
    rest = []
    i = 0
    while i < len(args):
        if args[i] in ("-i", "-I") and i + 1 < len(args):
            base, intermediates = args[i + 1], args[i] == "-I"
            i += 2
        elif args[i] == "-t" and i + 1 < len(args):
            token = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    offset = 0
    with Host(str(root)) as h:
        if token is not None:
            info = read_token(token)
            snapname = info["toname"]
            check_busy(root, "send", snapname)
            try:
                header, recs = plan_stream(h, snapname, info.get("fromname"), bool(info.get("I")))
            except ZfsFail as e:
                raise ZfsFail(f"cannot resume send: {e}") from None
            if header["to_guid"] != info["to_guid"] or header["from_guid"] != info.get("from_guid"):
                raise ZfsFail(
                    "cannot resume send: incremental source or destination no longer exists (guid changed)"
                )
            offset = int(info["bytes"])
        else:
            if len(rest) != 1:
                raise ZfsFail("usage: send [-nP] [-i|-I snapshot] <snapshot>", 2)
            snapname = rest[0]
            check_busy(root, "send", snapname)
            header, recs = plan_stream(h, snapname, base, intermediates)
    total = body_size(recs)
    header.update(total=total, offset=offset)
    if dry:
        kind = "resume" if token else header["kind"]
        sys.stdout.write(
            f"{kind}\t{header.get('fromname') or ''}\t{header['toname']}\t{total - offset}\n"
            f"size\t{total - offset}\n"
        )
        return 0
    brk = inject(root, "break_after")
    limit = int(brk["bytes"]) if brk else None
    out = sys.stdout.buffer
    out.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
    pos = 0
    sent = 0
    for chunk in body_chunks(recs):
        end = pos + len(chunk)
        if end <= offset:
            pos = end
            continue
        piece = chunk[max(0, offset - pos) :]
        pos = end
        if limit is not None and sent + len(piece) > limit:
            out.write(piece[: max(0, limit - sent)])
            out.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # the sender dies mid-stream
        out.write(piece)
        sent += len(piece)
    out.flush()
    return 0


# --- receive --------------------------------------------------------------------------------------
def apply_body(h: Host, ds: str, header: dict[str, Any], body_path: Path) -> None:
    """Replay the body into the dataset's live files, snapshot by snapshot."""
    ddir = h.dir(ds)
    live = ddir / "live"
    if header["kind"] == "full":
        h.state["datasets"][ds] = {"guid": random.getrandbits(63), "snapshots": {}, "bookmarks": {}}
        shutil.rmtree(ddir, ignore_errors=True)
        live.mkdir(parents=True)
    d = h.ds(ds)
    with open(body_path, "rb") as fh:
        while True:
            line = fh.readline()
            if not line:
                break
            kind, meta = line[:1].decode(), json.loads(line[1:])
            if kind == "F":
                dest = live / meta["p"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as out:
                    left = meta["n"]
                    while left:
                        b = fh.read(min(CHUNK, left))
                        if not b:
                            raise ZfsFail("cannot receive: invalid stream (truncated record)")
                        out.write(b)
                        left -= len(b)
            elif kind == "D":
                (live / meta["p"]).unlink(missing_ok=True)
            elif kind == "S":
                snapdir = ddir / "snap" / meta["short"]
                shutil.rmtree(snapdir, ignore_errors=True)
                shutil.copytree(live, snapdir)
                d["snapshots"][meta["short"]] = {
                    "guid": meta["guid"],
                    "createtxg": h.next_txg(),
                    "creation": meta["creation"],
                    "holds": {},
                    "manifest": meta["manifest"],
                }
            else:
                raise ZfsFail("cannot receive: invalid stream (bad record type)")


def partial_message(kind: str, token: str) -> str:
    return (
        f"cannot receive {'new filesystem' if kind == 'full' else 'incremental'} stream: checksum mismatch or "
        f"incomplete stream.\nPartially received snapshot is saved.\nA resuming stream can be generated on the "
        f"sending system by running:\n    zfs send -t {token}\n"
    )


def cmd_receive(root: Path, args: list[str]) -> int:
    resumable = "-s" in args
    if "-A" in args:
        return _abort_receive(root, [a for a in args if not a.startswith("-")][0])
    if "-F" in args:
        raise ZfsFail("the lab's zfs refuses -F: rackpilot never rolls a destination back", 2)
    names = [a for a in args if not a.startswith("-")]
    if len(names) != 1:
        raise ZfsFail("usage: receive [-s] [-u] <filesystem>", 2)
    ds = names[0]
    check_busy(root, "receive", ds)
    inp = sys.stdin.buffer
    line = inp.readline()
    if not line.startswith(MAGIC):
        raise ZfsFail("cannot receive: input is not a valid zfs stream")
    header = json.loads(line[len(MAGIC) :])
    kind = header["kind"]
    what = "new filesystem" if kind == "full" else "incremental"
    with Host(str(root)) as h:
        _check_receivable(h, ds, header, what)
        ppath = Path(str(h.dir(ds)) + ".partial")
        ppath.parent.mkdir(parents=True, exist_ok=True)
        if not header["offset"]:
            ppath.write_bytes(b"")
    # the body, outside the lock (a long stream must not stop every other command)
    brk = inject(root, "recv_break_after")
    got = _receive_body(inp, ppath, header, int(brk["bytes"]) if brk else None)
    with Host(str(root)) as h:
        if got < header["total"]:
            if not resumable:
                ppath.unlink(missing_ok=True)
                raise ZfsFail(f"cannot receive {what} stream: checksum mismatch or incomplete stream")
            token = make_token(_resume_info(header, got))
            h.state["partials"][ds] = {
                "to_guid": header["to_guid"],
                "bytes": got,
                "token": token,
                "kind": kind,
            }
            # the words may find nobody to read them (sshd gone with the connection): the
            # partial state is kept all the same, as the kernel keeps it
            try:
                sys.stderr.write(partial_message(kind, token))
                sys.stderr.flush()
            except OSError:
                pass
            return 1
        if inject(root, "nospace"):
            if resumable:
                h.state["partials"][ds] = {
                    "to_guid": header["to_guid"],
                    "bytes": got,
                    "token": make_token(_resume_info(header, got)),
                    "kind": kind,
                }
            raise ZfsFail(f"cannot receive {what} stream: out of space")
        h.state["partials"].pop(ds, None)
        apply_body(h, ds, header, ppath)
        ppath.unlink(missing_ok=True)
    return 0


def _abort_receive(root: Path, ds: str) -> int:
    """``zfs receive -A``: drop the dataset's resumable receive state."""
    with Host(str(root)) as h:
        if ds not in h.state["partials"]:
            raise ZfsFail(f"'{ds}' does not have any resumable receive state to abort")
        del h.state["partials"][ds]
        Path(str(h.dir(ds)) + ".partial").unlink(missing_ok=True)
    return 0


def _check_receivable(h: Host, ds: str, header: dict[str, Any], what: str) -> None:
    """Refuse a stream the destination cannot take, as zfs words it: a resume that matches
    no partial state, a new stream over partial state, a full stream onto an existing
    dataset or under a missing parent, an incremental one that does not follow the newest
    snapshot or meets a modified destination."""
    partial = h.state["partials"].get(ds)
    if header["offset"]:
        if not partial or partial["to_guid"] != header["to_guid"] or partial["bytes"] != header["offset"]:
            raise ZfsFail(
                f"cannot receive resume stream: destination '{ds}' has no matching partial state "
                f"(resume token does not match)"
            )
    elif partial:
        raise ZfsFail(
            f"cannot receive {what} stream: destination {ds} contains partially-complete state "
            f'from "zfs receive -s".'
        )
    if header["kind"] == "full":
        if ds in h.state["datasets"]:
            raise ZfsFail(
                f"cannot receive new filesystem stream: destination '{ds}' exists\n"
                f"must specify -F to overwrite it"
            )
        parent = ds.rsplit("/", 1)[0] if "/" in ds else None
        if parent is not None and parent not in h.state["datasets"]:
            raise ZfsFail(f"cannot receive new filesystem stream: parent '{parent}' does not exist")
        return
    d = h.ds(ds)
    top = newest(d)
    if top is None or top[1]["guid"] != header["from_guid"]:
        raise ZfsFail(
            f"cannot receive incremental stream: most recent snapshot of {ds} does not\n"
            f"match incremental source"
        )
    if manifest(h.dir(ds) / "live") != top[1]["manifest"]:
        raise ZfsFail(
            f"cannot receive incremental stream: destination {ds} has been modified\n"
            f"since most recent snapshot"
        )


def _receive_body(inp: Any, ppath: Path, header: dict[str, Any], limit: int | None) -> int:
    """Append the stream's body to the partial file ``ppath`` until its end, the connection
    going away or ``limit`` bytes (the recv_break_after fault); how far the stream got."""
    got = header["offset"]
    want = header["total"]

    def hung_up(signum: int, frame: Any) -> None:
        raise _HungUp()

    # the connection going away (sshd's SIGHUP, a TERM) ends the stream like an EOF: a
    # kernel receive keeps its partial state whatever stopped the stream
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, hung_up)
    with open(ppath, "ab") as out:
        try:
            while got < want:
                n = min(CHUNK, want - got)
                if limit is not None:
                    n = min(n, max(0, limit - (got - header["offset"])))
                    if n == 0:
                        break
                b = inp.read1(n)
                if not b:
                    break
                out.write(b)
                got += len(b)
        except (_HungUp, OSError):
            pass
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    return got


def _resume_info(header: dict[str, Any], got: int) -> dict[str, Any]:
    """What the resume token of a stream stopped after ``got`` bytes carries."""
    return {
        "fromname": header.get("fromname"),
        "toname": header["toname"],
        "from_guid": header["from_guid"],
        "to_guid": header["to_guid"],
        "I": header.get("I", False),
        "bytes": got,
    }


# --- the small commands ---------------------------------------------------------------------------
def _list(h: Host, args: list[str]) -> int:
    opts: dict[str, str] = {}
    names = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "-t", "-s", "-d") and i + 1 < len(args):
            opts[a] = args[i + 1]
            i += 2
            continue
        if not a.startswith("-"):
            names.append(a)
        i += 1
    if len(names) != 1:
        raise ZfsFail("usage: list [-H] [-p] [-o props] [-t types] [-d depth] <dataset>", 2)
    ds = names[0]
    d = h.ds(ds)
    cols = opts.get("-o", "name").split(",")
    types = opts.get("-t", "filesystem").split(",")
    rows: list[dict[str, Any]] = []
    if "filesystem" in types:
        rows.append({"name": ds, "guid": d["guid"], "createtxg": 0, "creation": 0, "type": "filesystem"})
    if "snapshot" in types:
        rows += [{"name": f"{ds}@{k}", **v, "type": "snapshot"} for k, v in d["snapshots"].items()]
    if "bookmark" in types:
        rows += [{"name": f"{ds}#{k}", **v, "type": "bookmark"} for k, v in d["bookmarks"].items()]
    rows.sort(key=lambda r: (r["createtxg"], r["type"] != "snapshot", r["name"]))
    for r in rows:
        sys.stdout.write("\t".join(str(r.get(c, "-")) for c in cols) + "\n")
    return 0


def _get(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    names = names[-2:]
    if names[:1] != ["receive_resume_token"] or len(names) != 2:
        raise ZfsFail("the lab's zfs get knows receive_resume_token only", 2)
    ds = names[1]
    if ds in h.state["partials"]:
        sys.stdout.write(h.state["partials"][ds]["token"] + "\n")
        return 0
    h.ds(ds)
    sys.stdout.write("-\n")
    return 0


def _create(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    ds = names[0]
    if ds in h.state["datasets"]:
        if "-p" in args:
            return 0
        raise ZfsFail(f"cannot create '{ds}': dataset already exists")
    parts = ds.split("/")
    for n in range(1, len(parts) + 1):
        sub = "/".join(parts[:n])
        if sub not in h.state["datasets"]:
            if n < len(parts) and "-p" not in args and n > 1:
                raise ZfsFail(f"cannot create '{ds}': parent does not exist")
            h.state["datasets"][sub] = {
                "guid": random.getrandbits(63),
                "snapshots": {},
                "bookmarks": {},
            }
            (h.dir(sub) / "live").mkdir(parents=True, exist_ok=True)
    return 0


def _snapshot(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    for name in names:
        ds, short = split_snap(name)
        check_busy(root, "snapshot", name)
        d = h.ds(ds)
        if short in d["snapshots"]:
            raise ZfsFail(f"cannot create snapshot '{name}': dataset already exists")
        src = h.dir(ds) / "live"
        dst = h.dir(ds) / "snap" / short
        shutil.copytree(src, dst)
        d["snapshots"][short] = {
            "guid": random.getrandbits(63),
            "createtxg": h.next_txg(),
            "creation": int(time.time()),
            "holds": {},
            "manifest": manifest(dst),
        }
    return 0


def _bookmark(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    snap, bm = names[0], names[1]
    ds, short = split_snap(snap)
    bds, bshort = split_snap(bm, "#")
    d = h.ds(ds)
    if bds != ds:
        raise ZfsFail(f"cannot create bookmark '{bm}': must be in same filesystem")
    s = d["snapshots"].get(short)
    if s is None:
        raise ZfsFail(f"cannot create bookmark '{bm}': snapshot does not exist")
    if bshort in d["bookmarks"]:
        raise ZfsFail(f"cannot create bookmark '{bm}': bookmark already exists")
    d["bookmarks"][bshort] = {k: s[k] for k in ("guid", "createtxg", "creation", "manifest")}
    return 0


def _hold_or_release(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    tag, snaps = names[0], names[1:]
    for name in snaps:
        ds, short = split_snap(name)
        s = h.ds(ds)["snapshots"].get(short)
        if s is None:
            raise ZfsFail(f"cannot {cmd} snapshot '{name}': dataset does not exist")
        if cmd == "hold":
            if tag in s["holds"]:
                raise ZfsFail(f"cannot hold snapshot '{name}': tag already exists on this dataset")
            s["holds"][tag] = int(time.time())
        else:
            if tag not in s["holds"]:
                raise ZfsFail(f"cannot release hold from snapshot '{name}': no such tag on this dataset")
            del s["holds"][tag]
    return 0


def _holds(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    for name in names:
        ds, short = split_snap(name)
        s = h.ds(ds)["snapshots"].get(short)
        if s is None:
            raise ZfsFail(f"cannot open '{name}': dataset does not exist")
        for tag, ts in sorted(s["holds"].items()):
            sys.stdout.write(f"{name}\t{tag}\t{time.ctime(ts)}\n")
    return 0


def _destroy(h: Host, root: Path, cmd: str, args: list[str], names: list[str]) -> int:
    if len(names) != 1 or "-r" in args or "-R" in args:
        raise ZfsFail("the lab's zfs destroys one snapshot or bookmark at a time", 2)
    name = names[0]
    check_busy(root, "destroy", name)
    if "#" in name:
        ds, short = split_snap(name, "#")
        if h.ds(ds)["bookmarks"].pop(short, None) is None:
            raise ZfsFail(f"cannot destroy '{name}': bookmark does not exist")
        return 0
    if "@" not in name:
        raise ZfsFail("the lab's zfs does not destroy datasets", 2)
    ds, short = split_snap(name)
    d = h.ds(ds)
    s = d["snapshots"].get(short)
    if s is None:
        raise ZfsFail("could not find any snapshots to destroy; check snapshot names.")
    if s["holds"]:
        raise ZfsFail(f"cannot destroy snapshot {name}: dataset is busy")
    del d["snapshots"][short]
    shutil.rmtree(h.dir(ds) / "snap" / short, ignore_errors=True)
    return 0


# the subcommands that work on the host's state (locked, and saved when they end or fail as
# zfs fails): each takes the host, its folder, the subcommand, its arguments and the names
# among them (the arguments that are not options)
_HOST_COMMANDS: dict[str, Callable[[Host, Path, str, list[str], list[str]], int]] = {
    "list": lambda h, root, cmd, args, names: _list(h, args),
    "get": _get,
    "create": _create,
    "snapshot": _snapshot,
    "bookmark": _bookmark,
    "hold": _hold_or_release,
    "release": _hold_or_release,
    "holds": _holds,
    "destroy": _destroy,
}


def dispatch(root: Path, argv: list[str]) -> int:
    if not argv or argv[0] != "zfs":
        sys.stderr.write(f"sh: 1: {argv[0] if argv else ''}: not found\n")
        return 127
    if len(argv) < 2:
        raise ZfsFail("usage: zfs command args ...", 2)
    cmd, args = argv[1], argv[2:]
    if cmd == "send":
        return cmd_send(root, args)
    if cmd in ("receive", "recv"):
        return cmd_receive(root, args)
    names = [a for a in args if not a.startswith("-")]
    with Host(str(root)) as h:
        run = _HOST_COMMANDS.get(cmd)
        if run is not None:
            return run(h, root, cmd, args, names)
    raise ZfsFail(f"unrecognized command '{cmd}'", 2)


def main(root: str, argv: list[str]) -> int:
    try:
        return dispatch(Path(root), argv)
    except ZfsFail as e:
        sys.stderr.write(str(e).rstrip("\n") + "\n")
        return e.code
    except BrokenPipeError:
        return 141


def shim(root: str) -> int:
    """Run by sshd (ForceCommand): the client's command line, parsed as a shell would."""
    try:
        argv = shlex.split(os.environ.get("SSH_ORIGINAL_COMMAND", ""))
    except ValueError:
        sys.stderr.write("sh: syntax error\n")
        return 2
    return main(root, argv)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "shim":
        sys.exit(shim(sys.argv[2]))
    if len(sys.argv) >= 3 and sys.argv[1] == "run":  # direct use: zfs_standin.py run ROOT zfs ...
        sys.exit(main(sys.argv[2], sys.argv[3:]))
    sys.stderr.write("usage: zfs_standin.py shim ROOT (run by sshd) | run ROOT zfs ARGS...\n")
    sys.exit(2)
