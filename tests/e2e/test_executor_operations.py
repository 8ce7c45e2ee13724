"""The executor as a site operator runs it, against the real local stack.

* every start-up mistake gives its specific message (naming the setting) and exit code 2;
* SIGTERM ends start-up retries at once, READY=1 comes only after registration;
* one process per state folder;
* an identity is bound to its key: a second key is refused while the original keeps
  running jobs; after an admin's re-key the stale credential sets are listed, the new key
  takes over and the old process stops claiming with a clear log line (exit 2);
* ``--check-config --online`` checks the control plane without registering anything;
* stderr carries JSON lines only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest

from devstack.cli import add_user
from devstack.proc import spawn
from executor.preflight import StateLock
from executor.secrets import seal, unb64u
from supabase import create_client
from tests.e2e.executor_harness import ROOT, Harness, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL


@pytest.fixture
def harness(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-ops-"))
    h = Harness(stack, tmp)
    try:
        yield h
    finally:
        h.close()
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def base_env(h: Harness, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "NOTIFY_SOCKET"))}
    env.update(
        {
            "RACKPILOT_SUPABASE_URL": h.env["SUPABASE_URL"],
            "RACKPILOT_SUPABASE_KEY": h.env["SUPABASE_SERVICE_ROLE_KEY"],
            "RACKPILOT_SITE": h.site_name,
            "RACKPILOT_EXECUTOR_NAME": f"ops-{uuid.uuid4().hex[:6]}",
            "RACKPILOT_STATE_DIR": str(state),
            "RACKPILOT_CONTROL_RETRY_MAX": "0.5",
            "RACKPILOT_HEARTBEAT_INTERVAL": "1",
            "RACKPILOT_POLL_INTERVAL": "0.5",
        }
    )
    env.update(extra)
    return env


def run_executor(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "executor", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def json_only(text: str) -> list[dict]:
    """Every non-empty line is a JSON object (the journal holds nothing else)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"a non-JSON line on stderr: {line!r}") from None
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the mistakes table -----------------------------------------------------------------------------
def _other_project_key() -> str:
    now = int(time.time())
    return jwt.encode(
        {"role": "service_role", "iss": "supabase", "iat": now, "exp": now + 3600},
        "another-project-jwt-secret-0123456789abcdef",
        algorithm="HS256",
    )


MISTAKES = {
    # id: (env changes, extra args, expected text) - every one exits 2
    "env_file_typo": (
        {},
        ["--env-file", "/etc/rackpilot/exector.env"],
        "--env-file /etc/rackpilot/exector.env: no such file",
    ),
    "nothing_set": (
        {"RACKPILOT_SUPABASE_URL": None, "RACKPILOT_SUPABASE_KEY": None, "RACKPILOT_SITE": None},
        [],
        "RACKPILOT_SUPABASE_URL is not set",
    ),
    "url_with_path": (
        {"RACKPILOT_SUPABASE_URL": "{url}/rest/v1"},
        [],
        "RACKPILOT_SUPABASE_URL must be the project URL, without /rest/v1",
    ),
    "anon_key": (
        {"RACKPILOT_SUPABASE_KEY": "{anon}"},
        [],
        "RACKPILOT_SUPABASE_KEY is the anon key; the executor needs the service-role key",
    ),
    "other_project_key": (
        {"RACKPILOT_SUPABASE_KEY": "{other}"},
        [],
        "RACKPILOT_SUPABASE_KEY is not accepted by the control plane at {url}",
    ),
    "unknown_site": (
        {"RACKPILOT_SITE": "no-such-site"},
        [],
        "RACKPILOT_SITE=no-such-site: no such site in the control plane at {url}",
    ),
    "truncated_key_file": ({}, ["@truncated"], "is not a PEM private key"),
    "key_file_mode": ({}, ["@loose"], "chmod 600"),
    "state_folder_busy": ({}, ["@busy"], "is in use by another executor process (PID {pid})"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_startup_mistake_names_the_setting_and_exits_2(harness, tmp_path, case):
    h = harness
    changes, args, expected = MISTAKES[case]
    state = tmp_path / "state"
    subst = {
        "url": h.env["SUPABASE_URL"],
        "anon": h.env["SUPABASE_ANON_KEY"],
        "other": _other_project_key(),
        "pid": os.getpid(),
    }
    env = base_env(h, state)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v.format(**subst)
    lock = None
    if "@truncated" in args:
        state.mkdir(mode=0o700)
        (state / "executor_key.pem").write_text(_truncated_pem())
        os.chmod(state / "executor_key.pem", 0o600)
    if "@loose" in args:
        run_executor(env, "--show-public-key")
        os.chmod(state / "executor_key.pem", 0o644)
    if "@busy" in args:
        lock = StateLock(state).acquire()
    try:
        res = run_executor(env, *[a for a in args if not a.startswith("@")])
    finally:
        if lock is not None:
            lock.release()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert expected.format(**subst) in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and h.env["SUPABASE_SERVICE_ROLE_KEY"] not in res.stderr + res.stdout
    if case in ("other_project_key", "unknown_site"):
        json_only(res.stderr)  # refusals from the control plane arrive as JSON log lines


def test_sigterm_during_startup_retries_ends_within_2s(harness, tmp_path):
    port = free_port()  # nothing listens: every registration attempt fails to connect
    url = f"http://127.0.0.1:{port}"
    env = base_env(harness, tmp_path / "state", RACKPILOT_SUPABASE_URL=url)
    err = tmp_path / "stderr"
    with open(err, "w") as fh:
        proc = spawn(
            [sys.executable, "-m", "executor"],
            new_session=False,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: err.read_text().count("retrying in") >= 2, 30, "two registration retries")
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0 and took < 2.0, (rc, took)
    lines = json_only(err.read_text())
    retries = [r for r in lines if "retrying in" in r["msg"]]
    assert retries and all(
        f"{url}/rest/v1/rpc/register_executor" in r["msg"] and "ConnectError" in r["msg"] for r in retries
    )
    assert lines[-1]["msg"] == "stopped before registration"


class Forwarder:
    """A TCP forwarder started late: the control plane 'comes back' on its port."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.srv = socket.create_server(("127.0.0.1", port))
        self.target = target
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target)
            except OSError:
                a.close()
                continue
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.srv.close()


def test_ready_reaches_notify_socket_only_after_registration(harness, tmp_path):
    h = harness
    from urllib.parse import urlsplit

    gw = urlsplit(h.env["SUPABASE_URL"])
    port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    name = "ready-a"
    env = base_env(
        h,
        tmp_path / "state",
        RACKPILOT_SUPABASE_URL=f"http://127.0.0.1:{port}",
        RACKPILOT_EXECUTOR_NAME=name,
        RACKPILOT_REALTIME_ENABLED="false",
        NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
    )
    err = tmp_path / "stderr"
    fwd = None
    with open(err, "w") as fh:
        proc = spawn(
            [sys.executable, "-m", "executor"],
            new_session=False,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: err.read_text().count("retrying in") >= 2, 30, "registration retries")
        with pytest.raises(BlockingIOError):
            notify.recv(1024)  # not ready while it cannot register
        assert not h.query("select 1 from public.executors where site_id = %s and name = %s", h.site_id, name)
        fwd = Forwarder(port, (gw.hostname, gw.port))
        notify.setblocking(True)
        notify.settimeout(30)
        msg = notify.recv(1024).decode()
        assert msg == "READY=1"
        # registration had happened when READY=1 arrived
        assert h.query("select 1 from public.executors where site_id = %s and name = %s", h.site_id, name)
        assert '"msg":"registered"' in err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert notify.recv(1024).decode() == "STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if fwd is not None:
            fwd.close()
        notify.close()
    json_only(err.read_text())


def test_a_second_process_on_one_state_folder_is_refused(harness):
    h = harness
    a = h.spawn("lock-a")
    a.wait_log("registered")
    res = run_executor(a.env)
    assert res.returncode == 2
    assert (
        f"state folder {a.dir / 'state'} is in use by another executor process (PID {a.proc.pid})"
        in res.stderr
    )
    assert a.proc.poll() is None  # the first one runs on
    assert a.terminate() == 0
    # only JSON on the first executor's stderr (stdout.log holds both streams)
    json_only((a.dir / "stdout.log").read_text())


def _admin_client(h: Harness, role: str = "admin"):
    email = f"ops-{role}-{uuid.uuid4().hex[:8]}@rackpilot.test"
    password = f"pw-{uuid.uuid4().hex}"
    add_user(h.stack, email, role, password)
    client = create_client(h.env["SUPABASE_URL"], h.env["SUPABASE_ANON_KEY"])
    client.auth.sign_in_with_password({"email": email, "password": password})
    return client


def test_a_second_key_is_refused_and_an_admin_rekey_hands_the_identity_over(harness):
    h = harness
    a = h.spawn("ident-a")
    a.wait_log("registered")
    old = h.one(
        "select id, key_id, public_key from public.executors where site_id = %s and name = 'ident-a'",
        h.site_id,
    )
    envelope = seal(unb64u(old["public_key"]), {"password": "ident-secret-1"})
    cred = h.one(
        INSERT_SEALED_CREDENTIAL,
        h.site_id,
        "idrac-ident",
        "idrac",
        "root",
        old["key_id"],
        json.dumps(envelope),
    )["id"]

    # a rebuilt host: same site and name, a fresh state folder, so a fresh key
    b = h.spawn("ident-b", executor_name="ident-a")
    rc = b.proc.wait(timeout=60)
    new_kid = json.loads(run_executor(b.env, "--show-public-key").stdout)["key_id"]
    text = b.log_text()
    assert rc == 2, text[-2000:]
    assert (
        f"identity_bound: executor ident-a of site {h.site_name} is bound to key {old['key_id']}; "
        f"this process holds key {new_kid}"
    ) in text
    assert f"rackpilot executor rekey {h.site_name}/ident-a --key-id {new_kid}" in text
    assert h.one("select key_id from public.executors where id = %s", old["id"])["key_id"] == old["key_id"]

    # the original keeps running jobs
    job = h.create_job({"counter_file": "ident.counter"})
    assert h.wait_status(job, ("completed", "failed"), timeout=60)["status"] == "completed"

    # the admin re-keys: audited, the stale credential set listed
    admin = _admin_client(h)
    res = (
        admin.rpc(
            "rekey_executor", {"p_executor_id": old["id"], "p_key_id": new_kid, "p_reason": "host rebuilt"}
        )
        .execute()
        .data
    )
    assert res["current_key_id"] == old["key_id"] and res["accepts_key_id"] == new_kid
    assert [r["name"] for r in res["reseal"]] == ["idrac-ident"] and str(cred) == res["reseal"][0]["id"]
    assert "until an admin re-seals them" in res["credentials"]
    audit = h.query(
        "select actor_kind, note from public.audit_log where table_name = 'executors' and row_id = %s "
        "order by id",
        str(old["id"]),
    )
    assert any(r["actor_kind"] == "user" and r["note"] == "rekey requested: host rebuilt" for r in audit)

    # the new key takes the identity over; the old process stops claiming, says why, exits 2
    b2 = h.spawn("ident-b", executor_name="ident-a")
    b2.wait_log("registered")
    a.wait_log("this executor's identity now belongs to another key", timeout=30)
    assert a.proc.wait(timeout=30) == 2
    assert "executor_replaced" in a.log_text()
    row = h.one("select key_id, previous_key_id from public.executors where id = %s", old["id"])
    assert row == {"key_id": new_kid, "previous_key_id": old["key_id"]}
    assert any(
        r["note"] and r["note"].startswith("rekey: identity")
        for r in h.query(
            "select note from public.audit_log where table_name = 'executors' and row_id = %s", str(old["id"])
        )
    )
    job2 = h.create_job({"counter_file": "ident.counter"})
    done = h.wait_status(job2, ("completed", "failed"), timeout=60)
    assert done["status"] == "completed" and str(done["claimed_by"] or old["id"]) == str(old["id"])
    assert b2.terminate() == 0


def test_rekey_is_for_admins(harness):
    h = harness
    a = h.spawn("ident-op")
    a.wait_log("registered")
    ex = h.one("select id from public.executors where site_id = %s and name = 'ident-op'", h.site_id)["id"]
    op = _admin_client(h, "operator")
    from postgrest.exceptions import APIError

    with pytest.raises(APIError, match="re-keying an executor is for admins"):
        op.rpc("rekey_executor", {"p_executor_id": str(ex), "p_key_id": None, "p_reason": "x"}).execute()
    assert a.terminate() == 0


def test_check_config_online_reads_without_registering(harness, tmp_path):
    h = harness
    env = base_env(h, tmp_path / "state", RACKPILOT_EXECUTOR_NAME="online-a")
    res = run_executor(env, "--check-config", "--online")
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["ok"] and out["online"], res.stderr
    checks = {c["check"]: c for c in out["checks"]}
    assert {
        "control_plane_reachable",
        "service_key",
        "site_exists",
        "identity",
        "state_dir_writable",
        "private_key",
        "policy_file",
        "key_role",
    } <= set(checks)
    assert "not registered yet" in checks["identity"]["detail"]
    assert not h.query("select 1 from public.executors where site_id = %s and name = 'online-a'", h.site_id)

    bad = run_executor({**env, "RACKPILOT_SITE": "nope-site"}, "--check-config", "--online")
    assert bad.returncode == 2 and "RACKPILOT_SITE=nope-site: no such site" in bad.stderr
    other = run_executor(
        {**env, "RACKPILOT_SUPABASE_KEY": _other_project_key()}, "--check-config", "--online"
    )
    assert other.returncode == 2 and "is not accepted by the control plane" in other.stderr

    # a bound identity and another key: the check says start would be refused, and the way out
    a = h.spawn("online-b")
    a.wait_log("registered")
    env_b = base_env(h, tmp_path / "state-b", RACKPILOT_EXECUTOR_NAME="online-b")
    run_executor(env_b, "--show-public-key")
    res = run_executor(env_b, "--check-config", "--online")
    assert (
        res.returncode == 2
        and "start would be refused" in res.stderr
        and "rackpilot executor rekey" in res.stderr
    )
    assert a.terminate() == 0


def _truncated_pem() -> str:
    """The first lines of a private key made now: a truncated PEM file, no key in the repository."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = (
        X25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return pem[:60]
