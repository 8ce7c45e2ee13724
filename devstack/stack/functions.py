"""``/functions/v1/<name>``: Deno edge functions behind the gateway.

One Deno process runs ``functions_router.ts``, which imports every
``supabase/functions/<name>/handler.ts`` and serves them all on a private loopback port,
together with the test functions of ``supabase/functions/tests/functions/<name>/`` (the
contract tests' ``hello``): those exist on the local stack only, since ``supabase functions
deploy`` deploys the top-level folders alone. A test function never shadows a product one.
This service checks what hosted Supabase's relay checks (the function exists, and a valid
JWT when ``verify_jwt`` is on for it in ``supabase/config.toml``) before Deno sees the
request, then forwards it with the path after ``/functions/v1``, as hosted Supabase does.

Functions get the environment Supabase gives them (SUPABASE_URL, SUPABASE_ANON_KEY,
SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL) and Deno permissions for network, environment
and reading the project only. When Deno itself fails the answer carries
``x-relay-error: true``, which the clients turn into ``FunctionsRelayError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..proc import spawn
from .asgi import BodyTooLarge, header_dict, read_body, send_json
from .config import HOST
from .jwtauth import JWTError, bearer_token

if TYPE_CHECKING:
    from .gateway import GatewayContext

log = logging.getLogger("rackpilot.functions")

PREFIX = "/functions/v1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
NOT_FUNCTIONS = frozenset({"tests", "node_modules"})  # folders of supabase/functions that are not functions
TEST_FUNCTIONS = Path("tests") / "functions"  # under supabase/functions: served here, never deployed
MAX_FUNCTION_BODY = 10 * 1024 * 1024  # largest request body forwarded to a function (bytes)
DENO_START_TIMEOUT_S = 30.0  # seconds to wait for the router to answer its health check
RESTART_MIN_INTERVAL_S = 5.0  # seconds between attempts to restart a dead router
FUNCTION_TIMEOUT_S = 150.0  # wall-clock limit of one invocation, as hosted Supabase's free tier (seconds)
ROUTER = Path(__file__).with_name("functions_router.ts")
HEALTH_PATH = "/_internal/health"
# Per-connection headers that a proxy must not forward (RFC 9110 §7.6.1), plus Host,
# which httpx sets for the internal hop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
SERVER_SET = frozenset({"date", "server"})  # the gateway's HTTP server adds its own
FUNCTION_HEADER = "x-rackpilot-function"  # the function the relay checked (verify_jwt, existence)
RELAY = [(b"x-relay-error", b"true")]


class FunctionsError(Exception):
    """Root of the failures of the functions service."""


class DenoNotFound(FunctionsError):
    """No Deno binary: run scripts/setup.sh."""


class RouterStartFailed(FunctionsError):
    """The Deno router exited or did not become healthy in time."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def find_deno(ctx: GatewayContext) -> Path:
    override = ctx.extras.get("deno_bin")
    candidates = (
        [Path(override)]
        if override
        else [
            ctx.cfg.project_root / ".venv" / "bin" / "deno",
            Path(sys.executable).parent / "deno",
        ]
    )
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    if not override and (found := shutil.which("deno")):
        return Path(found)
    raise DenoNotFound("the deno binary is missing: run scripts/setup.sh (make setup)")


class FunctionsService:
    def __init__(self, ctx: GatewayContext):
        self.ctx = ctx
        self.root = ctx.cfg.project_root
        self.functions_dir = self.root / "supabase" / "functions"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._last_start = 0.0
        self.restart_interval_s = RESTART_MIN_INTERVAL_S

    # --- the Deno router process --------------------------------------------------------
    def function_env(self) -> dict[str, str]:
        """The environment hosted Supabase gives functions, plus what Deno itself needs."""
        env = {
            "SUPABASE_URL": self.ctx.cfg.api_url,
            "SUPABASE_ANON_KEY": self.ctx.secrets.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.ctx.secrets.service_role_key,
            "SUPABASE_DB_URL": self.ctx.dsn("postgres"),
            "RACKPILOT_FUNCTIONS_DIR": str(self.functions_dir),
            "RACKPILOT_FUNCTIONS_PORT": str(self.port),
            "DENO_DIR": os.environ.get("DENO_DIR", str(self.root / ".cache" / "deno")),
            "DENO_NO_UPDATE_CHECK": "1",
            "NO_COLOR": "1",
        }
        for key in ("PATH", "HOME", "LANG", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _command(self, deno: Path) -> list[str]:
        return [
            str(deno),
            "run",
            "--quiet",
            "--no-prompt",
            "--config",
            str(self.functions_dir / "deno.json"),
            "--frozen",
            "--allow-net",
            "--allow-env",
            f"--allow-read={self.root}",
            str(ROUTER),
        ]

    async def _start_router(self) -> None:
        deno = find_deno(self.ctx)
        self.port = _free_port()
        self._last_start = time.monotonic()
        # stdout/stderr go to the gateway's log, so functions' console output lands there.
        # The router holds the service key and the DB URL: it must never outlive the gateway.
        # It dies with it (parent-death signal, also on SIGKILL), stays in the gateway's
        # process group (stop_gateway signals the group) and inherits the gateway's owner
        # marker (`rackpilot dev down` sweeps it even when both of those missed).
        self.proc = spawn(
            self._command(deno),
            env=self.function_env(),
            cwd=self.functions_dir,
            stdin=subprocess.DEVNULL,
            new_session=False,
        )
        deadline = time.monotonic() + DENO_START_TIMEOUT_S
        assert self.client is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RouterStartFailed(f"the functions router exited with {self.proc.returncode}")
            try:
                resp = await self.client.get(f"http://{HOST}:{self.port}{HEALTH_PATH}", timeout=1.0)
                if resp.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        self._stop_router()
        raise RouterStartFailed(f"the functions router did not answer within {DENO_START_TIMEOUT_S:.0f}s")

    def _stop_router(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    async def _ensure_router(self) -> bool:
        """True when the router is running; restarts a dead one at most every few seconds."""
        if self.proc is not None and self.proc.poll() is None:
            return True
        async with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return True
            if time.monotonic() - self._last_start < self.restart_interval_s:
                return False
            if self.proc is not None:
                log.warning("the functions router exited with %s; restarting it", self.proc.returncode)
            try:
                await self._start_router()
            except FunctionsError as exc:
                log.error("functions router: %s", exc)
                return False
            return True

    async def startup(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(FUNCTION_TIMEOUT_S, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
        )
        try:
            await self._start_router()
        except FunctionsError as exc:
            # REST and Auth must still come up; invocations answer relay errors until a
            # later request manages to start the router.
            log.error("functions router: %s", exc)

    async def shutdown(self) -> None:
        await asyncio.to_thread(self._stop_router)
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    # --- requests -----------------------------------------------------------------------
    def function_exists(self, name: str) -> bool:
        """A product function (``supabase/functions/<name>/``), or else a test function
        (``supabase/functions/tests/functions/<name>/``); the router decides the same way."""
        return (
            name not in NOT_FUNCTIONS
            and NAME_RE.match(name) is not None
            and any(
                (base / name / "handler.ts").is_file()
                for base in (self.functions_dir, self.functions_dir / TEST_FUNCTIONS)
            )
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        rest = raw_path[len(PREFIX) :]
        segments = scope["path"][len(PREFIX) :].lstrip("/").split("/")
        name = segments[0]
        if "." in segments or ".." in segments:
            # Deno would resolve dot segments (also percent-encoded ones) and could land on
            # another function than the one whose verify_jwt was checked here.
            await _error(send, 404, "Requested function was not found", "NOT_FOUND")
            return
        headers = header_dict(scope)
        method: str = scope["method"]

        # CORS preflights never carry a token; hosted Supabase lets them through to the
        # function, whose own code answers them.
        if method != "OPTIONS" and self.ctx.cfg.function_verify_jwt(name):
            token = bearer_token(headers)
            if not token:
                await _error(send, 401, "Missing authorization header", "UNAUTHORIZED_NO_AUTH_HEADER")
                return
            try:
                self.ctx.verifier.verify(token)
            except JWTError as exc:
                await _error(send, 401, "Invalid JWT", "UNAUTHORIZED_INVALID_JWT", exc.message)
                return
        if not self.function_exists(name):
            await _error(send, 404, "Requested function was not found", "NOT_FOUND")
            return
        try:
            body = await read_body(receive, MAX_FUNCTION_BODY)
        except BodyTooLarge:
            await _error(
                send, 413, f"Request body is larger than {MAX_FUNCTION_BODY} bytes", "PAYLOAD_TOO_LARGE"
            )
            return
        if not await self._ensure_router():
            await _error(
                send, 503, "The functions runtime is not available", "RELAY_UNAVAILABLE", extra=RELAY
            )
            return
        await self._forward(scope, send, method, name, rest, headers, body)

    async def _forward(
        self,
        scope: dict,
        send: Any,
        method: str,
        name: str,
        rest: bytes,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        assert self.client is not None
        # From the raw list, so repeated headers (cookies, say) reach the function intact.
        fwd = [
            (k, v)
            for k, v in ((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
            if k not in HOP_BY_HOP and k != FUNCTION_HEADER
        ]
        # The router serves only the function this relay checked, whatever the path says.
        fwd.append((FUNCTION_HEADER, name))
        if "accept-encoding" not in headers:
            # httpx would otherwise ask Deno for gzip, and we relay bytes untouched.
            fwd.append(("accept-encoding", "identity"))
        client = scope.get("client")
        if client:
            fwd.append(("x-forwarded-for", client[0]))
        if "host" in headers:
            fwd.append(("x-forwarded-host", headers["host"]))
        url = f"http://{HOST}:{self.port}{rest.decode('latin-1') or '/'}"
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        request = self.client.build_request(method, url, headers=fwd, content=body)
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            await _error(send, 504, "The function did not answer in time", "RELAY_TIMEOUT", extra=RELAY)
            return
        except httpx.HTTPError as exc:
            log.warning("functions relay failed: %s", type(exc).__name__)
            await _error(send, 502, "The functions runtime failed to answer", "RELAY_ERROR", extra=RELAY)
            return
        try:
            out = [
                (k, v)
                for k, v in resp.headers.raw
                if (key := k.lower().decode("latin-1")) not in HOP_BY_HOP and key not in SERVER_SET
            ]
            length = resp.headers.get("content-length")
            if length is not None:
                out.append((b"content-length", length.encode()))
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            try:
                async for chunk in resp.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                # The status line is already out; all that is left is to end the body.
                log.warning("functions relay broke mid-response: %s", type(exc).__name__)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await resp.aclose()


async def _error(
    send: Any,
    status: int,
    message: str,
    code: str,
    details: Any = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    # `error` is what the clients' FunctionsHttpError shows as its message.
    await send_json(send, status, {"error": message, "code": code, "details": details}, extra)
