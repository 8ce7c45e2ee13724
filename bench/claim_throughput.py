"""Claim throughput: 8 concurrent claimers, straight through SQL and through the REST rpc path.

Starts its own ephemeral local stack (free ports, temporary folder), fills a site of its
own with `selftest` jobs, and lets CLIENTS claimers drain it with `claim_jobs`:

- sql:  asyncpg, one connection per claimer, `select ... from claim_jobs($1, $2)`
- rest: httpx, `POST /rest/v1/rpc/claim_jobs` with the service key (what the executor sends)

Each phase runs twice: batched (--batch jobs per call) and unbatched (1 per call).
A claim is one job handed out; latency is per call. Double claims are counted from what
the claimers received and from the database (every job must have epoch 1, attempt 1).
Prints ONE JSON line.

    .venv/bin/python bench/claim_throughput.py [--jobs N] [--batch B] [--clients C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.stack.stack import Stack, ephemeral_config  # noqa: E402

KEY = "-----BEGIN PUBLIC KEY-----" + "B" * 64


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def setup(dsn: str, clients: int, label: str) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        site = await conn.fetchval(
            "insert into public.sites (name) values ($1) returning id::text", f"bench-{label}"
        )
        executors = [
            await conn.fetchval(
                "select id::text from public.register_executor($1, $2, $3, 'bench', '1', '{}'::jsonb, null)",
                site,
                f"{label}-{i}",
                KEY,
            )
            for i in range(clients)
        ]
        return site, executors
    finally:
        await conn.close()


async def fill(dsn: str, site: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "insert into public.jobs (type, site_id, priority) "
            "select 'selftest', $1::uuid, (g % 5)::smallint from generate_series(1, $2) g",
            site,
            jobs,
        )
        await conn.execute("analyze public.jobs")
    finally:
        await conn.close()


async def check_db(dsn: str, site: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "select count(*) filter (where status = 'running') as running, "
            "count(*) filter (where status = 'pending') as pending, "
            "count(*) filter (where lease_epoch <> 1 or attempts <> 1) as reclaimed "
            "from public.jobs where site_id = $1::uuid",
            site,
        )
        return dict(row)
    finally:
        await conn.close()


def summarise(
    path: str, batch: int, seen: list[str], latencies: list[float], elapsed: float, db: dict
) -> dict:
    doubles = len(seen) - len(set(seen)) + db["reclaimed"]
    return {
        "path": path,
        "batch": batch,
        "claims": len(seen),
        "calls": len(latencies),
        "claims_per_s": round(len(seen) / elapsed, 1),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
        "double_claims": doubles,
        "left_pending": db["pending"],
    }


async def run_sql(dsn: str, clients: int, jobs: int, batch: int) -> dict:
    site, executors = await setup(dsn, clients, f"sql-b{batch}")
    await fill(dsn, site, jobs)
    conns = [await asyncpg.connect(dsn) for _ in range(clients)]
    stmt = "select job_id from public.claim_jobs($1::uuid, $2)"
    seen: list[str] = []
    latencies: list[float] = []

    async def claimer(i: int) -> None:
        conn = conns[i]
        while True:
            t0 = time.perf_counter()
            rows = await conn.fetch(stmt, executors[i], batch)
            latencies.append(time.perf_counter() - t0)
            if not rows:
                if not await conn.fetchval(
                    "select exists (select 1 from public.jobs where site_id = $1::uuid "
                    "and status = 'pending')",
                    site,
                ):
                    return
                continue
            seen.extend(str(r[0]) for r in rows)

    t0 = time.perf_counter()
    await asyncio.gather(*(claimer(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return summarise("sql", batch, seen, latencies, elapsed, await check_db(dsn, site))


async def run_rest(dsn: str, api_url: str, service_key: str, clients: int, jobs: int, batch: int) -> dict:
    site, executors = await setup(dsn, clients, f"rest-b{batch}")
    await fill(dsn, site, jobs)
    headers = {
        "apikey": service_key,
        "Authorization": f"Bearer {service_key}",
        "Content-Type": "application/json",
        "Accept-Profile": "public",
        "Content-Profile": "public",
    }
    seen: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"{api_url}/rest/v1", headers=headers, limits=limits, timeout=30
    ) as http:

        async def claimer(i: int) -> None:
            body = json.dumps({"p_executor_id": executors[i], "p_max": batch})
            empty = 0
            while True:
                t0 = time.perf_counter()
                resp = await http.post("/rpc/claim_jobs", content=body)
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
                    return
                rows = resp.json()
                if not rows:
                    empty += 1
                    if empty > 3:
                        return
                    continue
                empty = 0
                seen.extend(r["job_id"] for r in rows)

        t0 = time.perf_counter()
        await asyncio.gather(*(claimer(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    out = summarise("rest", batch, seen, latencies, elapsed, await check_db(dsn, site))
    if errors:
        out["errors"] = errors[:3]
    return out


async def main_async(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-bench-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp))
    try:
        st.up()
        env = st.env()
        dsn = env["SUPABASE_DB_URL"]
        # the machine is shared: record how busy it was, so figures from runs can be compared
        result: dict = {
            "bench": "claim_throughput",
            "clients": args.clients,
            "cpus": os.cpu_count(),
            "loadavg_start": round(os.getloadavg()[0], 2),
        }
        phases = []
        # unbatched phases drain a quarter as many jobs: same figures, a quarter of the wait
        for batch, jobs in ((args.batch, args.jobs), (1, args.jobs // 4)):
            phases.append(await run_sql(dsn, args.clients, jobs, batch))
        for batch, jobs in ((args.batch, args.jobs // 2), (1, args.jobs // 4)):
            try:
                phases.append(
                    await run_rest(
                        dsn, env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"], args.clients, jobs, batch
                    )
                )
            except httpx.HTTPError as exc:
                phases.append({"path": "rest", "batch": batch, "error": f"{type(exc).__name__}: {exc}"})
        result["phases"] = phases
        sql = phases[0]
        rest = next((p for p in phases if p["path"] == "rest" and p["batch"] == args.batch), {})
        result.update(
            {
                "sql_claims_per_s": sql.get("claims_per_s"),
                "sql_p99_ms": sql.get("p99_ms"),
                "rest_claims_per_s": rest.get("claims_per_s"),
                "rest_p99_ms": rest.get("p99_ms"),
                "double_claims": sum(p.get("double_claims", 0) for p in phases),
                "targets": {"sql_claims_per_s": 5000, "rest_claims_per_s": 2000},
                "loadavg_end": round(os.getloadavg()[0], 2),
            }
        )
        return result
    finally:
        st.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--jobs",
        type=int,
        default=20000,
        help="jobs for the batched SQL phase (batched REST: half; unbatched: a quarter)",
    )
    ap.add_argument("--batch", type=int, default=10, help="jobs per claim_jobs call in the batched phases")
    ap.add_argument("--clients", type=int, default=8, help="concurrent claimers")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["double_claims"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
