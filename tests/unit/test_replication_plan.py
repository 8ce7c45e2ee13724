"""ZFS names, command lines and replication planning (pure functions, no hosts)."""

from __future__ import annotations

import shlex
import time

import pytest

from executor.replication_plan import GridError, newest_common, parse_grid, plan_prune, plan_send
from executor.targets import zfs
from executor.targets.ssh import (
    HostKeyMismatch,
    SshAuthFailed,
    SshEndpoint,
    SshUnreachable,
    classify_transport,
    parse_host_keys,
)
from executor.targets.zfs import DatasetNameError, DestinationDiverged, NoCommonBase, Snap

HOSTILE = [
    "tank/a;rm -rf /",
    "tank/$(reboot)",
    "tank/`id`",
    "tank/a b",
    "tank/../etc",
    "tank/./x",
    "../tank",
    "tank/a\x00b",
    "tank//a",
    "/tank",
    "tank/",
    "",
    "tank/a'b",
    'tank/a"b',
    "tank/a|b",
    "tank/a&b",
    "tank/a\nb",
    "tank/a>b",
    "tank/a%b",
    "-Rf",
    "mirror/a",
    "c0t0d0/a",
    "1tank/a",
    "tank/" + "x" * 300,
    "tank/ä",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_dataset_names_are_rejected(name):
    with pytest.raises(DatasetNameError):
        zfs.dataset_name(name)
    with pytest.raises(DatasetNameError):
        zfs.snapshot_name(f"{name}@s1")
    with pytest.raises(DatasetNameError):
        zfs.cmd_recv(name)


@pytest.mark.parametrize(
    "snap",
    [
        "tank/a@x;y",
        "tank/a@$(x)",
        "tank/a@",
        "tank/a@..",
        "tank/a@a b",
        "tank/a@x@y",
        "tank/a@x#y",
        "tank/a@x\x00",
    ],
)
def test_hostile_snapshot_names_are_rejected(snap):
    with pytest.raises(DatasetNameError):
        zfs.cmd_send(snap)


def test_valid_names_and_the_command_lines_stay_one_argument_each():
    for ok in ("tank", "tank/vm-01", "pool_2/a.b/c:d", "backup/site-a/db_01"):
        assert zfs.dataset_name(ok) == ok
    argv = zfs.cmd_send("tank/a@rackpilot_2026-12-06T10:00:00.000000Z", base="tank/a#rackpilot_x")
    assert argv == ["zfs", "send", "-i", "tank/a#rackpilot_x", "tank/a@rackpilot_2026-12-06T10:00:00.000000Z"]
    assert shlex.split(shlex.join(argv)) == argv
    with pytest.raises(DatasetNameError):
        zfs.cmd_send("tank/a@s2", base="tank/b@s1")  # a base of another dataset
    with pytest.raises(DatasetNameError):
        zfs.cmd_send("tank/a@s2", base="tank/a#b", intermediates=True)  # -I takes no bookmark
    assert zfs.cmd_recv("backup/a") == ["zfs", "receive", "-s", "-u", "backup/a"]  # never -F
    with pytest.raises(zfs.ResumeTokenInvalid):
        zfs.cmd_send_resume("1-abc; reboot")
    with pytest.raises(DatasetNameError):
        zfs.cmd_destroy("tank/a@s1%s9")  # never a range


def test_snapshot_names_carry_their_time():
    from datetime import UTC, datetime

    t = datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)
    short = zfs.new_snapshot_short("rackpilot", t)
    assert zfs.snapshot_time(short, "rackpilot") == t
    assert zfs.snapshot_time("manual", "rackpilot") is None
    with pytest.raises(DatasetNameError):
        zfs.new_snapshot_short("bad prefix", t)


def S(name: str, guid: int, txg: int, creation: int = 0, kind: str = "snapshot") -> Snap:
    return Snap(name, guid, txg, creation or txg, kind)


def test_plan_send_incremental_full_and_refusals():
    src = [S("t/a@1", 1, 1), S("t/a@2", 2, 2), S("t/a@3", 3, 3)]
    plan = plan_send(src, [S("b/a@1", 1, 5)], allow_full=False)
    assert (plan.kind, plan.base.name, plan.intermediates, plan.target.name) == (
        "incremental",
        "t/a@1",
        True,
        "t/a@3",
    )
    assert plan_send(src, [S("b/a@1", 1, 5), S("b/a@3", 3, 7)], allow_full=False).kind == "none"
    # a bookmark base: -i
    src_bm = [S("t/a#1", 1, 1, kind="bookmark"), S("t/a@3", 3, 3)]
    plan = plan_send(src_bm, [S("b/a@1", 1, 5)], allow_full=False)
    assert (plan.base.name, plan.intermediates) == ("t/a#1", False)
    # full only to a destination that does not exist, and only when allowed
    assert plan_send(src, None, allow_full=True).kind == "full"
    with pytest.raises(NoCommonBase):
        plan_send(src, None, allow_full=False)
    with pytest.raises(NoCommonBase):
        plan_send(src, [S("b/a@other", 99, 1)], allow_full=True)
    with pytest.raises(NoCommonBase):
        plan_send(src, [], allow_full=True)
    # diverged: the replica has a snapshot newer than the common one
    with pytest.raises(DestinationDiverged):
        plan_send(src, [S("b/a@1", 1, 5), S("b/a@local", 77, 6)], allow_full=True)


def test_newest_common_matches_guids_not_names():
    src = [S("t/a@x", 1, 1), S("t/a@y", 2, 2)]
    dst = [S("b/a@renamed", 2, 9)]
    assert newest_common(src, dst).name == "t/a@y"


def test_grid_parsing():
    assert parse_grid("24x1h, 7x1d,4x1w") == [(24, 3600), (7, 86400), (4, 604800)]
    assert parse_grid("") == []
    for bad in ("24h", "x1h", "24x1y", "0x1h", "1x0h", "24x1h;7x1d"):
        with pytest.raises(GridError):
            parse_grid(bad)


def test_prune_never_deletes_the_newest_common_held_or_unreplicated():
    now = 1_000_000
    snaps = [S(f"t/a@rp_{i:04d}", i, i, now - (100 - i) * 3600) for i in range(100)]
    snaps.append(S("t/a@manual", 1000, 1000, now - 10))
    plan = plan_prune(
        snaps,
        prefix="rp",
        keep_last=1,
        grid=[],
        now=now,
        common_guid=50,
        held={"t/a@rp_0010"},
        unreplicated_after=60,
    )
    kept = {s.name for s in plan.keep}
    assert "t/a@rp_0050" in kept and "t/a@rp_0010" in kept  # common, held
    assert all(f"t/a@rp_{i:04d}" in kept for i in range(61, 100))  # not on the replica yet
    assert "t/a@manual" not in {s.name for s in plan.destroy}  # not ours
    assert {s.name for s in plan.destroy} == {f"t/a@rp_{i:04d}" for i in range(0, 61)} - {
        "t/a@rp_0010",
        "t/a@rp_0050",
    }


def test_prune_grid_keeps_one_per_bucket():
    now = 100 * 3600
    snaps = [S(f"t/a@rp_{i:04d}", i, i, i * 600) for i in range(600)]  # one every 10 min for 100 h
    plan = plan_prune(
        snaps, prefix="rp", keep_last=3, grid=[(24, 3600), (2, 86400)], now=now, common_guid=599
    )
    kept = sorted(s.creation for s in plan.keep)
    newest3 = [s.creation for s in snaps[-3:]]
    assert all(t in kept for t in newest3)
    hourly = [t for t in kept if t >= now - 24 * 3600 and t not in newest3]
    assert len(hourly) == 24  # one per hour bucket
    assert len([t for t in kept if now - 72 * 3600 <= t < now - 24 * 3600]) == 2  # one per day bucket
    assert all(t >= now - 72 * 3600 for t in kept)  # beyond the grid: pruned


def test_planning_and_pruning_1000_snapshots_is_fast():
    now = time.time()
    src = [S(f"t/a@rp_{i:05d}", i, i, int(now - (1000 - i) * 3600)) for i in range(1000)]
    dst = [S(f"b/a@rp_{i:05d}", i, i + 5, int(now - (1000 - i) * 3600)) for i in range(990)]
    t0 = time.perf_counter()
    plan = plan_send(src, dst, allow_full=False)
    prune = plan_prune(
        dst, prefix="rp", keep_last=24, grid=parse_grid("24x1h,30x1d"), now=now, common_guid=989
    )
    elapsed = time.perf_counter() - t0
    assert plan.base.guid == 989 and len(prune.destroy) > 900
    assert elapsed < 0.5, elapsed


def test_transport_errors_are_told_apart():
    ep = SshEndpoint("h", 22, "u", ("ssh-ed25519 AAAA",))
    assert isinstance(classify_transport("Host key verification failed.", ep), HostKeyMismatch)
    assert isinstance(
        classify_transport("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", ep), HostKeyMismatch
    )
    assert isinstance(classify_transport("u@h: Permission denied (publickey).", ep), SshAuthFailed)
    assert isinstance(
        classify_transport("ssh: connect to host h port 22: Connection refused", ep), SshUnreachable
    )
    for words, cls in (
        (
            "cannot receive incremental stream: destination tank/a has been modified\nsince most recent "
            "snapshot",
            zfs.DestinationDiverged,
        ),
        ("cannot receive incremental stream: out of space", zfs.NoSpace),
        ("cannot destroy snapshot t/a@x: dataset is busy", zfs.DatasetBusy),
        ("cannot open 'x': dataset does not exist", zfs.DatasetMissing),
    ):
        assert isinstance(zfs.classify(words, target="h", operation="op"), cls)


def test_pinned_host_keys_name_their_host_plainly():
    text = "[10.0.0.1]:2222 ssh-ed25519 AAAAC3Nza\n10.0.0.2 ssh-rsa AAAAB3Nza\nssh-ed25519 AAAAbare\n"
    assert parse_host_keys(text, "10.0.0.1", 2222) == ("ssh-ed25519 AAAAC3Nza", "ssh-ed25519 AAAAbare")
    assert parse_host_keys(text, "10.0.0.2", 22) == ("ssh-rsa AAAAB3Nza", "ssh-ed25519 AAAAbare")
    from executor.targets.ssh import SshSetupError

    for bad in ("@cert-authority * ssh-ed25519 AAAA", "|1|abc= ssh-ed25519 AAAA", "*.lan ssh-ed25519 AAAA"):
        with pytest.raises(SshSetupError):
            parse_host_keys(bad, "h", 22)
