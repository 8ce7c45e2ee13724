"""``replication_sync`` over the real transport: OpenSSH clients with a per-job agent and
pinned host keys, joined by splice, against a real sshd whose hosts run the zfs stand-in.
Small streams (the 1 GiB is bench/replication.py's)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.lab.zfs_ssh import ZfsSshLab
from executor.targets.zfs import new_snapshot_short
from tests.integration.replication_support import World, lab_credential, run


@pytest.fixture(scope="module")
def lab():
    with ZfsSshLab(["src", "dst"]) as lab:
        lab.zfs("dst", "create", "-p", "backup")
        yield lab


_n = [0]


def dataset(lab: ZfsSshLab, files: dict[str, bytes] | None = None) -> tuple[str, str]:
    _n[0] += 1
    src, dst = f"tank/d{_n[0]}", f"backup/d{_n[0]}"
    lab.zfs("src", "create", "-p", src)
    for name, data in (files or {"a.bin": os.urandom(50_000)}).items():
        lab.write("src", src, name, data)
    return src, dst


def error_of(session) -> str:
    assert session.finished is not None
    return session.finished["error"] or ""


def test_full_then_incremental_with_holds_bookmark_and_figures(lab):
    w = World()
    src, dst = dataset(lab, {"a.bin": os.urandom(80_000), "sub/b.txt": b"hello"})
    pair = w.pair(lab, src, dst)
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    rec = w.records(pair["id"])[-1]
    assert (rec["p_status"], rec["p_kind"]) == ("succeeded", "full") and rec["p_bytes"] > 80_000
    assert lab.read("dst", dst, "a.bin") == lab.read("src", src, "a.bin")
    first = lab.snapshots("dst", dst)
    assert len(first) == 1 and first == lab.snapshots("src", src)
    # the base of the next incremental is held on both sides and bookmarked on the source
    for host, ds in (("src", src), ("dst", dst)):
        assert "rackpilot" in lab.state(host)["datasets"][ds]["snapshots"][first[0]]["holds"]
    assert first[0] in lab.state("src")["datasets"][src]["bookmarks"]
    # lag: the age of the newest snapshot on the replica, right after a sync
    assert 0 <= rec["p_lag_seconds"] <= 10
    created = datetime.fromisoformat(rec["p_snapshot_created_at"])
    assert abs((datetime.now(UTC) - created).total_seconds() - rec["p_lag_seconds"]) <= 10

    lab.write("src", src, "c.bin", os.urandom(3000))
    (lab.live("src", src) / "sub/b.txt").unlink()
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    rec = w.records(pair["id"])[-1]
    assert rec["p_kind"] == "incremental" and 3000 < rec["p_bytes"] < 20_000  # only what changed travels
    assert lab.read("dst", dst, "c.bin") == lab.read("src", src, "c.bin")
    assert not (lab.live("dst", dst) / "sub/b.txt").exists()
    second = lab.snapshots("dst", dst)
    assert len(second) == 2
    st = lab.state("dst")["datasets"][dst]["snapshots"]
    assert "rackpilot" in st[second[1]]["holds"] and "rackpilot" not in st[second[0]]["holds"]  # moved on
    task = w.tasks[pair["id"]]
    assert task["p_status"] == "completed" and task["p_progress"] == 100


def test_a_credential_sealed_by_encrypt_credentials_replicates(lab):
    """encrypt-credentials seals the admin's secret as ``password``: for an SSH login it is the
    JSON object {private_key, host_keys} (docs/replication.md), and that replicates too."""
    from tests.integration.replication_support import credential

    w = World()
    src, dst = dataset(lab)
    plain = {
        "username": lab.username,
        "password": json.dumps({"private_key": lab.client_key.read_text(), "host_keys": lab.host_keys()}),
    }
    eps = [
        {"scheme": "ssh", "host": "127.0.0.1", "port": p, "tls": {"known_hosts": "sealed"}}
        for p in lab.ports.values()
    ]
    pair = w.pair(lab, src, dst, credential=credential("sealed-by-fn", plain, eps))
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    assert lab.read("dst", dst, "a.bin") == lab.read("src", src, "a.bin")
    # pinned keys still hold: the same shape with another host's key is refused
    other = Path(tempfile.mkdtemp()) / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    plain["password"] = json.dumps(
        {
            "private_key": lab.client_key.read_text(),
            "host_keys": " ".join(other.with_suffix(".pub").read_text().split()[:2]),
        }
    )
    src2, dst2 = dataset(lab)
    pair2 = w.pair(lab, src2, dst2, credential=credential("sealed-by-fn-2", plain, eps))
    s = run(w, [pair2["id"]])
    assert s.finished["status"] == "failed" and "HostKeyMismatch" in error_of(s), s.finished


def test_interrupted_stream_resumes_from_its_token(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    lab.write("src", src, "big.bin", os.urandom(200_000))
    lab.inject("src", "break_after", bytes=60_000, times=1)  # the sender dies mid-stream
    state = Path(tempfile.mkdtemp())
    s = run(w, [pair["id"]], state_dir=state)
    assert "StreamBroken" in error_of(s)
    # a failed job leaves no child behind (agent, clients, connections) and no private folder
    assert not [p for p in os.listdir("/proc") if p.isdigit() and str(state) in _cmdline(p)]
    assert not any((state / "ssh").iterdir())
    token = lab.zfs("dst", "get", "-H", "-p", "-o", "value", "receive_resume_token", dst).stdout.strip()
    assert token not in ("", "-")
    assert lab.state("dst")["partials"][dst]["bytes"] >= 60_000
    assert len(lab.snapshots("dst", dst)) == 1  # nothing received half-way became a snapshot
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    rec = w.records(pair["id"])[-1]
    assert rec["p_kind"].startswith("resume")
    passes = rec["p_details"]["passes"]
    assert passes[0]["kind"] == "resume" and passes[0]["bytes"] < 200_000  # only the rest travelled
    assert lab.read("dst", dst, "big.bin") == lab.read("src", src, "big.bin")
    assert not lab.state("dst")["partials"].get(dst)


def test_a_receive_that_dies_mid_stream_is_a_broken_stream_and_nothing_is_destroyed(lab):
    """The other end of a broken pipe: the receiving side stops reading mid-stream (the
    executor's write gets EPIPE). StreamBroken, both sides' snapshots as they were (plus the
    job's new one on the source), what arrived kept, and the next run resumes."""
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    big = os.urandom(400_000)
    lab.write("src", src, "big.bin", big)
    src_before, dst_before = lab.snapshots("src", src), lab.snapshots("dst", dst)
    lab.inject("dst", "recv_break_after", bytes=100_000, times=1)
    try:
        s = run(w, [pair["id"]])
    finally:
        lab.clear_injections("dst")
    assert s.finished["status"] == "failed" and error_of(s).startswith("StreamBroken"), error_of(s)
    assert w.records(pair["id"])[-1]["p_error_class"] == "StreamBroken"
    src_after = lab.snapshots("src", src)
    assert src_after[: len(src_before)] == src_before and len(src_after) == len(src_before) + 1
    assert lab.snapshots("dst", dst) == dst_before
    assert lab.state("dst")["partials"][dst]["bytes"] >= 100_000
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    assert w.records(pair["id"])[-1]["p_details"]["passes"][0]["kind"] == "resume"
    assert lab.read("dst", dst, "big.bin") == big


def test_retention_keeps_newest_common_snapshot_and_holds(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst, retention_snapshots=2, retention_grid="2x1d")
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    # history: older rackpilot snapshots (their names carry their time), one held by a person,
    # one not ours
    now = datetime.now(UTC)
    old = [new_snapshot_short("rackpilot", now - timedelta(hours=h)) for h in (200, 150, 100, 50, 30, 5)]
    for i, short in enumerate(old):
        lab.write("src", src, f"f{i}", os.urandom(100))
        lab.zfs("src", "snapshot", f"{src}@{short}")
    lab.zfs("src", "snapshot", f"{src}@manual-before-upgrade")
    lab.zfs("src", "hold", "keep", f"{src}@{old[0]}")
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    dst_snaps = lab.snapshots("dst", dst)
    src_snaps = lab.snapshots("src", src)
    newest = dst_snaps[-1]
    assert newest == src_snaps[-1]  # the newest common snapshot stays on both sides
    assert "manual-before-upgrade" in src_snaps and "manual-before-upgrade" in dst_snaps  # not ours
    assert old[0] in src_snaps  # held by someone: never pruned
    # keep-last 2 + grid 2x1d (the oldest of each of the last two days' buckets)
    ours_dst = [x for x in dst_snaps if x.startswith("rackpilot_")]
    assert old[1] not in ours_dst and old[2] not in ours_dst and old[3] not in ours_dst
    assert old[4] in ours_dst and newest in ours_dst  # 30 h ago: day-2 bucket; newest: keep-last
    # the same policy on the source (where every one of them was replicated), whose hold wins
    ours_src = [x for x in src_snaps if x.startswith("rackpilot_")]
    assert old[1] not in ours_src and old[2] not in ours_src and old[3] not in ours_src
    assert old[4] in ours_src and newest in ours_src
    st = lab.state("dst")["datasets"][dst]["snapshots"][newest]
    assert "rackpilot" in st["holds"]
    # a pruned base is no loss: the source's bookmark of the newest common snapshot remains
    assert newest in lab.state("src")["datasets"][src]["bookmarks"]


def test_incremental_from_a_bookmark_when_the_source_snapshot_is_gone(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    base = lab.snapshots("src", src)[-1]
    lab.zfs("src", "release", "rackpilot", f"{src}@{base}")
    lab.zfs("src", "destroy", f"{src}@{base}")  # someone pruned it on the source
    lab.write("src", src, "n.bin", b"new")
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    assert w.records(pair["id"])[-1]["p_details"]["passes"][0]["what"].startswith("incremental from bookmark")
    assert lab.read("dst", dst, "n.bin") == b"new"


def test_diverged_destination_is_refused_and_nothing_is_destroyed(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    lab.write("dst", dst, "someone-wrote-here.txt", b"local change")
    lab.write("src", src, "more.bin", b"more")
    before_dst, before_src = lab.snapshots("dst", dst), lab.snapshots("src", src)
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "failed"
    assert error_of(s).startswith("DestinationDiverged"), error_of(s)
    assert lab.read("dst", dst, "someone-wrote-here.txt") == b"local change"
    assert lab.snapshots("dst", dst) == before_dst
    assert set(before_src) <= set(lab.snapshots("src", src))  # only the new snapshot was added
    assert w.records(pair["id"])[-1]["p_error_class"] == "DestinationDiverged"
    # a replica with a snapshot of its own is diverged too
    (lab.live("dst", dst) / "someone-wrote-here.txt").unlink()
    lab.zfs("dst", "snapshot", f"{dst}@local")
    assert error_of(run(w, [pair["id"]])).startswith("DestinationDiverged")
    assert "local" in lab.snapshots("dst", dst)


def test_host_key_mismatch_is_refused(lab):
    w = World()
    src, dst = dataset(lab)
    other = Path(tempfile.mkdtemp()) / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    t, b64 = other.with_suffix(".pub").read_text().split()[:2]
    wrong = "".join(f"[127.0.0.1]:{p} {t} {b64}\n" for p in lab.ports.values())
    pair = w.pair(lab, src, dst, credential=lab_credential(lab, "c", host_keys=wrong))
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "failed"
    assert error_of(s).startswith("HostKeyMismatch"), error_of(s)
    assert lab.snapshots("src", src) == [] and lab.snapshots("dst", dst) == []  # never reached zfs
    # and no key pinned at all is refused before connecting
    pair = w.pair(lab, src, dst, credential=lab_credential(lab, "c2", host_keys=""))
    assert error_of(run(w, [pair["id"]])).startswith("HostKeyMismatch")


def test_no_common_base_without_full_send_permission(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst, allow_full_send=False)
    s = run(w, [pair["id"]])
    assert error_of(s).startswith("NoCommonBase"), error_of(s)
    assert lab.snapshots("dst", dst) == []
    # the job may allow it (seeding a new replica)
    assert run(w, [pair["id"]], mode="full").finished["status"] == "completed"
    # a replica holding other data is never overwritten, full mode or not
    src2, _ = dataset(lab)
    pair2 = w.pair(lab, src2, dst, allow_full_send=True)
    assert error_of(run(w, [pair2["id"]], mode="full")).startswith("NoCommonBase")


@pytest.mark.parametrize(
    "key,entry,cls",
    [
        ("busy", {"ops": ["receive"]}, "DatasetBusy"),
        ("nospace", {}, "NoSpace"),
    ],
)
def test_busy_and_no_space_have_their_own_errors(lab, key, entry, cls):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    lab.write("src", src, "x.bin", os.urandom(1000))
    before = lab.snapshots("dst", dst)
    lab.inject("dst", key, times=1, **entry)
    try:
        s = run(w, [pair["id"]])
    finally:
        lab.clear_injections("dst")
    assert error_of(s).startswith(cls), error_of(s)
    assert lab.snapshots("dst", dst) == before


def test_a_pair_held_by_another_job_is_skipped(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst)
    w.holders[pair["id"]] = "another-job"
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed"
    assert w.tasks[pair["id"]]["p_status"] == "skipped"
    assert lab.snapshots("src", src) == []


def test_dry_run_reports_and_changes_nothing(lab):
    w = World()
    src, dst = dataset(lab)
    pair = w.pair(lab, src, dst, retention_snapshots=1)
    assert run(w, [pair["id"]]).finished["status"] == "completed"
    lab.write("src", src, "y.bin", os.urandom(5000))
    lab.zfs("src", "snapshot", f"{src}@{new_snapshot_short('rackpilot', datetime.now(UTC))}")
    before = (lab.snapshots("src", src), lab.snapshots("dst", dst))
    s = run(w, [pair["id"]], dry_run=True)
    assert s.finished["status"] == "completed", s.finished
    report = s.steps["dry_run"]["details"]["result"][pair["name"]]
    assert report["send"]["kind"] == "incremental" and report["send"]["flag"] == "-I"
    assert report["send"]["estimated_bytes_at_least"] > 5000
    assert len(report["retention"]["pruned"]["target"]) == 1  # keep-last 1, as if sent
    assert (lab.snapshots("src", src), lab.snapshots("dst", dst)) == before
    assert w.records(pair["id"])[-1]["p_kind"] == "dry_run"


def test_cancel_kills_the_stream_and_children_die_with_the_job(lab):
    import asyncio
    import threading

    from executor.handlers.replication_sync import ReplicationSyncHandler
    from executor.steps import SafetyPolicy, StepEngine
    from tests.integration.replication_support import POLICY, Session

    w = World()
    src, dst = dataset(lab)
    lab.zfs("src", "snapshot", f"{src}@mine")  # an operator's own snapshot
    # 125 kB/s: 10 MB would take 80 s, more than pipes, SSH windows and sockets hold, so the
    # sending client still runs when the cancel comes
    pair = w.pair(lab, src, dst, bandwidth_limit_mbit=1)
    slow = os.urandom(10_000_000)
    lab.write("src", src, "slow.bin", slow)
    session = Session(w, {"replication_pair_ids": [pair["id"]]})
    state = Path(tempfile.mkdtemp())
    handler = ReplicationSyncHandler(state)
    streaming: dict[str, str] = {}  # pid -> command line of the job's children when cancelled

    def cancel_when_streaming() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            prog = (session.steps.get("send") or {}).get("details", {}).get("progress") or {}
            if prog.get("bytes", 0) > 100_000:
                streaming.update({p: _cmdline(p) for p in os.listdir("/proc") if str(state) in _cmdline(p)})
                session.cancel_requested = True
                return
            time.sleep(0.05)

    threading.Thread(target=cancel_when_streaming, daemon=True).start()
    asyncio.run(StepEngine(SafetyPolicy.load(POLICY), progress_write_interval=0.0).run(handler, session))
    assert session.finished["status"] == "cancelled", session.finished
    # the agent and both clients of the stream ran when the cancel came...
    lines = list(streaming.values())
    assert any(line.startswith("ssh-agent -D") for line in lines), lines
    assert any(line.startswith("ssh ") and "zfs send" in line and "-n -P" not in line for line in lines)
    assert any(line.startswith("ssh ") and "zfs receive" in line for line in lines)
    # ...and none of them, nor anything else of the job, is left; the private folder is gone
    left = [p for p in os.listdir("/proc") if p.isdigit() and str(state) in _cmdline(p)]
    assert not left
    assert not any((state / "ssh").iterdir())
    assert w.tasks[pair["id"]]["p_status"] == "cancelled"
    # nothing destroyed: the operator's snapshot and the job's own are kept, the data untouched,
    # and nothing half-received became a snapshot on the destination
    kept = lab.snapshots("src", src)
    assert kept[0] == "mine" and len(kept) == 2 and kept[1].startswith("rackpilot_"), kept
    assert lab.read("src", src, "slow.bin") == slow
    assert lab.snapshots("dst", dst) == []
    token = lab.zfs("dst", "get", "-H", "-p", "-o", "value", "receive_resume_token", dst, check=False).stdout
    assert token.strip() not in ("", "-")  # what arrived is kept for the next run
    arrived = lab.state("dst")["partials"][dst]["bytes"]
    # the receive is resumable: the next run sends only the rest and completes
    w.pairs[pair["id"]]["bandwidth_limit_mbit"] = None
    s = run(w, [pair["id"]])
    assert s.finished["status"] == "completed", s.finished
    passes = w.records(pair["id"])[-1]["p_details"]["passes"]
    assert passes[0]["kind"] == "resume" and passes[0]["bytes"] < 10_000_000 - arrived + 100_000, passes
    assert lab.read("dst", dst, "slow.bin") == slow


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_lab_state_is_plain_json(lab):
    assert json.loads((lab.root("src") / "state.json").read_text())["datasets"]


def test_bandwidth_limit_progress_and_the_private_key_never_on_disk(lab):
    """The pair's bandwidth limit holds over the whole transfer and over every second of it,
    the step reports bytes and rate as it goes, and while the stream runs the private key is
    in no file of the job's private folder (only in the agent, fed through standard input)
    nor in any child's command line or environment."""
    import asyncio
    import threading

    from executor.handlers.replication_sync import ReplicationSyncHandler
    from executor.steps import SafetyPolicy, StepEngine
    from tests.integration.replication_support import POLICY, Session

    w = World()
    size = 1_500_000
    src, dst = dataset(lab, {"a.bin": os.urandom(size)})
    pair = w.pair(lab, src, dst, bandwidth_limit_mbit=2)  # 250 kB/s: ~6 s
    limit = 2 * 125_000
    session = Session(w, {"replication_pair_ids": [pair["id"]]})
    state = Path(tempfile.mkdtemp())
    key_lines = [ln for ln in lab.client_key.read_text().splitlines() if ln and not ln.startswith("-----")]
    assert key_lines and all(len(ln) >= 20 for ln in key_lines[:-1])
    samples: list[tuple[float, int, int]] = []  # (monotonic, bytes, rate) as the step reports them
    report = session.report_step

    async def report_step(**kw) -> None:
        prog = kw["details"].get("progress") or {}
        if kw["name"] == "send" and prog.get("bytes"):
            samples.append((time.monotonic(), prog["bytes"], prog["rate_bytes_s"]))
        await report(**kw)

    session.report_step = report_step
    scans: list[list[str]] = []  # per scan: where key text was found

    def key_in(data: bytes) -> bool:
        return any(ln.encode() in data for ln in key_lines)

    def watch() -> None:
        deadline = time.monotonic() + 60
        while session.finished is None and time.monotonic() < deadline:
            if samples:
                found = []
                for f in state.rglob("*"):
                    if f.is_file() and not f.is_symlink():
                        try:
                            if key_in(f.read_bytes()):
                                found.append(str(f))
                        except OSError:
                            pass  # removed meanwhile
                for pid in os.listdir("/proc"):
                    if pid.isdigit() and str(state) in _cmdline(pid):
                        for what in ("cmdline", "environ"):
                            try:
                                if key_in(Path(f"/proc/{pid}/{what}").read_bytes()):
                                    found.append(f"{pid}/{what}")
                            except OSError:
                                pass
                scans.append(found)
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    handler = ReplicationSyncHandler(state)
    asyncio.run(StepEngine(SafetyPolicy.load(POLICY), progress_write_interval=0.0).run(handler, session))
    t.join(10)
    assert session.finished["status"] == "completed", session.finished
    rec = w.records(pair["id"])[-1]
    assert rec["p_bytes"] > size
    # the whole transfer: no faster than the limit (the job's duration includes its commands)
    assert rec["p_duration_ms"] / 1000 >= rec["p_bytes"] / limit * 0.9, (rec["p_bytes"], rec["p_duration_ms"])
    # every second of it: bytes between samples at least 1 s apart stay near the limit
    assert len(samples) >= 5, samples
    for i, (t0, b0, _) in enumerate(samples):
        later = [(t1, b1) for t1, b1, _ in samples[i + 1 :] if t1 - t0 >= 1.0]
        if later:
            t1, b1 = later[0]
            assert (b1 - b0) / (t1 - t0) <= limit * 1.3, (b1 - b0, t1 - t0)
    assert any(0 < r <= limit * 1.3 for _, _, r in samples), samples  # the step reports its rate
    # the key was looked for while the stream ran, and found nowhere
    assert scans and not any(scans), scans
