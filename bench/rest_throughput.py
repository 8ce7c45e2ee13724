"""REST throughput: the gateway's /rest/v1 against the same statement run on the driver.

Starts its own ephemeral stack, creates a table with an RLS policy (owner = auth.uid())
and a small SECURITY INVOKER rpc, mints a JWT for one authenticated user, then measures
for 10 s with 16 concurrent connections each:

- ``get``: single-row GET by primary key through the gateway (``wrk``, Lua script for
  the headers);
- ``rpc``: POST /rest/v1/rpc/bench_item_name through the gateway (``wrk``);
- ``direct_get`` / ``direct_rpc``: the very statement the gateway sends
  (``_rackpilot_rest.run(...)`` with the same generated SQL) through asyncpg from 16
  concurrent tasks, one connection each;
- ``minimal_front_get``: the ceiling of any Python HTTP front on this machine - a bare
  uvloop + httptools server (this file run with ``--serve-minimal-front``: no routing, no
  ASGI, no JWT, no query parsing) that answers every request with the ``get`` statement
  run on 16 asyncpg connections, measured with ``wrk`` as the gateway is. The gateway does
  all of that work and more, so ``ratio_minimal_front_get`` (its req/s over ``direct_get``)
  bounds what ``ratio_get`` can reach on this machine with this architecture;
- ``service_front_get``: the same bare front around the gateway's REST service (this file
  with ``--serve-minimal-front`` and ``service``): every request goes through
  ``RestService.respond`` (token, query parsing, SQL cache, pool, answer headers) but not
  through uvicorn. Between the three fronts, the gateway's CPU per request splits into the
  floor (minimal front), the REST service's work (service front less minimal front) and the
  HTTP server's (gateway less service front).

Prints ONE JSON line: req/s, p50 and p99 (ms) for each, and gateway/direct ratios.
Target on a 2-core machine: get >= 5,000 req/s with p99 <= 10 ms, and ratio_get >= 0.7.

``cpu_us_per_request`` says where each GET workload's CPU goes, in microseconds of CPU time
(user + system, from /proc) per request: the HTTP server (gateway or minimal front) or the
direct client, the Postgres server (postmaster and backends), and ``wrk``. Kernel work
charged to no process (loopback softirq) is not in them. On 2 cores every workload is
CPU-bound, so the ratios follow these sums.

    .venv/bin/python bench/rest_throughput.py [--duration 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httptools
import httpx
import jwt
import orjson

from devstack import proc
from devstack.stack.rest import query as q
from devstack.stack.rest.schema import load_schema_cache
from devstack.stack.rest.service import RUN_SQL
from devstack.stack.stack import Stack, ephemeral_config, free_port

USERS = 50
ROWS_PER_USER = 200

SETUP_SQL = """
create table if not exists public.bench_items (
  id uuid primary key default extensions.gen_random_uuid(),
  owner uuid not null,
  name text not null,
  qty int not null default 0
);
alter table public.bench_items enable row level security;
drop policy if exists bench_items_own on public.bench_items;
create policy bench_items_own on public.bench_items for select to authenticated
  using (owner = (select auth.uid()));
create or replace function public.bench_item_name(p_id uuid) returns text
language sql stable security invoker as $$ select name from public.bench_items where id = p_id $$;
-- new functions are executable by their owner only until granted (the platform's default)
grant execute on function public.bench_item_name(uuid) to authenticated;
"""

LUA = """
wrk.method = "{method}"
wrk.headers["apikey"] = "{anon}"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Accept-Profile"] = "public"
wrk.headers["Content-Profile"] = "public"
{extra}
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(st: Stack) -> list[int]:
    """The stack's postmaster and its children (the backends among them)."""
    postmaster = int((st.pg.datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds used between ``start()`` and ``stop()`` by named processes (``server``: a
    pid), the Postgres server, this process (``client``) and the children it waited for
    (``wrk``); ``per_request(n)`` in microseconds per request. Backends that start after
    ``start()`` count from zero; stop before they exit."""

    def __init__(self, st: Stack, server: int | None = None):
        self.st, self.server = st, server

    def _sample(self) -> dict[str, float]:
        t = os.times()
        out = {
            "postgres": sum(cpu_s(p) for p in postgres_pids(self.st)),
            "client": t.user + t.system,
            "wrk": t.children_user + t.children_system,
        }
        if self.server is not None:
            out["server"] = cpu_s(self.server)
        return out

    def start(self) -> None:
        self.before, self.pg_before = self._sample(), {p: cpu_s(p) for p in postgres_pids(self.st)}

    def stop(self) -> None:
        after = self._sample()
        # backends that exited meanwhile took their CPU along; new ones started from zero
        after["postgres"] = sum(cpu_s(p) - self.pg_before.get(p, 0.0) for p in postgres_pids(self.st))
        self.used = {k: v - (0.0 if k == "postgres" else self.before[k]) for k, v in after.items()}

    def per_request(self, requests: float, keys: tuple[str, ...]) -> dict[str, float]:
        return {k: round(self.used[k] / requests * 1e6, 1) for k in keys}


def run_wrk(url: str, lua: str, duration: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
        script = fh.name
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": round(rps),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


async def run_direct(
    dsn: str, args: tuple, duration: int, connections: int, meter: CpuMeter | None = None
) -> dict:
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    latencies: list[float] = []
    stop = time.perf_counter() + duration
    # once prepared, the gateway sends NULL for the statement text (see RestService._handle)
    hot = args[:7] + (None,) + args[8:]

    async def worker(conn: asyncpg.Connection) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await conn.fetchrow(RUN_SQL, *hot)
            latencies.append(time.perf_counter() - t0)

    try:
        for conn in conns:  # prepare the statement on every connection, as the gateway does
            await conn.fetchrow(RUN_SQL, *args[:-1], True)
        if meter is not None:
            meter.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - t0
        if meter is not None:
            meter.stop()  # (before the connections close: their backends' CPU still counts)
    finally:
        for conn in conns:
            await conn.close()
    latencies.sort()
    n = len(latencies)
    return {
        "rps": round(n / elapsed),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
    }


async def prepare(st: Stack) -> tuple[str, str]:
    conn = await asyncpg.connect(st.pg.dsn())
    try:
        await conn.execute(SETUP_SQL)
        users = [uuid.uuid4() for _ in range(USERS)]
        await conn.copy_records_to_table(
            "bench_items",
            schema_name="public",
            columns=["owner", "name", "qty"],
            records=[(u, f"item-{i}-{j}", j) for i, u in enumerate(users) for j in range(ROWS_PER_USER)],
        )
        await conn.execute("analyze public.bench_items")
        user = users[USERS // 2]
        item = await conn.fetchval(
            "select id from public.bench_items where owner = $1 order by id limit 1", user
        )
    finally:
        await conn.close()
    return str(user), str(item)


def mint_user_token(secret: str, user: str) -> tuple[str, dict]:
    now = int(time.time())
    claims = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "supabase",
        "sub": user,
        "email": "bench@example.com",
        "phone": "",
        "app_metadata": {"provider": "email"},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    return jwt.encode(claims, secret, algorithm="HS256"), claims


async def direct_args(st: Stack, claims: dict, item: str, token: str) -> tuple[tuple, tuple]:
    """The exact (role, claims, ..., sql, params) the gateway sends for both workloads."""
    conn = await asyncpg.connect(st.pg.dsn())
    try:
        cache = await load_schema_cache(conn, ["public"])
    finally:
        await conn.close()
    headers = orjson.dumps(
        {
            "host": "127.0.0.1",
            "apikey": st.secrets.anon_key,
            "authorization": f"Bearer {token}",
            "accept-profile": "public",
        }
    ).decode()
    claims_json = orjson.dumps(claims).decode()
    search_path = '"public", "extensions"'
    max_rows = st.cfg.max_rows

    req = q.parse_query([("select", "*"), ("id", f"eq.{item}")])
    li, oi = req.add(str(max_rows)), req.add("0")
    get_sql = q.read_sql(cache.relations[("public", "bench_items")], req, False, False, li, oi)
    get = (
        "authenticated",
        claims_json,
        "GET",
        "/bench_items",
        headers,
        search_path,
        True,
        get_sql,
        req.params,
        False,
        _stmt_name(get_sql),
        False,
    )

    fn = cache.functions[("public", "bench_item_name")][0]
    req = q.parse_query([])
    ai = req.add(orjson.dumps({"p_id": item}).decode())
    li, oi = req.add(str(max_rows)), req.add("0")
    rpc_sql = q.rpc_sql(fn, req, ("p_id",), True, (ai,), False, False, li, oi)
    rpc = (
        "authenticated",
        claims_json,
        "POST",
        "/rpc/bench_item_name",
        headers,
        search_path,
        False,
        rpc_sql,
        req.params,
        False,
        _stmt_name(rpc_sql),
        False,
    )
    return get, rpc


def _stmt_name(sql: str) -> str:
    return "_rp_" + hashlib.sha1(sql.encode()).hexdigest()[:24]


class _BareFront(asyncio.Protocol):
    """What the benchmark's bare fronts share: httptools on a uvloop transport, where a
    request that does not parse closes the connection. Each front answers from its
    parser callbacks."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()


async def _serve_until_stdin_closes(port: int, front: type[_BareFront], inflight: set[asyncio.Task]) -> None:
    """Listen with ``front``, print ``ready``, and serve until stdin closes (the benchmark
    is done, or gone); then let the answers in flight finish."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(front, "127.0.0.1", port, backlog=2048)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()
    await asyncio.gather(*inflight, return_exceptions=True)


def serve_minimal_front() -> int:
    """The ``minimal_front`` server: reads {dsn, port, args, connections, service} as JSON
    from stdin, prints ``ready`` once it listens, and serves until stdin closes (its owner
    ended). With ``service`` true it is the ``service_front``: each request goes to the REST
    service's ``respond`` (built from the stack's RACKPILOT_* environment) instead of the
    fixed statement."""
    import uvloop

    spec = json.loads(sys.stdin.readline())
    if spec.get("service"):
        return _serve_service_front(spec)
    args = tuple(spec["args"])
    hot = args[:7] + (None,) + args[8:]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        conns = [await asyncpg.connect(spec["dsn"]) for _ in range(spec["connections"])]
        for conn in conns:
            await conn.fetchrow(RUN_SQL, *args[:-1], True)  # prepare, as the gateway does
            pool.put_nowait(conn)
        inflight: set[asyncio.Task] = set()

        class Front(_BareFront):
            def on_message_complete(self) -> None:
                task = loop.create_task(self.answer())
                inflight.add(task)
                task.add_done_callback(inflight.discard)

            async def answer(self) -> None:
                conn = await pool.get()
                try:
                    row = await conn.fetchrow(RUN_SQL, *hot)
                finally:
                    pool.put_nowait(conn)
                body = row["body"].encode()
                if not self.transport.is_closing():
                    self.transport.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body)
                    )

        await _serve_until_stdin_closes(spec["port"], Front, inflight)
        for conn in conns:
            await conn.close()

    uvloop.run(serve())
    return 0


def _serve_service_front(spec: dict) -> int:
    """The ``service_front`` server: the minimal front's HTTP handling (uvloop, httptools,
    keep-alive only) around the gateway's REST service, which does all of a request's REST
    work (token, query parsing, SQL cache, its pool, the answer's headers)."""
    import uvloop

    from devstack.stack.gateway import build_context
    from devstack.stack.rest.service import RestService

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        svc = RestService(build_context())
        await svc.startup()
        respond = svc.respond
        inflight: set[asyncio.Task] = set()

        class Front(_BareFront):
            def on_message_begin(self) -> None:
                self.url, self.headers = b"", []

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name.lower(), value))

            def on_message_complete(self) -> None:
                path, _, query = self.url.partition(b"?")
                scope = {
                    "type": "http",
                    "method": self.parser.get_method().decode("ascii"),
                    "path": path.decode("ascii"),
                    "query_string": query,
                    "headers": self.headers,
                }
                task = loop.create_task(self.answer(scope))
                inflight.add(task)
                task.add_done_callback(inflight.discard)

            async def answer(self, scope: dict) -> None:
                status, headers, body = await respond(scope, None)
                if not self.transport.is_closing():
                    lines = b"".join([n + b": " + v + b"\r\n" for n, v in headers])
                    self.transport.write(b"HTTP/1.1 %d -\r\n%s\r\n%s" % (status, lines, body))

        await _serve_until_stdin_closes(spec["port"], Front, inflight)
        await svc.shutdown()

    uvloop.run(serve())
    return 0


def run_minimal_front(
    st: Stack,
    dsn: str,
    args: tuple,
    url_path: str,
    lua: str,
    duration: int,
    connections: int,
    service: bool = False,
) -> tuple[dict, CpuMeter]:
    """Start the minimal front, or with ``service`` the service front (owned: it dies with
    this process), check that it answers what the gateway answers, and measure it with wrk."""
    port = free_port()
    front = proc.spawn(
        [sys.executable, __file__, "--serve-minimal-front"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **st.cfg.to_env()},
    )
    try:
        spec = {"dsn": dsn, "port": port, "args": args, "connections": connections, "service": service}
        front.stdin.write(json.dumps(spec) + "\n")
        front.stdin.flush()
        if front.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the minimal front did not start (exit {front.poll()})")
        url = f"http://127.0.0.1:{port}{url_path}"
        headers = dict(
            re.findall(r'wrk\.headers\["([^"]+)"\] = "([^"]*)"', lua)
        )  # the service checks the token
        if len(httpx.get(url, headers=headers, timeout=5).json()) != 1:
            raise RuntimeError("the minimal front did not answer the row")
        run_wrk(url, lua, 2, connections)  # warm-up
        meter = CpuMeter(st, front.pid)
        meter.start()
        res = run_wrk(url, lua, duration, connections)
        meter.stop()
        return res, meter
    finally:
        front.stdin.close()  # its stop signal; then make sure
        try:
            front.wait(10)
        except subprocess.TimeoutExpired:
            front.kill()
            front.wait()


def main() -> int:
    if sys.argv[1:] == ["--serve-minimal-front"]:
        return serve_minimal_front()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per workload")
    ap.add_argument("--connections", type=int, default=16, help="concurrent connections")
    opts = ap.parse_args()
    if not shutil.which("wrk"):
        print(json.dumps({"error": "wrk is not installed (apt-get install wrk)"}))
        return 2

    # the machine is shared: record how busy it was before we started, the figures depend on it
    load_before = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-bench-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp))
    try:
        st.up()
        user, item = asyncio.run(prepare(st))
        token, claims = mint_user_token(st.secrets.jwt_secret, user)
        base = st.cfg.api_url + "/rest/v1"
        get_url = f"{base}/bench_items?select=*&id=eq.{item}"
        hdrs = {"apikey": st.secrets.anon_key, "Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 15  # the schema cache reloads on NOTIFY; wait for it
        while True:
            r = httpx.get(get_url, headers=hdrs, timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if r.status_code != 200 or len(r.json()) != 1:
            print(json.dumps({"error": f"setup check failed: {r.status_code} {r.text[:200]}"}))
            return 1

        get_lua = LUA.format(method="GET", anon=st.secrets.anon_key, token=token, extra="")
        rpc_lua = LUA.format(
            method="POST",
            anon=st.secrets.anon_key,
            token=token,
            extra=(f'wrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{{"p_id":"{item}"}}\''),
        )
        run_wrk(get_url, get_lua, 2, opts.connections)  # warm-up
        gw_meter = CpuMeter(st, st.gateway_pid())
        gw_meter.start()
        gw_get = run_wrk(get_url, get_lua, opts.duration, opts.connections)
        gw_meter.stop()
        gw_rpc = run_wrk(f"{base}/rpc/bench_item_name", rpc_lua, opts.duration, opts.connections)

        get_args, rpc_args = asyncio.run(direct_args(st, claims, item, token))
        dsn = st.pg.dsn("authenticator")
        front, front_meter = run_minimal_front(
            st, dsn, get_args, get_url.removeprefix(st.cfg.api_url), get_lua, opts.duration, opts.connections
        )
        service_front, service_meter = run_minimal_front(
            st,
            dsn,
            get_args,
            get_url.removeprefix(st.cfg.api_url),
            get_lua,
            opts.duration,
            opts.connections,
            service=True,
        )
        direct_meter = CpuMeter(st)
        d_get = asyncio.run(run_direct(dsn, get_args, opts.duration, opts.connections, direct_meter))
        d_rpc = asyncio.run(run_direct(dsn, rpc_args, opts.duration, opts.connections))
        print(
            json.dumps(
                {
                    "benchmark": "rest_throughput",
                    "connections": opts.connections,
                    "duration_s": opts.duration,
                    "cpus": os.cpu_count(),
                    "loadavg_1m_before": load_before,
                    "gateway_get": gw_get,
                    "gateway_rpc": gw_rpc,
                    "direct_get": d_get,
                    "direct_rpc": d_rpc,
                    "minimal_front_get": front,
                    "ratio_get": round(gw_get["rps"] / d_get["rps"], 3),
                    "ratio_rpc": round(gw_rpc["rps"] / d_rpc["rps"], 3),
                    "service_front_get": service_front,
                    "ratio_minimal_front_get": round(front["rps"] / d_get["rps"], 3),
                    "ratio_service_front_get": round(service_front["rps"] / d_get["rps"], 3),
                    "cpu_us_per_request": {
                        "gateway_get": gw_meter.per_request(
                            gw_get["rps"] * opts.duration, ("server", "postgres", "wrk")
                        ),
                        "minimal_front_get": front_meter.per_request(
                            front["rps"] * opts.duration, ("server", "postgres", "wrk")
                        ),
                        "service_front_get": service_meter.per_request(
                            service_front["rps"] * opts.duration, ("server", "postgres", "wrk")
                        ),
                        "direct_get": direct_meter.per_request(
                            d_get["rps"] * opts.duration, ("client", "postgres")
                        ),
                    },
                    "target_get_met": gw_get["rps"] >= 5000
                    and gw_get["p99_ms"] <= 10
                    and gw_get["non_2xx"] == 0,
                }
            )
        )
        return 0
    finally:
        st.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
