"""Set-up shared by the Dell handler tests (tests/integration/test_handlers_dell_*.py).

Everything real except the hardware: the local stack, a real ``python -m executor`` process
(the e2e harness) claiming jobs through REST/Realtime, credentials sealed to its key, and
the simulated iDRAC lab (many BMCs, one process, clock 400x) with a loopback file server for
ISO images, the catalog fixture and its update packages. The executor's target timeouts are
compressed 50x (``RACKPILOT_TARGET_TIME_SCALE``) - eight times less than the lab's clock, as
headroom on a loaded machine - and the test policy makes a wait without progress a stall
after a few seconds.

Every Dell handler test module runs once per iDRAC generation the lab plays
(``PERSONALITIES``: iDRAC9 on 14G, iDRAC10 on 17G), through the ``personality`` of
``DellEnv``; ``FIRMWARE`` gives each generation's installed (old, current) versions that the
catalog fixture updates.

Jobs are inserted with the service key (``create-job`` does not take the two job types
``inventory_refresh``/``firmware_compliance`` yet); the executor does not care who created them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from devstack.lab.idrac import BMC, Lab, LabThread, make_dup
from devstack.lab.idrac.bmc import MODELS, MODELS_17G, Timing
from devstack.lab.idrac.testing import FileServer
from executor.secrets import seal, unb64u
from executor.targets.catalog import Catalog
from tests.e2e.executor_harness import Harness, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

LAB_SCALE = 400.0
TARGET_SCALE = 50.0
STALL_S = 4.0
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "catalog" / "Catalog.xml"
CATALOG = Catalog.from_path(FIXTURE)
ISO = b"\x00" * 2048 + b"CD001 rackpilot lab installer"
PERSONALITIES = ("idrac9", "idrac10")
# component id -> (old, current) firmware of the lab's first model of each generation, the
# versions the catalog fixture takes "old" servers to
FIRMWARE = {
    "idrac9": {
        "159": ("2.10.2", "2.17.1"),
        "25227": ("5.00.10.20", "6.10.30.00"),
        "104298": ("51.13.0-3485", "51.16.0-4076"),
        "105848": ("21.60.16", "22.31.6"),
    },
    "idrac10": {
        "159": ("1.1.3", "1.3.2"),
        "25227": ("1.20.25.00", "1.30.10.50"),
        "104298": ("51.13.0-3485", "51.16.0-4076"),
        "105848": ("21.60.16", "22.31.6"),
    },
}


def repository(corrupt: set[str] = frozenset()) -> dict[str, bytes]:
    files = {
        "/repo/Catalog.xml": FIXTURE.read_bytes(),
        "/repo/gz/Catalog.xml.gz": gzip.compress(FIXTURE.read_bytes()),
        "/iso/installer.iso": ISO,
        "/iso/other.iso": ISO,
    }
    for p in CATALOG.packages:
        cid = sorted(p.component_ids)[0]
        files[f"/repo/{p.path}"] = make_dup(cid, p.version)
        # the same packages beside the .gz catalog, one of them corrupt (RED004 at download)
        files[f"/repo/gz/{p.path}"] = (
            b"MZ not an update package" if cid in corrupt else make_dup(cid, p.version)
        )
    return files


class DellEnv:
    """One site, one executor, one lab; servers handed out one BMC each."""

    def __init__(self, stack: Any, bmcs: int = 96, personality: str = "idrac9"):
        self.personality = personality
        # the model a test takes when it needs the first of its generation (R640 / R670)
        self.model = next(iter(MODELS if personality == "idrac9" else MODELS_17G))
        # the virtual CD slot: iDRAC9 names it under the manager, iDRAC10 numbers it
        self.cd = "CD" if personality == "idrac9" else "1"
        self.fw = FIRMWARE[personality]
        self.tmp = Path(tempfile.mkdtemp(prefix="rackpilot-dell-"))
        self.h = Harness(stack, self.tmp)
        # A host's POST lasts several executor polls, as a real one lasts many (90 s at a
        # 5 s poll). The lab's clock runs LAB_SCALE / TARGET_SCALE = 8 times faster than the
        # executor's budgets, which left the lab's POST about two polls long: a restart
        # could be over between two polls and go unseen on a loaded machine. Four times
        # longer makes it about nine polls, still well inside the stall budget (STALL_S).
        timing = Timing(post=Timing().post * 4)
        self.lab = Lab(bmcs, time_scale=LAB_SCALE, personality=personality, timing=timing)
        self.lt = LabThread(self.lab)
        self.lt.start()
        self.files = FileServer(repository(corrupt={"105848"})).__enter__()
        policy = self.tmp / "safety.yaml"
        policy.write_text(f"version: 1\nstep_timeouts:\n  default: {{stall: {STALL_S}, timeout: 120}}\n")
        self.settings = {
            "target_time_scale": TARGET_SCALE,
            "policy_path": str(policy),
            "max_concurrent_jobs": 12,
            "poll_interval": 1,
        }
        self.proc = self.h.spawn("dell", **self.settings)
        self.proc.wait_log("registered", timeout=60)
        key = self.h.one(
            "select public_key, key_id from public.executors where site_id = %s and name = 'dell'",
            self.h.site_id,
        )
        self.key = key
        self.cred = self.credential("idrac-root", "idrac", "root", "calvin")
        self.used: set[int] = set()
        self.servers: dict[int, str] = {}

    def respawn(self, name: str) -> None:
        """Start another executor holding the same key (credentials stay openable), as an
        operator does after a host died."""
        state = self.tmp / name / "state"
        state.mkdir(parents=True, mode=0o700)
        shutil.copy(self.tmp / "dell" / "state" / "executor_key.pem", state / "executor_key.pem")
        self.proc = self.h.spawn(name, **self.settings)
        self.proc.wait_log("registered", timeout=60)

    def close(self) -> None:
        try:
            if self.proc.proc.poll() is None:
                self.proc.terminate(30)
        finally:
            self.h.close()
            self.files.__exit__(None, None, None)
            self.lt.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # set-up ---------------------------------------------------------------------------------
    def credential(
        self, name: str, kind: str, username: str, password: str, endpoints: list[Any] | None = None
    ) -> str:
        """A credential sealed to the executor's key, presentable to ``endpoints`` (default:
        every BMC of the lab, plain HTTP on loopback, as the servers are registered)."""
        if endpoints is None:
            endpoints = [
                {"url": self.lab.url(b.index), "tls": {"allow_plain_http": True}} for b in self.lab.bmcs
            ]
        envelope = seal(
            unb64u(self.key["public_key"]), {"username": username, "password": password}, endpoints=endpoints
        )
        return str(
            self.h.one(
                INSERT_SEALED_CREDENTIAL,
                self.h.site_id,
                name,
                kind,
                username,
                self.key["key_id"],
                json.dumps(envelope),
            )["id"]
        )

    def take(self, model: str | None = None, old: bool | None = None) -> tuple[BMC, str]:
        """A fresh BMC (optionally of a model, with old or current firmware) and its server row."""
        for b in self.lab.bmcs:
            if (
                b.index in self.used
                or (model and b.model != model)
                or (old is not None and (b.index % 2 == 0) != old)
            ):
                continue
            self.used.add(b.index)
            b.service_tag = f"T{uuid.uuid4().hex[:8].upper()}"  # service tags are unique across sites
            sid = str(
                self.h.one(
                    "insert into public.servers (site_id, name, idrac_address, credential_set_id, details) "
                    "values (%s, %s, %s, %s, %s) returning id",
                    self.h.site_id,
                    f"srv{b.index:02d}-{self.h.site_name}",
                    self.lab.url(b.index),
                    self.cred,
                    json.dumps({"tls": {"allow_plain_http": True}}),
                )["id"]
            )
            self.servers[b.index] = sid
            return b, sid
        raise AssertionError(f"no free BMC of model {model} (old={old})")

    def window(self) -> str:
        """An approved maintenance window for the site, open now (firmware_update needs one)."""
        now = dt.datetime.now(dt.UTC)
        wid = self.h.one(
            "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
            "values (%s, 'dell tests', %s, %s, %s) returning id",
            self.h.site_id,
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(hours=2),
            str(uuid.uuid4()),
        )["id"]
        self.h.query(
            "update public.maintenance_windows set status = 'approved', approved_by = %s where id = %s",
            str(uuid.uuid4()),
            wid,
        )
        return str(wid)

    # jobs -----------------------------------------------------------------------------------
    def create_job(
        self, job_type: str, params: dict[str, Any], *, creds: list[str] | None = None, **cols: Any
    ) -> str:
        # named as create-job names them (the console shows a target's name, never its id); a
        # test's id of no server (a refusal to check) gets a name all the same
        names = {
            r["id"]: r["name"]
            for r in self.h.query(
                "select id::text as id, name from public.servers where id::text = any(%s)",
                [str(s) for s in params.get("server_ids", [])],
            )
        }
        targets = [
            {"kind": "server", "id": s, "name": names.get(str(s), "no such server")}
            for s in params.get("server_ids", [])
        ]
        row = {
            "type": job_type,
            "site_id": self.h.site_id,
            "params": params,
            "scope": {"targets": targets} if targets else {},
            "credential_set_ids": creds if creds is not None else [self.cred],
            **cols,
        }
        return self.h.client.table("jobs").insert(row).execute().data[0]["id"]

    def run(self, job_type: str, params: dict[str, Any], timeout: float = 60, **kw: Any) -> dict[str, Any]:
        return self.wait(self.create_job(job_type, params, **kw), timeout)

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.h.wait_status(job_id, ("completed", "failed", "cancelled", "paused"), timeout=timeout)

    def wait_all(self, job_ids: list[str], timeout: float = 90) -> list[dict[str, Any]]:
        wait_until(
            lambda: all(
                self.h.job(j)["status"] in ("completed", "failed", "cancelled", "paused") for j in job_ids
            ),
            timeout,
            "jobs to finish",
            interval=0.2,
        )
        return [self.h.job(j) for j in job_ids]

    def steps(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {r["step_key"]: r for r in self.h.steps(job_id)}

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {
            str(r["target_id"]): r
            for r in self.h.query("select * from public.job_tasks where job_id = %s", job_id)
        }

    def server(self, sid: str) -> dict[str, Any]:
        return self.h.one("select * from public.servers where id = %s", sid)

    def firmware(self, sid: str) -> dict[str, str]:
        return {
            r["fqdd"]: r["version"]
            for r in self.h.query(
                "select fqdd, version from public.server_firmware where server_id = %s", sid
            )
        }

    def artifacts(self, sid: str, kind: str = "scp_backup") -> list[dict[str, Any]]:
        return self.h.query(
            "select id, job_id, sha256, size_bytes, content_type, created_at, content "
            "from public.artifacts where server_id = %s and kind = %s order by created_at",
            sid,
            kind,
        )

    def fake_backup(self, sid: str) -> None:
        """A stored SCP backup for a server (what an earlier scp_backup job leaves)."""
        self.h.query(
            "insert into public.artifacts (server_id, kind, content_type, sha256, size_bytes, content) "
            "select %s, 'scp_backup', 'application/xml', encode(extensions.digest(c, 'sha256'), 'hex'), "
            "octet_length(c), c from (select convert_to('<SystemConfiguration/>', 'UTF8') c) x",
            sid,
        )


def run_in(lt: LabThread, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, lt.loop).result(30)
