"""Running ``replication_sync`` against the lab's real sshd and zfs stand-in, without the
control plane: a job session that keeps the job's steps, task rows and the RPCs the
handler calls in memory (the handler's SQL side is tested against the real stack in
test_replication_schedule.py). The SSH side - OpenSSH clients, the agent, pinned host
keys, splice relay, the stand-in's zfs - is the real one."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from devstack.lab.zfs_ssh import ZfsSshLab
from executor.handlers.replication_sync import ReplicationSyncHandler
from executor.steps import SafetyPolicy, StepEngine

POLICY = Path(__file__).resolve().parents[2] / "policies" / "safety.yaml"


def credential(cred_id: str, secret: dict[str, str], endpoints: list[dict[str, Any]]) -> Any:
    try:
        from executor.binding import Credential
    except ImportError:  # an executor without sealed endpoints: the secret as a mapping
        return dict(secret)
    return Credential.from_plaintext(cred_id, {**secret, "endpoints": endpoints})


def lab_credential(lab: ZfsSshLab, cred_id: str, *, host_keys: str | None = None) -> Any:
    secret = {
        "username": lab.username,
        "private_key": lab.client_key.read_text(),
        "host_keys": lab.host_keys() if host_keys is None else host_keys,
    }
    eps = [
        {"scheme": "ssh", "host": "127.0.0.1", "port": p, "tls": {"known_hosts": "sealed"}}
        for p in lab.ports.values()
    ]
    return credential(cred_id, secret, eps)


class _Control:
    def __init__(self, world: World):
        self.world = world

    async def select(self, table: str, columns: str, **filters: Any) -> list[dict[str, Any]]:
        assert table == "replication_pairs", table
        ids = filters.get("id")
        ids = ids if isinstance(ids, list) else [ids]
        return [dict(self.world.pairs[i]) for i in ids if i in self.world.pairs]


class World:
    """Pairs, credentials and everything the handler reported."""

    def __init__(self) -> None:
        self.pairs: dict[str, dict[str, Any]] = {}
        self.creds: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.holders: dict[str, str] = {}
        self.control = _Control(self)

    def pair(self, lab: ZfsSshLab, src: str, dst: str, **cols: Any) -> dict[str, Any]:
        pid = str(uuid.uuid4())
        cred = str(uuid.uuid4())
        self.creds[cred] = cols.pop("credential", None) or lab_credential(lab, cred)
        row = {
            "id": pid,
            "site_id": "s",
            "name": cols.pop("name", f"pair-{pid[:6]}"),
            "source_host": lab.address("src"),
            "source_dataset": src,
            "target_host": lab.address("dst"),
            "target_dataset": dst,
            "credential_set_id": cred,
            "retention_snapshots": 24,
            "retention_grid": "",
            "max_lag_seconds": 3600,
            "bandwidth_limit_mbit": None,
            "allow_full_send": True,
            "snapshot_prefix": "rackpilot",
            "enabled": True,
        }
        row.update(cols)
        self.pairs[pid] = row
        return row

    def records(self, pid: str) -> list[dict[str, Any]]:
        return [p for fn, p in self.calls if fn == "replication_record" and p["p_pair_id"] == pid]


class Session:
    """A JobSession for one job (see executor.steps.JobSession)."""

    def __init__(self, world: World, params: dict[str, Any]):
        self.world = world
        self.job = {"id": str(uuid.uuid4()), "type": "replication_sync", "params": params, "attempts": 1}
        self.steps: dict[str, dict[str, Any]] = {}
        self.finished: dict[str, Any] | None = None
        self.fenced = False
        self.cancel_requested = False
        self.draining = False
        self.pause_requested = False

    async def select(self, table: str, columns: str, **filters: Any) -> list[dict[str, Any]]:
        return await self.world.control.select(table, columns, **filters)

    async def history(self) -> list[dict[str, Any]]:
        return [{"name": k, **v} for k, v in self.steps.items()]

    async def report_step(
        self, *, index: int, name: str, status: str, resumable: bool, details: dict[str, Any]
    ) -> None:
        self.steps[name] = {"status": status, "details": details}

    async def pause(self, reason: str, blockers: list[dict[str, Any]]) -> None:
        raise AssertionError("replication_sync never pauses")

    async def finish(
        self, status: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        self.finished = {"status": status, "result": result, "error": error}

    async def release(self) -> None:
        pass

    async def credentials(self, credential_id: str) -> Any:
        return self.world.creds[credential_id]

    async def notice(self, event: str, payload: dict[str, Any]) -> None:
        pass

    async def call(self, fn: str, params: dict[str, Any]) -> Any:
        self.world.calls.append((fn, params))
        if fn == "replication_begin":
            holder = self.world.holders.get(params["p_pair_id"])
            if holder and holder != self.job["id"]:
                return {"ok": False, "holder": holder}
            self.world.holders[params["p_pair_id"]] = self.job["id"]
            return {"ok": True}
        if fn == "replication_end":
            for pid in params["p_pair_ids"]:
                if self.world.holders.get(pid) == self.job["id"]:
                    del self.world.holders[pid]
        if fn == "update_task":
            self.world.tasks[params["p_target_id"]] = params
        return None


def run(world: World, pair_ids: list[str], state_dir: Path | None = None, **params: Any) -> Session:
    session = Session(world, {"replication_pair_ids": pair_ids, **params})
    handler = ReplicationSyncHandler(state_dir or Path(tempfile.mkdtemp(prefix="rackpilot-repl-state-")))
    engine = StepEngine(SafetyPolicy.load(POLICY), progress_write_interval=0.0)
    asyncio.run(engine.run(handler, session))
    return session
