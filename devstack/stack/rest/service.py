"""The PostgREST-compatible REST layer served at ``/rest/v1`` (raw ASGI, no framework).

Per request: verify the JWT, parse the query string into a shape plus values, look the
shape's SQL up in a cache (or generate it from the schema cache), then make ONE round
trip: ``select * from _rackpilot_rest.run(...)`` outside any open transaction. That
plpgsql function switches to the token's role, sets ``request.jwt.claims``,
``request.method``, ``request.path`` and ``request.headers`` with transaction-local
settings and EXECUTEs the statement, so Postgres resolves privileges and RLS as the
caller. (Switching the role inside the same single SQL statement as the query would NOT
apply RLS: permissions are resolved before such a statement runs.) Because all state is
transaction-local, connections need no reset between requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import asyncpg
import orjson

from ..asgi import MAX_BODY_BYTES
from ..jwtauth import JWTError, bearer_token
from . import openapi
from . import query as q
from .errors import (
    AmbiguousFunction,
    BodyTooLarge,
    DatabaseError,
    FunctionNotFound,
    InvalidBody,
    JWTRejected,
    MethodNotAllowed,
    NotAcceptable,
    RangeNotSatisfiable,
    RestError,
    SchemaNotExposed,
    SingularityError,
    TableNotFound,
    Unavailable,
    UnsupportedMediaType,
    status_for_sqlstate,
)
from .schema import Function, Relation, SchemaCache, load_schema_cache, quote_ident

log = logging.getLogger("rackpilot.rest")

PREFIX = "/rest/v1"
# connections the REST layer keeps to Postgres (count); requests queue for a free one.
# 16 (one per concurrent client in the benchmark): with 8, requests waiting in the queue
# made the p99 17-19 ms at 16 concurrent clients; with 16 it is ~6 ms at the same req/s
POOL_SIZE = int(os.environ.get("RACKPILOT_REST_CONNECTIONS", "16"))
SQL_CACHE_SIZE = 2048  # generated statements kept, keyed by request shape (count)
CLAIMS_CACHE_SIZE = 4096  # verified tokens kept with their role and claims JSON (count)
HEADER_CACHE_SIZE = 1024  # decoded request header sets kept, with their JSON (count)
HEADER_CACHE_MAX_JSON = 4096  # larger header sets are decoded per request, not kept (characters)
RELOAD_RETRY_S = 1.0  # pause before re-connecting the schema listener (seconds)
CONNECT_TIMEOUT_S = 5.0  # to open one database connection (seconds)

RUN_SQL = (
    "select body, page_total, total, status "
    "from _rackpilot_rest.run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
# statements kept prepared per connection (count); then they are deallocated and start over
PREPARED_PER_CONN = 256
DEALLOCATE_SQL = """do $$
declare s record;
begin
  for s in select name from pg_prepared_statements where left(name, 4) = '_rp_' loop
    execute format('deallocate %I', s.name);
  end loop;
end $$"""
SINGLE_MEDIA = "application/vnd.pgrst.object+json"
CT_JSON = (b"content-type", b"application/json; charset=utf-8")
CT_SINGLE = (b"content-type", b"application/vnd.pgrst.object+json; charset=utf-8")
CT_CSV = (b"content-type", b"text/csv; charset=utf-8")
CT_OPENAPI = (b"content-type", b"application/openapi+json; charset=utf-8")
# Accept: application/vnd.pgrst.plan[+text|+json][; options=analyze|verbose|settings|buffers|wal]:
# EXPLAIN of the request's statement, run as the caller; only when the authenticator role
# has pgrst.db_plan_enabled = true (PostgREST's db-plan-enabled, off by default as on Supabase)
EXPLAIN_SQL = "select _rackpilot_rest.explain($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
PLAN_OPTIONS = ("analyze", "verbose", "settings", "buffers", "wal")
PLAN_ENABLED_SQL = """
select coalesce(bool_or(lower(split_part(c, '=', 2)) in ('true', 'on', '1')), false)
from pg_db_role_setting r cross join unnest(r.setconfig) c
where r.setrole = (select oid from pg_roles where rolname = current_user)
  and r.setdatabase in (0, (select oid from pg_database where datname = current_database()))
  and split_part(c, '=', 1) = 'pgrst.db_plan_enabled'
"""


TX_END_MODES = ("commit", "commit-allow-override", "rollback", "rollback-allow-override")
# PostgREST's db-tx-end: how a request's transaction ends, and whether Prefer: tx=... may
# change that. "commit" (PostgREST's default, and hosted Supabase's) ignores Prefer: tx.
TX_END = os.environ.get("RACKPILOT_DB_TX_END", "commit")
if TX_END not in TX_END_MODES:
    raise ValueError(f"RACKPILOT_DB_TX_END must be one of {', '.join(TX_END_MODES)}, not {TX_END!r}")
RANGE_RE = re.compile(r"^\s*(\d{1,18})-(\d{0,18})\s*$")


class _Prefer:
    __slots__ = ("representation", "count", "resolution", "missing_default", "tx")

    def __init__(self, header: str | None):
        self.representation: bool | None = None
        self.count = False
        self.resolution: str | None = None
        self.missing_default = False
        self.tx: str | None = None
        if not header:
            return
        for raw in header.split(","):
            item = raw.strip()
            if item == "return=representation":
                self.representation = True
            elif item in ("return=minimal", "return=headers-only"):
                self.representation = False
            elif item == "count=exact" or item == "count=planned" or item == "count=estimated":
                self.count = True  # planned/estimated are answered with the exact count
            elif item == "resolution=merge-duplicates":
                self.resolution = "merge"
            elif item == "resolution=ignore-duplicates":
                self.resolution = "ignore"
            elif item == "missing=default":
                self.missing_default = True
            elif item == "missing=null":
                self.missing_default = False
            elif item in ("tx=commit", "tx=rollback"):
                self.tx = item[3:]
            # other preferences (handling=..., timezone=...) are not applied, as PostgREST
            # does with handling=lenient

    def rollback(self) -> bool:
        """Whether the request's transaction is rolled back (db-tx-end and Prefer: tx)."""
        if TX_END.endswith("allow-override") and self.tx is not None:
            return self.tx == "rollback"
        return TX_END.startswith("rollback")

    def applied(self, rollback: bool) -> list[str]:
        out = []
        if self.missing_default:
            out.append("missing=default")
        if TX_END.endswith("allow-override") and self.tx is not None:
            out.append(f"tx={'rollback' if rollback else 'commit'}")
        return out


NO_PREFER = _Prefer(None)  # a request without a Prefer header (never modified)


def _range_header(value: str | None) -> tuple[int, int | None] | None:
    """``Range: <first>-[<last>]`` (items) -> (offset, limit or None)."""
    if value is None:
        return None
    m = RANGE_RE.match(value.removeprefix("items="))
    if not m:
        return None  # as PostgREST: a Range header it cannot read is ignored
    first = int(m.group(1))
    if m.group(2) == "":
        return first, None
    last = int(m.group(2))
    if last < first:
        raise RangeNotSatisfiable(
            "Requested range not satisfiable", details=f"the range {value!r} ends before it starts"
        )
    return first, last - first + 1


def _intersect(
    offset: int, limit: int | None, header: tuple[int, int | None] | None
) -> tuple[int, int | None]:
    """The query's offset/limit intersected with a Range header, as PostgREST does."""
    if header is None:
        return offset, limit
    lo = max(offset, header[0])
    ends = [
        e
        for e in (
            None if limit is None else offset + limit,
            None if header[1] is None else header[0] + header[1],
        )
        if e is not None
    ]
    hi = min(ends) if ends else None
    if hi is not None and hi <= lo:
        raise RangeNotSatisfiable(
            "Requested range not satisfiable", details="the Range header and the limit/offset do not overlap"
        )
    return lo, None if hi is None else hi - lo


def _split_qs(raw: bytes) -> list[tuple[str, str]]:
    """The query string's (key, value) pairs, percent-decoded; not UTF-8 is PGRST100."""
    if not raw:
        return []
    try:
        text = raw.decode("utf-8")
        pairs = []
        for part in text.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            if "%" in key or "+" in key:
                key = unquote_plus(key, errors="strict")
            if "%" in value or "+" in value:
                value = unquote_plus(value, errors="strict")
            pairs.append((key, value))
    except UnicodeDecodeError:
        raise q.ParseError("The query string is not valid UTF-8") from None
    return pairs


class _Media:
    """What the Accept header asks for: ``json``, ``single`` (one object), ``csv`` or
    ``plan`` (with the EXPLAIN format and options)."""

    __slots__ = ("mode", "fmt", "options")

    def __init__(self, mode: str, fmt: str = "text", options: tuple[str, ...] = ()):
        self.mode, self.fmt, self.options = mode, fmt, options


JSON_MEDIA = _Media("json")


def _media(accept: str | None, plan_enabled: bool) -> _Media:
    """The first media type of ``Accept`` this layer produces, as PostgREST negotiates."""
    if not accept:
        return JSON_MEDIA
    for raw in accept.split(","):
        media, *params = [p.strip() for p in raw.split(";")]
        media = media.lower()
        if media in ("application/json", "*/*", "application/*", ""):
            return JSON_MEDIA
        if media == SINGLE_MEDIA:
            return _Media("single")
        if media == "text/csv":
            return _Media("csv")
        if plan_enabled and media in (
            "application/vnd.pgrst.plan",
            "application/vnd.pgrst.plan+text",
            "application/vnd.pgrst.plan+json",
        ):
            options: list[str] = []
            for p in params:
                key, _, value = p.partition("=")
                if key.strip().lower() == "options":
                    options = [o for o in value.strip().strip('"').split("|") if o]
            if any(o not in PLAN_OPTIONS for o in options):
                continue
            return _Media("plan", "json" if media.endswith("+json") else "text", tuple(options))
    raise NotAcceptable(
        "None of these media types are available: " + accept[:200],
        hint="This REST layer answers application/json, application/vnd.pgrst.object+json and text/csv",
    )


def _single_accept(accept: str | None) -> bool:
    """True for the single-object media type; raise for media types not produced here."""
    if not accept:
        return False
    single = False
    for raw in accept.split(","):
        media = raw.split(";", 1)[0].strip().lower()
        if media == SINGLE_MEDIA:
            single = True
        elif media in ("application/json", "*/*", "application/*", ""):
            return single
        # any other media type is skipped: one acceptable entry in the list suffices
    if single:
        return True
    raise NotAcceptable(
        "None of these media types are available: " + accept[:200],
        hint="This REST layer answers application/json and application/vnd.pgrst.object+json",
    )


class _Pool:
    """The free pooled connections. A connection given back goes to the longest waiting
    request if there is one (first come, first served), else onto the free list. Cheaper
    than asyncio.Queue on the hot path (no task accounting, no event to clear)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self) -> None:
        self._free: list[asyncpg.Connection] = []
        self._waiters: deque[asyncio.Future[asyncpg.Connection]] = deque()

    def put_nowait(self, conn: asyncpg.Connection) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    async def get(self) -> asyncpg.Connection:
        if self._free:
            return self._free.pop()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # cancelled after a connection was handed over: pass it on, never lose it
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())
            raise

    def qsize(self) -> int:
        return len(self._free)


class RestService:
    """ASGI app for ``/rest/v1``; constructed by the gateway with its GatewayContext."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.schemas: list[str] = list(ctx.cfg.exposed_schemas)
        self.default_schema = self.schemas[0]
        self.max_rows: int = ctx.cfg.max_rows
        self.cache = SchemaCache(schemas=self.schemas)
        self._conns = _Pool()
        self._all: list[asyncpg.Connection] = []
        self._sql_cache: OrderedDict[tuple, tuple[str, str]] = OrderedDict()
        # names of the statements prepared on each connection (see _rackpilot_rest.run)
        self._prepared: dict[asyncpg.Connection, set[str]] = {}
        # token -> (role, claims JSON, exp): verified tokens, used until they expire
        self._claims: dict[str, tuple[str, str, float]] = {}
        self._header_cache: dict[tuple, tuple[dict[str, str], str]] = {}
        self._search_path: dict[str, str] = {
            s: ", ".join(quote_ident(x) for x in dict.fromkeys([s, *ctx.cfg.extra_search_path]))
            for s in self.schemas
        }
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False
        self._closing = False
        self.plan_enabled = False  # pgrst.db_plan_enabled of the authenticator role
        self._openapi: dict[tuple, bytes] = {}

    # --- lifecycle --------------------------------------------------------------------
    async def _connect(self) -> asyncpg.Connection:
        # statement_cache_size stays on: RUN_SQL is the only statement and is prepared once
        return await asyncpg.connect(
            self.ctx.dsn("authenticator"),
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": "rackpilot-rest"},
        )

    async def startup(self) -> None:
        for _ in range(POOL_SIZE):
            conn = await self._connect()
            self._all.append(conn)
            self._conns.put_nowait(conn)
        await self.reload_schema()
        self._listen_task = asyncio.create_task(self._listen_forever())

    async def shutdown(self) -> None:
        self._closing = True
        if self._listen_task:
            self._listen_task.cancel()
        conns = [*self._all] + ([self._listener] if self._listener else [])
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), 2)
            except Exception:  # noqa: BLE001 - closing anyway
                conn.terminate()

    async def reload_schema(self) -> None:
        """Rebuild the schema cache; concurrent requests for a reload coalesce into one."""
        self._reload_pending = True
        async with self._reload_lock:
            if not self._reload_pending:
                return
            self._reload_pending = False
            conn = await self._checkout()
            try:
                try:
                    cache = await load_schema_cache(conn, self.schemas)
                    self.plan_enabled = bool(await conn.fetchval(PLAN_ENABLED_SQL))
                except Exception as exc:
                    if not _dead_connection(exc):
                        raise
                    # a pooled connection the database dropped (restart, pg_terminate_backend):
                    # replace it and load again, or every reload after it fails and the cache
                    # stays stale until requests happen to replace the whole pool
                    conn = await self._replace(conn)
                    cache = await load_schema_cache(conn, self.schemas)
                    self.plan_enabled = bool(await conn.fetchval(PLAN_ENABLED_SQL))
            finally:
                self._conns.put_nowait(conn)
            self.cache = cache
            self._sql_cache.clear()
            self._openapi.clear()
            log.info(
                "schema cache loaded: %d relations, %d functions", len(cache.relations), len(cache.functions)
            )

    async def _listen_forever(self) -> None:
        loop = asyncio.get_running_loop()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload in ("", "reload schema", "reload config"):
                loop.create_task(self._safe_reload())

        while not self._closing:
            try:
                self._listener = await self._connect()
                await self._listener.add_listener("pgrst", on_notify)
                # anything may have changed while we were not listening
                await self._safe_reload()
                while not self._listener.is_closed():
                    await asyncio.sleep(RELOAD_RETRY_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening across restarts
                log.warning("schema listener: %s", type(exc).__name__)
            await asyncio.sleep(RELOAD_RETRY_S)

    async def _safe_reload(self) -> None:
        try:
            await self.reload_schema()
        except Exception:  # noqa: BLE001 - the old cache stays in use
            log.exception("schema cache reload failed")

    # --- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        status, headers, body = await self.respond(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def respond(self, scope: dict, receive: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The whole answer to one HTTP request: status, headers (content-length included)
        and body. Never raises for a request's fault. The gateway's HTTP protocol calls this
        directly for /rest/v1 (no ASGI messages on the hot path); __call__ is the ASGI form."""
        try:
            status, headers, body = await self._handle(scope, receive)
        except RestError as exc:
            status, headers, body = exc.status, [CT_JSON], orjson.dumps(exc.body())
            if isinstance(exc, JWTRejected):
                # as PostgREST: RFC 6750 challenge naming what was wrong with the token
                headers.append(
                    (
                        b"www-authenticate",
                        b'Bearer error="invalid_token", error_description="'
                        + exc.message.replace('"', "'").encode("ascii", "replace")
                        + b'"',
                    )
                )
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            status, headers = 500, [CT_JSON]
            body = orjson.dumps(
                {"code": "PGRST500", "details": None, "hint": None, "message": "Internal server error"}
            )
        if scope["method"] == "HEAD":
            body = b""
        headers.append((b"content-length", str(len(body)).encode()))
        return status, headers, body

    def _headers(self, raw: Any) -> tuple[dict[str, str], str, str]:
        """The request's headers as a dict (lower-case names, as ASGI servers give them; a
        repeated name keeps its last value) and as the JSON of ``request.headers``. Clients
        send the same header set again and again (same token, same apikey), so both are
        kept per distinct raw header list, with the request's token (bearer_token, or ""): no
        decoding and no JSON per request. The dict is shared between requests and must not
        be modified."""
        key = tuple(raw)
        hit = self._header_cache.get(key)
        if hit is None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in key}
            hit = (headers, orjson.dumps(headers).decode(), bearer_token(headers) or "")
            if len(hit[1]) <= HEADER_CACHE_MAX_JSON:
                if len(self._header_cache) >= HEADER_CACHE_SIZE:
                    self._header_cache.clear()
                self._header_cache[key] = hit
        return hit

    async def _handle(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        """One request, in PostgREST's order: the token, the schema, the route and media
        type, the statement (from the SQL cache), then one round trip and the answer. The
        hot path (a cached token, the default schema, a read) makes no call it can avoid."""
        method: str = scope["method"]
        headers, headers_json, token = self._headers(scope["headers"])
        path: str = scope["path"][len(PREFIX) :]
        if method == "OPTIONS":
            return 200, [(b"allow", b"OPTIONS,GET,HEAD,POST,PATCH,DELETE")], b""

        # a token seen before and not expired since: its role and claims JSON; anything
        # else (new, expired, forged) goes through the verifier, which says what is wrong
        auth = self._claims.get(token)
        if auth is None or auth[2] <= time.time():
            auth = self._verify(token)
        role: str = auth[0]
        claims_json: str = auth[1]

        read = method in ("GET", "HEAD")
        profile = headers.get("accept-profile" if read else "content-profile")
        schema = self.default_schema if profile is None else self._schema(profile)
        name = path[1:] if path.startswith("/") else path
        if name == "":
            return self._root_request(method, schema, headers.get("host"))
        media = _media(headers.get("accept"), self.plan_enabled)
        single: bool | str = media.mode == "single" or (q.CSV if media.mode == "csv" else False)
        pairs = _split_qs(scope.get("query_string", b""))
        prefer_header = headers.get("prefer")
        prefer = _Prefer(prefer_header) if prefer_header else NO_PREFER

        if name.startswith("rpc/"):
            plan = await self._rpc(method, schema, name[4:], pairs, headers, receive, single, prefer)
        elif "/" in name:
            raise TableNotFound(f"Could not find the table '{schema}.{name}' in the schema cache")
        elif read:  # no body to wait for: no coroutine either
            plan = self._read(schema, name, pairs, headers, single, prefer)
        else:
            plan = await self._table(method, schema, name, pairs, headers, receive, single, prefer)
        (sql, name), params, status, read_only, with_range = plan

        rollback = prefer.rollback() and not read_only
        args = (
            role,
            claims_json,
            method,
            path,
            headers_json,
            self._search_path[schema],
            read_only,
            sql,
            params,
            single is True,
        )
        if media.mode == "plan":
            return await self._explain(media, args[:9], rollback, role)
        row = await self._run(args, name, read_only, rollback, role)
        return _answer(row, status, single, prefer, rollback, read_only, with_range)

    def _verify(self, token: str) -> tuple[str, str, float]:
        """A token not in the cache (or expired): the verifier's verdict, kept until it expires."""
        try:
            claims = self.ctx.verifier.verify(token)
        except JWTError as exc:
            raise JWTRejected(exc.message, code=exc.code) from None
        auth = (claims["role"], orjson.dumps(claims).decode(), float(claims["exp"]))
        if len(self._claims) >= CLAIMS_CACHE_SIZE:
            self._claims.clear()
        self._claims[token] = auth
        return auth

    def _schema(self, profile: str) -> str:
        """The schema a request's Accept-Profile (reads) or Content-Profile (writes) names;
        it must be exposed."""
        schema = self.default_schema
        if profile != schema:
            if profile not in self.schemas:
                raise SchemaNotExposed(
                    "The schema must be one of the following: " + ", ".join(self.schemas), details=None
                )
            schema = profile
        return schema

    def _root_request(self, method: str, schema: str, host: str | None) -> tuple[int, list, bytes]:
        """``/rest/v1/``: the OpenAPI document (GET, HEAD); any other method is refused."""
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"Method {method} is not allowed on the root")
        return self._root(schema, host)

    async def _run(self, args: tuple, name: str, read_only: bool, rollback: bool, role: str) -> Any:
        """The request's one round trip on a pooled connection: ``_rackpilot_rest.run`` with
        ``args`` (the statement's text at [7], sent only until it is prepared as ``name`` on
        the connection). Returns its row."""
        # a read that met a dead connection (database restarted, connection terminated) is
        # retried once on a fresh one; a write is not, since it may have been applied
        attempts = 2 if read_only else 1
        healed = False
        conn = await self._checkout()
        try:
            while True:
                attempts -= 1
                prepared = self._prepared.get(conn)
                if prepared is None:
                    prepared = self._prepared[conn] = set()
                try:
                    if name not in prepared and len(prepared) >= PREPARED_PER_CONN:
                        # statements of shapes long gone (schema reloads, one-off queries) pile
                        # up; drop ours (not asyncpg's) and start over, one round trip, rarely.
                        # Inside the try: on a connection the database dropped this is the
                        # first round trip to fail, and it is retried like the request's own.
                        await conn.execute(DEALLOCATE_SQL)
                        prepared.clear()
                    prepare = name not in prepared
                    # once prepared on this connection the statement text is not needed
                    # again: sending NULL instead saves encoding and shipping it per request
                    run_args = (*args[:7], args[7] if prepare else None, *args[8:], name, prepare)
                    if rollback:
                        row = await self._run_rolled_back(conn, run_args)
                    else:
                        row = await conn.fetchrow(RUN_SQL, *run_args)
                    if prepare:
                        prepared.add(name)
                    return row
                except asyncpg.PostgresError as exc:
                    if _wrapper_refused(exc) and not healed:
                        # the wrapper refused on its own schema, never the caller's fault (a
                        # role left on the connection, or a lookup there after the role switch,
                        # which run() no longer makes): the refusal came before the request's
                        # statement ran, so a fresh connection may run it
                        log.error(
                            "REST connection refused its own wrapper (%s; in transaction: %s): replaced",
                            getattr(exc, "message", exc),
                            conn.is_in_transaction(),
                        )
                        healed = True
                        conn = await self._replace(conn)
                        continue
                    if not _connection_lost(exc):
                        raise self._db_error(exc, role) from None
                    conn = await self._replace(conn)
                    if attempts <= 0:
                        raise Unavailable("The database connection was lost") from None
                except (asyncpg.InterfaceError, OSError, ConnectionError):
                    conn = await self._replace(conn)
                    if attempts <= 0:
                        raise Unavailable("Could not connect to the database") from None
        finally:
            self._conns.put_nowait(conn)

    async def _explain(
        self, media: _Media, args: tuple, rollback: bool, role: str
    ) -> tuple[int, list, bytes]:
        """EXPLAIN the request's statement as the caller (Accept: application/vnd.pgrst.plan).
        As in PostgREST, options=analyze runs it and a write is kept unless the request's
        transaction is rolled back (db-tx-end, Prefer: tx=rollback)."""
        options = ", ".join([f"format {media.fmt}", *media.options])  # from PLAN_OPTIONS only
        conn = await self._checkout()
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                plan = await conn.fetchval(EXPLAIN_SQL, *args, options)
            except asyncpg.PostgresError as exc:
                await tx.rollback()
                raise self._db_error(exc, role) from None
            except BaseException:
                await tx.rollback()
                raise
            if rollback:
                await tx.rollback()
            else:
                await tx.commit()
        finally:
            self._conns.put_nowait(conn)
        ctype = f'application/vnd.pgrst.plan+{media.fmt}; for="application/json"; charset=utf-8'
        return 200, [(b"content-type", ctype.encode())], (plan or "").encode()

    @staticmethod
    async def _run_rolled_back(conn: asyncpg.Connection, run_args: tuple) -> Any:
        """Run the request in a transaction that is rolled back (db-tx-end / Prefer: tx):
        the answer is computed, nothing is kept. Prepared statements survive a rollback."""
        tx = conn.transaction()
        await tx.start()
        try:
            return await conn.fetchrow(RUN_SQL, *run_args)
        finally:
            await tx.rollback()

    def _root(self, schema: str, host: str | None) -> tuple[int, list, bytes]:
        """PostgREST's OpenAPI 2.0 document of the schema (built once per schema cache)."""
        key = (schema, host)
        body = self._openapi.get(key)
        if body is None:
            body = self._openapi[key] = orjson.dumps(openapi.document(self.cache, schema, host))
        return 200, [CT_OPENAPI], body

    async def _checkout(self) -> asyncpg.Connection:
        """A pooled connection, replaced first when the database already dropped it (its
        end was seen while idle): a write may then go ahead, where a write that meets a
        dead connection mid-way cannot be retried."""
        free = self._conns._free
        conn = free.pop() if free else await self._conns.get()
        if conn.is_closed():
            conn = await self._replace(conn)
        elif conn.is_in_transaction():
            # every path ends its transaction before giving the connection back; one left
            # open would carry the last caller's role and claims into this request
            log.error("REST connection came back inside a transaction: replaced")
            conn = await self._replace(conn)
        return conn

    async def _replace(self, conn: asyncpg.Connection) -> asyncpg.Connection:
        conn.terminate()
        try:
            new = await self._connect()
        except Exception:  # noqa: BLE001 - keep the dead one; the next use retries
            return conn
        self._all = [c for c in self._all if c is not conn] + [new]
        self._prepared.pop(conn, None)
        return new

    # --- tables -----------------------------------------------------------------------
    def _read(
        self,
        schema: str,
        name: str,
        pairs: list,
        headers: dict,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[tuple[str, str], list, int, bool, Any]:
        """A read (GET, HEAD) of a table or view."""
        rel = self.cache.relations.get((schema, name))
        if rel is None:
            raise TableNotFound(f"Could not find the table '{schema}.{name}' in the schema cache", hint=None)
        req = q.parse_query(pairs)
        offset, limit = _intersect(req.offset, req.limit, _range_header(headers.get("range")))
        limit = self.max_rows if limit is None else min(limit, self.max_rows)
        li = req.add(str(limit))
        oi = req.add(str(offset))
        req.bind_embeds(self.max_rows)
        key = (
            "r",
            schema,
            name,
            req.select,
            req.filters,
            req.order,
            single,
            prefer.count,
            li,
            oi,
            req.nested_key(),
            req.embed_max_idx,
        )
        sql = self._sql_cache.get(key)
        if sql is None:
            sql = self._remember(key, q.read_sql(rel, req, single, prefer.count, li, oi, self.cache))
        return sql, req.params, 200, True, (offset, prefer.count)

    async def _table(
        self,
        method: str,
        schema: str,
        name: str,
        pairs: list,
        headers: dict,
        receive: Any,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[tuple[str, str], list, int, bool, Any]:
        """A write (POST, PATCH, DELETE) on a table; reads are _read's. The table, the query
        string and the body are checked first, then the method (``_WRITES``)."""
        rel = self.cache.relations.get((schema, name))
        if rel is None:
            raise TableNotFound(f"Could not find the table '{schema}.{name}' in the schema cache", hint=None)
        req = q.parse_query(pairs)
        body = await _read_json(receive, headers, allow_empty=method == "DELETE")
        write = self._WRITES.get(method)
        if write is None:
            raise MethodNotAllowed(f"Method {method} is not supported on tables by this REST layer")
        sql = write(self, rel, req, body, schema, name, single, prefer)
        status = 201 if method == "POST" else 200
        return sql, req.params, status, False, (0, prefer.count) if prefer.count else None

    def _insert(
        self,
        rel: Relation,
        req: q.Request,
        body: Any,
        schema: str,
        name: str,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[str, str]:
        """POST: insert (or upsert, with a resolution preference) the body's rows."""
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(r, dict) for r in rows):
            raise InvalidBody("The body must be a JSON object or an array of objects")
        columns = _insert_columns(req, body, rows)
        bi = req.add(orjson.dumps(rows).decode())
        # on_conflict only names the conflict target of an upsert: without a resolution
        # preference the request is a plain insert, as in PostgREST
        on_conflict = req.on_conflict if prefer.resolution is not None else None
        req.on_conflict = on_conflict
        req.bind_embeds(self.max_rows)
        representation = bool(prefer.representation)
        key = (
            "i",
            schema,
            name,
            req.select,
            columns,
            on_conflict,
            prefer.resolution,
            representation,
            single,
            prefer.count,
            bi,
            prefer.missing_default,
        )
        sql = self._statement(
            key,
            req,
            lambda: q.insert_sql(
                rel,
                req,
                columns,
                bi,
                representation,
                single,
                prefer.count,
                prefer.resolution,
                prefer.missing_default,
                self.cache,
            ),
        )
        return sql

    def _update(
        self,
        rel: Relation,
        req: q.Request,
        body: Any,
        schema: str,
        name: str,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[str, str]:
        """PATCH: set the body's columns on the matching rows (limit, offset, order apply)."""
        if not isinstance(body, dict):
            raise InvalidBody("The body of an update must be a JSON object")
        columns = tuple(body)
        bi = req.add(orjson.dumps(body).decode())
        li, oi = self._write_limit(req)
        req.bind_embeds(self.max_rows)
        representation = bool(prefer.representation)
        key = (
            "u",
            schema,
            name,
            req.select,
            req.filters,
            req.order,
            columns,
            representation,
            single,
            prefer.count,
            bi,
            li,
            oi,
        )
        sql = self._statement(
            key,
            req,
            lambda: q.update_sql(
                rel, req, columns, bi, representation, single, prefer.count, li, oi, self.cache
            ),
        )
        return sql

    def _delete(
        self,
        rel: Relation,
        req: q.Request,
        body: Any,
        schema: str,
        name: str,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[str, str]:
        """DELETE: the matching rows (limit, offset, order apply); a body is not used."""
        li, oi = self._write_limit(req)
        req.bind_embeds(self.max_rows)
        representation = bool(prefer.representation)
        key = (
            "d",
            schema,
            name,
            req.select,
            req.filters,
            req.order,
            representation,
            single,
            prefer.count,
            li,
            oi,
        )
        sql = self._statement(
            key, req, lambda: q.delete_sql(rel, req, representation, single, prefer.count, li, oi, self.cache)
        )
        return sql

    _WRITES = {"POST": _insert, "PATCH": _update, "DELETE": _delete}

    @staticmethod
    def _write_limit(req: q.Request) -> tuple[int | None, int | None]:
        """Parameter positions of a PATCH/DELETE's limit and offset (None: every matching row)."""
        if req.limit is None and not req.offset:
            return None, None
        limit = req.limit if req.limit is not None else 2**62
        return req.add(str(limit)), req.add(str(req.offset))

    # --- functions --------------------------------------------------------------------
    async def _rpc(
        self,
        method: str,
        schema: str,
        name: str,
        pairs: list,
        headers: dict,
        receive: Any,
        single: bool | str,
        prefer: _Prefer,
    ) -> tuple[tuple[str, str], list, int, bool, Any]:
        overloads = self.cache.functions.get((schema, name))
        if not overloads:
            raise FunctionNotFound(f"Could not find the function {schema}.{name} in the schema cache")
        if method in ("GET", "HEAD"):
            known = self.cache.arg_names(schema, name)
            given = {k: v for k, v in pairs if k in known}
            req = q.parse_query(pairs, rpc_args=known)
            fn = _choose(overloads, frozenset(given), schema, name)
            arg_names = tuple(sorted(given))
            arg_idx = tuple(req.add(given[n]) for n in arg_names)
            from_json, read_only = False, True
        elif method == "POST":
            body = await _read_json(receive, headers, allow_empty=True)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise InvalidBody("The body of an rpc call must be a JSON object of named arguments")
            fn = _choose(overloads, frozenset(body), schema, name)
            req = q.parse_query(pairs)
            arg_names = tuple(sorted(body))
            arg_idx = (req.add(orjson.dumps(body).decode()),) if body else ()
            from_json, read_only = True, False
        else:
            raise MethodNotAllowed(f"Method {method} is not allowed on functions", code="PGRST101")
        if single == q.CSV and fn.kind not in ("row", "setof_row"):
            raise NotAcceptable(
                "None of these media types are available: text/csv",
                hint="text/csv answers functions that return rows",
            )
        limit = self.max_rows if req.limit is None else min(req.limit, self.max_rows)
        li = req.add(str(limit))
        oi = req.add(str(req.offset))
        req.bind_embeds(self.max_rows)
        key = (
            "f",
            schema,
            name,
            id(fn),
            arg_names,
            from_json,
            req.select,
            req.filters,
            req.order,
            single,
            prefer.count,
            arg_idx,
            li,
            oi,
        )
        sql = self._statement(
            key,
            req,
            lambda: q.rpc_sql(
                fn, req, arg_names, from_json, arg_idx, single, prefer.count, li, oi, self.cache
            ),
        )
        with_range = (req.offset, prefer.count) if fn.kind in ("setof_row", "setof_scalar") else None
        return sql, req.params, 200, read_only, with_range

    def _statement(self, key: tuple, req: q.Request, build: Callable[[], str]) -> tuple[str, str]:
        """The statement of ``key`` and the request's embedding shape from the SQL cache,
        ``build()`` once on a miss. (The read path, the hot one, does the same inline.)"""
        key = (*key, req.nested_key(), req.embed_max_idx)
        hit = self._sql_cache.get(key)
        return hit if hit is not None else self._remember(key, build())

    def _remember(self, key: tuple, sql: str) -> tuple[str, str]:
        if len(self._sql_cache) >= SQL_CACHE_SIZE:
            self._sql_cache.popitem(last=False)
        entry = (sql, "_rp_" + hashlib.sha1(sql.encode()).hexdigest()[:24])
        self._sql_cache[key] = entry
        return entry

    @staticmethod
    def _db_error(exc: asyncpg.PostgresError, role: str) -> RestError:
        sqlstate = getattr(exc, "sqlstate", None) or "XX000"
        message = getattr(exc, "message", None) or str(exc)
        details = getattr(exc, "detail", None)
        hint = getattr(exc, "hint", None)
        if sqlstate == "PT406" and hint == "rackpilot.single":
            return SingularityError("Cannot coerce the result to a single JSON object", details=details)
        return DatabaseError(
            message, details=details, hint=hint, status=status_for_sqlstate(sqlstate, role), code=sqlstate
        )


def _dead_connection(exc: BaseException) -> bool:
    """The connection itself is gone (not the statement's fault)."""
    if isinstance(exc, asyncpg.PostgresError):
        return _connection_lost(exc)
    return isinstance(exc, asyncpg.InterfaceError | OSError | ConnectionError)


def _wrapper_refused(exc: asyncpg.PostgresError) -> bool:
    """42501 on the REST layer's own schema (only the authenticator may use
    ``_rackpilot_rest``), never the caller's fault: a role left on the connection, or a name
    looked up there after run() switched to the caller's role (its result was once a row type
    named there, looked up again after a cache reset; see platform.sql)."""
    return getattr(exc, "sqlstate", "") == "42501" and "_rackpilot_rest" in (
        getattr(exc, "message", None) or str(exc)
    )


def _connection_lost(exc: asyncpg.PostgresError) -> bool:
    # 57P01-57P03: terminated by the administrator, crash shutdown, cannot connect now;
    # 08xxx: connection exceptions
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith("57P0") or state.startswith("08")


def _content_range(spec: tuple[int, bool], page_total: int | None, total: int | None) -> str:
    offset, _count = spec
    n = page_total or 0
    tail = str(total) if total is not None else "*"
    if n == 0:
        return f"*/{tail}"
    return f"{offset}-{offset + n - 1}/{tail}"


def _answer(
    row: Any,
    status: int,
    single: bool | str,
    prefer: _Prefer,
    rollback: bool,
    read_only: bool,
    with_range: Any,
) -> tuple[int, list, bytes]:
    """Status, headers and body from ``_rackpilot_rest.run``'s row: the media type,
    Preference-Applied, Content-Range, a status the statement set, 204 for no body."""
    body_text, page_total, total, fn_status = row
    out_headers = [CT_CSV if single == q.CSV else CT_SINGLE if single else CT_JSON]
    applied = prefer.applied(rollback) if not read_only else []
    if applied:
        out_headers.append((b"preference-applied", ", ".join(applied).encode()))
    if with_range is not None:
        out_headers.append((b"content-range", _content_range(with_range, page_total, total).encode()))
    if fn_status and fn_status.isdigit() and 100 <= int(fn_status) <= 599:
        status = int(fn_status)  # set_config('response.status', ...) as in PostgREST
    if body_text is None:
        if status == 200:
            status = 204
        return status, out_headers if status != 204 else [], b""
    return status, out_headers, body_text.encode()


def _insert_columns(req: q.Request, body: Any, rows: list) -> tuple:
    """The columns an insert writes: ``columns=``, else the keys of the object, else those
    of the first row, which every other row must have too (PGRST102, as PostgREST)."""
    if req.columns is not None:
        return req.columns
    if isinstance(body, dict) or not rows:
        return tuple(body) if isinstance(body, dict) else ()
    columns = tuple(rows[0])
    keys = set(columns)
    if any(len(r) != len(keys) or set(r) != keys for r in rows[1:]):
        # as PostgREST: without columns= every object must have the same keys
        raise InvalidBody("All object keys must match", details=None)
    return columns


def _choose(overloads: list[Function], given: frozenset[str], schema: str, name: str) -> Function:
    fits = [f for f in overloads if f.supported and f.required <= given <= f.arg_names]
    if len(fits) > 1:
        exact = [f for f in fits if f.arg_names == given]
        if len(exact) == 1:
            return exact[0]
        raise AmbiguousFunction(f"Could not choose the best candidate function for {schema}.{name}")
    if not fits:
        args = ", ".join(sorted(given))
        raise FunctionNotFound(
            f"Could not find the function {schema}.{name}({args}) in the schema cache",
            hint="Check the function's name and the names of its arguments",
        )
    return fits[0]


async def _read_json(receive: Any, headers: dict[str, str], allow_empty: bool) -> Any:
    ctype = headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if ctype not in ("application/json", "", "application/vnd.pgrst.object+json"):
        raise UnsupportedMediaType(f"Content-Type {ctype[:100]!r} is not supported; send application/json")
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The request body exceeds the limit of {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"The request body exceeds the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return None
        raise InvalidBody("Empty or invalid json", details="The request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody("Empty or invalid json", details=str(exc)[:200]) from None


# re-exported for tests that need to map Relation/Function lookups
__all__ = ["RestService", "Relation", "Function"]
