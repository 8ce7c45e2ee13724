"""The local stack's single API port, laid out as Supabase's:

    /rest/v1/...          PostgREST-compatible subset       (devstack.stack.rest)
    /auth/v1/...          GoTrue-compatible subset          (devstack.stack.auth)
    /realtime/v1/...      Realtime (Phoenix v1 websocket)   (devstack.stack.realtime)
    /functions/v1/<name>  Deno edge functions               (devstack.stack.functions)
    /storage/v1/...       not served: 501 in Storage's error shape
    /health               200 once every service has started

Run as ``python -m devstack.stack.gateway`` (``rackpilot dev up`` does so); its config
comes from the RACKPILOT_* environment (see devstack.stack.config).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .asgi import Service, send_json
from .config import HOST, StackConfig
from .jwtauth import JWTVerifier
from .secrets import StackSecrets

log = logging.getLogger("rackpilot.gateway")

SERVICES = {
    "/rest/v1": "devstack.stack.rest:RestService",
    "/auth/v1": "devstack.stack.auth:AuthService",
    "/realtime/v1": "devstack.stack.realtime:RealtimeService",
    "/functions/v1": "devstack.stack.functions:FunctionsService",
}


@dataclass
class GatewayContext:
    """What every service gets: config, secrets, the shared JWT verifier, DSNs."""

    cfg: StackConfig
    secrets: StackSecrets
    verifier: JWTVerifier
    extras: dict[str, Any] = field(default_factory=dict)

    def dsn(self, user: str = "postgres") -> str:
        password = {
            "postgres": self.secrets.postgres_password,
            "authenticator": self.secrets.authenticator_password,
        }[user]
        return f"postgresql://{user}:{password}@{HOST}:{self.cfg.db_port}/postgres"


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Gateway:
    def __init__(self, ctx: GatewayContext, only: list[str] | None = None):
        self.ctx = ctx
        self.routes: list[tuple[str, Service]] = []
        for prefix, spec in SERVICES.items():
            if only is not None and prefix not in only:
                continue
            try:
                factory = _load(spec)
            except ModuleNotFoundError as exc:
                if exc.name != spec.partition(":")[0]:
                    raise
                log.warning("service %s is not available: %s", prefix, exc)
                continue
            self.routes.append((prefix, factory(ctx)))
        self.ready = False

    def service(self, prefix: str) -> Service | None:
        """The service mounted at ``prefix`` (None when it is not available)."""
        return next((svc for p, svc in self.routes if p == prefix), None)

    async def startup(self) -> None:
        for _, svc in self.routes:
            await svc.startup()
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        for _, svc in reversed(self.routes):
            try:
                await svc.shutdown()
            except Exception:  # noqa: BLE001 - shut the others down regardless
                log.exception("service shutdown failed")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        for prefix, svc in self.routes:
            if path == prefix or path.startswith(prefix + "/"):
                await svc(scope, receive, send)
                return
        if kind == "http" and path == "/health":
            await send_json(send, 200 if self.ready else 503, {"ok": self.ready})
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/storage/v1" or path.startswith("/storage/v1/"):
            # Storage is not part of the local stack (rackpilot keeps no files there): say so
            # in Storage's own error shape, which the storage clients parse
            await send_json(
                send,
                501,
                {
                    "statusCode": "501",
                    "error": "not_implemented",
                    "message": "Storage is not served by the rackpilot local stack",
                },
            )
            return
        await send_json(
            send,
            404,
            {
                "code": "PGRST125",
                "message": "Invalid path specified in request URL",
                "details": None,
                "hint": None,
            },
        )

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001
                    log.exception("gateway startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _CoalescingTransport:
    """Holds one write back until the next write or the next loop iteration.

    uvicorn's httptools protocol writes a response's head and its body with two
    ``transport.write`` calls; on a loopback TCP socket with TCP_NODELAY each is a send
    syscall and a segment of its own, and the client wakes up twice. The body's write
    follows the head's in the same task step, so holding the head back until then sends
    one segment. Anything else (a streamed body, 100-continue) is flushed on the next
    loop iteration, in order."""

    __slots__ = ("_t", "_pending", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._t = transport
        self._pending: bytes | None = None
        self._loop = loop

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            data, self._pending = self._pending + data, None
            self._t.write(data)

    def _flush(self) -> None:
        if self._pending is not None:
            data, self._pending = self._pending, None
            if not self._t.is_closing():
                self._t.write(data)

    def close(self) -> None:
        self._flush()
        self._t.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._t, name)


class _Signal:
    """asyncio.Event's set, clear and wait for the one task that may wait (the REST
    service reading a body); its future is made only then, so a GET costs no Event."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


def _no_response_callback() -> None:
    pass


class _RestExchange:
    """One /rest/v1 request on a connection, in the place of uvicorn's RequestResponseCycle:
    it has the attributes uvicorn's protocol reads and writes on its current cycle (``body``,
    ``more_body``, ``message_event``, ``disconnected``, ``response_complete``,
    ``keep_alive``) and the cycle's ``receive``, and nothing of its ASGI ``send``: the
    answer is written whole by the protocol's ``_serve_rest``."""

    __slots__ = (
        "scope",
        "transport",
        "flow",
        "message_event",
        "body",
        "more_body",
        "disconnected",
        "keep_alive",
        "waiting_for_100_continue",
        "response_complete",
        "on_response",
    )

    def __init__(
        self,
        scope: dict,
        transport: asyncio.Transport,
        flow: Any,
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Any,
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.message_event = _Signal()
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.response_complete = False  # the answer is written whole: started is complete
        self.on_response = on_response

    async def receive(self) -> dict:
        """The request body as ASGI ``http.request`` messages, as uvicorn's cycle gives it
        (100 Continue first when the client asked for it)."""
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message


def _http_protocol(gateway: Gateway | None = None) -> type:
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    rest = gateway.service("/rest/v1") if gateway is not None else None
    respond = getattr(rest, "respond", None)
    rest_app = object()  # stands for the REST service in uvicorn's pipeline of (cycle, app)
    # uvicorn's default headers (server, date) as header lines; the server replaces the list
    # when the date changes, so the lines are made again once per list
    default_lines: list[Any] = [None, b""]

    def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
        if default_lines[0] is not headers:
            default_lines[1] = b"".join([n + b": " + v + b"\r\n" for n, v in headers])
            default_lines[0] = headers
        return default_lines[1]

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol whose request cycles write through _CoalescingTransport
        (only HTTP responses: a websocket upgrade keeps the plain transport), and which answers
        /rest/v1 without ASGI: the REST service's ``respond`` gives status, headers and body,
        written here as one segment (uvicorn's per-message checks, header regexes and the
        gateway's routing cost ~15% of a REST request's CPU). uvicorn still parses the request,
        feeds the body, and keeps keep-alive, pipelining and flow control: the cycle is
        completed exactly as its ``send`` completes it. A /rest/v1 request gets no ASGI scope
        beyond the keys the REST service reads and no transport wrapper (its answer is one
        write), and keep-alive arms one timer per idle period, not one per request: with
        the REST service's own hot path, ~18% of the gateway's CPU per REST GET."""

        _idle_deadline: float | None = None  # loop time at which an idle connection is closed
        _idle_timer: asyncio.TimerHandle | None = None

        # Keep-alive: uvicorn cancels a timer on every request and starts a new one on every
        # answer; here one timer is armed per idle period and, when it fires, closes the
        # connection if it has been idle since, or waits for the current deadline.
        def _unset_keepalive_if_required(self) -> None:
            self._idle_deadline = None  # busy: the armed timer, if any, stands down

        def on_response_complete(self) -> None:  # uvicorn's, with the timer above
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._idle_deadline = None
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self._idle_deadline = deadline = self.loop.time() + self.timeout_keep_alive
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_at(deadline, self._idle_due)

        def _idle_due(self) -> None:
            self._idle_timer = None
            deadline = self._idle_deadline
            if deadline is None:
                return  # a request is being answered; its answer arms the timer again
            if self.loop.time() >= deadline:
                self.timeout_keep_alive_handler()
            else:
                self._idle_timer = self.loop.call_at(deadline, self._idle_due)

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self._idle_deadline = None
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

        def on_message_begin(self) -> None:
            # uvicorn builds the ASGI scope here; it is built in on_headers_complete instead,
            # once the path tells whether the request goes to ASGI at all
            self.url = b""
            self.expect_100_continue = False
            self.headers = []

        def on_headers_complete(self) -> None:
            parser = self.parser
            if respond is not None and not self.root_path and self.limit_concurrency is None:
                try:
                    parsed = httptools.parse_url(self.url)
                except httptools.HttpParserInvalidURLError:
                    parsed = None  # uvicorn's own handling below reports it
                if parsed is not None and not parser.should_upgrade():
                    raw_path = parsed.path
                    path = raw_path.decode("ascii")
                    if "%" in path:
                        path = urllib.parse.unquote(path)
                    if path == "/rest/v1" or path.startswith("/rest/v1/"):
                        self._rest_request(path, raw_path, parsed.query or b"")
                        return
            self.scope = {  # as uvicorn's on_message_begin builds it
                "type": "http",
                "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1",
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,
                "root_path": self.root_path,
                "headers": self.headers,
                "state": self.app_state.copy(),
            }
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and not isinstance(cycle.transport, _CoalescingTransport):
                cycle.transport = _CoalescingTransport(cycle.transport, self.loop)

        def _rest_request(self, path: str, raw_path: bytes, query: bytes) -> None:
            """uvicorn's on_headers_complete for a /rest/v1 request: the same life (body,
            100-continue, keep-alive, pipelining, disconnect) in a _RestExchange, with only
            the scope keys the REST service reads."""
            parser = self.parser
            http_version = parser.get_http_version()
            self.scope = scope = {
                "type": "http",
                "http_version": http_version,
                "method": parser.get_method().decode("ascii"),
                "path": path,
                "raw_path": raw_path,
                "query_string": query,
                "headers": self.headers,
                "client": self.client,
            }
            existing = self.cycle
            self.cycle = exchange = _RestExchange(
                scope,
                self.transport,
                self.flow,
                self.expect_100_continue,
                http_version != "1.0" and parser.should_keep_alive(),
                self.on_response_complete,
            )
            if existing is None or existing.response_complete:
                self._start_asgi_task(exchange, rest_app)
            else:  # pipelined behind a request still being answered, as uvicorn queues it
                self.flow.pause_reading()
                self.pipeline.appendleft((exchange, rest_app))

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            if app is not rest_app:
                super()._start_asgi_task(cycle, app)
                return
            task = self.loop.create_task(self._serve_rest(cycle))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

        async def _serve_rest(self, exchange: _RestExchange) -> None:
            try:
                status, headers, body = await respond(exchange.scope, exchange.receive)
                if exchange.flow.write_paused and not exchange.disconnected:
                    await exchange.flow.drain()
                transport = exchange.transport
                if exchange.disconnected or transport.is_closing():
                    return
                # the service's header lines, refused whole if a value holds CR or LF
                lines = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
                if lines.count(b"\r") != len(headers) or lines.count(b"\n") != len(headers):
                    raise RuntimeError("invalid HTTP header value")
                out = [STATUS_LINE[status], _default_lines(self.server_state.default_headers), lines]
                if not exchange.keep_alive:
                    out.append(b"connection: close\r\n")
                out += (b"\r\n", body)
                exchange.response_complete = True
                exchange.waiting_for_100_continue = False
                exchange.message_event.set()
                transport.write(b"".join(out))
                if not exchange.keep_alive:
                    transport.close()
                exchange.on_response()
            except BaseException:  # as uvicorn's run_asgi: a 500, or the connection closed
                log.exception("REST request failed")
                transport = exchange.transport
                if not exchange.response_complete and not exchange.disconnected:
                    exchange.response_complete = True
                    if not transport.is_closing():
                        transport.write(
                            b"".join(
                                [
                                    STATUS_LINE[500],
                                    _default_lines(self.server_state.default_headers),
                                    b"content-type: text/plain; charset=utf-8\r\n"
                                    b"content-length: 21\r\nconnection: close\r\n\r\n"
                                    b"Internal Server Error",
                                ]
                            )
                        )
                        transport.close()
                    exchange.on_response()
                else:
                    self.transport.close()
            finally:
                exchange.on_response = _no_response_callback

    return CoalescingHttpToolsProtocol


def build_context(cfg: StackConfig | None = None) -> GatewayContext:
    cfg = cfg or StackConfig.from_env()
    secrets = StackSecrets.load_or_create(cfg.secrets_file)
    return GatewayContext(cfg=cfg, secrets=secrets, verifier=JWTVerifier(secrets.jwt_secret))


def main() -> int:
    import uvicorn

    logging.basicConfig(
        level=os.environ.get("RACKPILOT_LOG_LEVEL", "WARNING"),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}',
    )
    ctx = build_context()
    app = Gateway(ctx)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=ctx.cfg.api_port,
        loop="uvloop",
        http=_http_protocol(app),
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        ws_max_size=1 << 20,
        ws_ping_interval=None,
        timeout_graceful_shutdown=5,
        backlog=2048,
        # the gateway is the edge (loopback only, no proxy in front): X-Forwarded-* from a
        # client must not replace the peer address, and the middleware costs every request
        proxy_headers=False,
    )
    server = uvicorn.Server(config)

    def _stop(*_: Any) -> None:
        server.should_exit = True

    # Config(loop="uvloop") only applies inside uvicorn.run(); a loop made here must be
    # uvloop's explicitly, or the gateway runs on the (much slower) default asyncio loop.
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    loop.run_until_complete(server.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
