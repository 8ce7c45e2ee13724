"""Runs every benchmark in bench/ and writes bench/RESULTS.md.

Each benchmark (``bench/<name>.py``) starts what it needs and prints ONE JSON line of
figures on stdout. This runs them one after another with the same interpreter, collects
the last JSON line each printed, and writes one Markdown table of all their figures
(benchmark, metric, value, unit, baseline, ratio, target) with the date, the machine
(cores, memory, CPU model) and the load average before and after each benchmark: the
machine may be shared, and other work on it moves the figures.

A benchmark fails when it exits non-zero, prints no JSON line, reports ``"error"`` in its
JSON or runs past ``--timeout``. Every failure is marked in RESULTS.md (which is rewritten
after each benchmark, so it always holds what has been measured so far), named on stderr,
and makes this exit 1.

    bench/run_all [--only name,...] [--quick] [--timeout S] [--out PATH] [--source TEXT]

RESULTS.md names the code measured: the git commit of this tree and the files with
uncommitted changes, or ``--source`` (e.g. for a tree exported with ``git archive``).

``--quick`` passes each benchmark the shorter-run options listed in QUICK_ARGS (only
flags its source still declares); figures from quick runs are not comparable with full ones.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "RESULTS.md"
STDERR_TAIL = 30  # lines of a failed benchmark's stderr kept for RESULTS.md
INTERRUPT_GRACE_S = 60.0  # after SIGINT, time a benchmark gets to tear its stack down

# Shorter runs, from each benchmark's own options (see its docstring). realtime_latency
# takes no options and always runs in full.
QUICK_ARGS: dict[str, list[str]] = {
    "claim_throughput": ["--jobs", "2000"],
    "dispatch_latency": ["--jobs", "20"],
    "discovery": ["--count", "200", "--sample", "10"],
    "fleet_inventory": ["--count", "200", "--sequential", "20"],
    "rest_throughput": ["--duration", "3"],
    "replication": ["--bytes", str(128 << 20), "--rounds", "2"],
    "rolling_update": ["--hosts", "4", "--naive-hosts", "2"],
    "vcenter_sync": ["--clusters", "2", "--hosts", "4", "--vms-per-host", "10"],
}


@dataclasses.dataclass(frozen=True)
class Rel:
    """How one figure relates to others in the same JSON line (flattened keys).

    ``target`` is text; ``{key}`` in it is replaced by that figure's value."""

    metric: str
    baseline: str | None = None
    ratio: str | None = None
    target: str | None = None


# What each benchmark compares its figures with, where its key names alone do not say it
# (targets as stated in the benchmark's docstring or JSON). Figures of a benchmark not
# listed here are still reported; the generic rules in relate() apply to every benchmark.
RELATIONS: dict[str, list[Rel]] = {
    "rest_throughput": [
        Rel("gateway_get.rps", baseline="direct_get.rps", ratio="ratio_get", target=">= 5000"),
        Rel("gateway_get.rps", target="ratio_get >= 0.7"),
        Rel("gateway_get.p50_ms", baseline="direct_get.p50_ms"),
        Rel("gateway_get.p99_ms", baseline="direct_get.p99_ms", target="<= 10"),
        Rel("gateway_rpc.rps", baseline="direct_rpc.rps", ratio="ratio_rpc"),
        Rel("gateway_rpc.p50_ms", baseline="direct_rpc.p50_ms"),
        Rel("gateway_rpc.p99_ms", baseline="direct_rpc.p99_ms"),
        # the ceiling of a bare Python HTTP front doing the same statement: bounds ratio_get
        Rel("minimal_front_get.rps", baseline="direct_get.rps", ratio="ratio_minimal_front_get"),
        # the same bare front around the REST service: what the HTTP server (uvicorn) costs
        Rel("service_front_get.rps", baseline="direct_get.rps", ratio="ratio_service_front_get"),
    ],
    "dispatch_latency": [
        Rel("realtime_p50_ms", baseline="polling_p50_ms", ratio="ratio_p50"),
        Rel("realtime_p99_ms", baseline="polling_p99_ms", ratio="ratio_p99"),
    ],
    "fleet_inventory": [
        Rel("wall_s", baseline="sequential_extrapolated_s", ratio="speedup", target="<= {target_wall_s}"),
        Rel("peak_sessions_per_bmc", target="<= 2"),
        Rel("leaked_sessions", target="= 0"),
    ],
    "discovery": [
        Rel("wall_s", baseline="baseline_sequential_fleet_s", ratio="speedup", target="<= {target_wall_s}"),
        Rel("peak_sessions_per_bmc", target="<= 1"),
        Rel("sessions_left_open", target="= 0"),
    ],
    "claim_throughput": [Rel("double_claims", target="= 0")],
    "realtime_latency": [
        Rel("one_subscriber.p50_ms", target="<= 15"),
        Rel("one_subscriber.p99_ms", target="<= 50"),
        Rel("fanout_200.p99_ms", target="<= 200"),
        Rel("sustained.max_changes_per_s_p99_under_1s", target=">= 2000"),
    ],
    "replication": [
        # ratio: raw seconds / transport seconds (above 1 the executor's relay is faster)
        Rel("transport_mb_s_median", baseline="raw_mb_s_median", ratio="ratio_median"),
    ],
    "vcenter_sync": [
        # the read alone (same lab, same run) is the baseline of the end-to-end sync
        Rel("e2e_sync_s", baseline="inventory_best_s", ratio="e2e_over_read", target="<= {e2e_target_s}"),
        Rel("e2e_resync_s", target="<= {resync_target_s}"),
    ],
    "rolling_update": [
        # two clusters at once; the physical limit (unavoidable simulated waits) is the baseline
        Rel("wall_s", baseline="physical_limit_s", ratio="overhead_pct", target="overhead_pct <= 5"),
        # against the limit (evacuation, staging, apply, reboot: the SCP backup is overhead)
        Rel("overhead_pct_issue", target="<= 5"),
        Rel(
            "maintenance_s_per_host.staged",
            baseline="maintenance_s_per_host.naive",
            ratio="staging_cut_pct",
            target="staging_cut_pct >= 30",
        ),
    ],
}

NAME_KEYS = ("bench", "benchmark")  # the benchmark's own name in its JSON: the table has it already
ID_KEYS = ("name", "path", "mode", "phase", "client", "batch", "rate_per_s")  # label list items


# --- figures -------------------------------------------------------------------------


def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    """Nested JSON to ``{"a.b": value}`` in the order given. Lists of objects become
    ``key[id=..].field`` (ids from ID_KEYS, else the index); lists of scalars one value."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        for i, item in enumerate(obj):
            ids = [k for k in ID_KEYS if k in item and not isinstance(item[k], dict | list)]
            label = ",".join(f"{k}={item[k]}" for k in ids) if ids else str(i)
            out.update(flatten({k: v for k, v in item.items() if k not in ids}, f"{prefix}[{label}]"))
    elif isinstance(obj, list):
        out[prefix] = "; ".join(json.dumps(x) if not isinstance(x, str) else x for x in obj)
    else:
        out[prefix] = obj
    return out


def unit_of(key: str) -> str:
    """The unit a figure's name states, or "" when it states none. A figure named only by
    its variant (``maintenance_s_per_host.staged``) takes its parent's unit."""
    parts = key.lower().split(".")
    unit = _unit(parts[-1])
    if not unit and len(parts) > 1 and "[" not in parts[-2]:
        unit = _unit(parts[-2])
    return unit


def _unit(leaf: str) -> str:
    leaf = re.sub(r"^(baseline|target)_|_(baseline|target)$", "", leaf)  # a baseline has its figure's unit
    if re.search(r"(^|_)mb_s(_|$)", leaf):
        return "MB/s"
    m = re.search(r"_(ms|s)_per_([a-z]+)$", leaf)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    m = re.search(r"(?:^|_)(\w+?)_per_s(?:_|$)", leaf)
    if m:
        thing = m.group(1).rsplit("_", 1)[-1]
        return "/s" if thing in ("rate", "max") else f"{thing}/s"
    if leaf == "rps":
        return "req/s"
    if leaf.startswith("loadavg"):
        return ""
    if leaf in ("speedup",) or leaf.startswith("ratio") or leaf.endswith("_ratio"):
        return "×"
    if leaf == "cpus":
        return "cores"
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_pct", "%"), ("_mb", "MB"), ("_gb", "GB")):
        if leaf.endswith(suffix):
            return unit
    return ""


def fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1000 else str(value)
    return str(value)


def with_unit(value: object, unit: str) -> str:
    if unit in ("", "×") or isinstance(value, bool | str):
        return fmt(value)
    return f"{fmt(value)} {unit}"


@dataclasses.dataclass
class Row:
    metric: str
    value: object
    unit: str = ""
    baseline: str = ""
    ratio: str = ""
    target: str = ""


def relate(bench: str, figures: dict[str, object]) -> list[Row]:
    """The table rows of one benchmark: each figure, with its baseline, ratio and target
    where the benchmark gives them. Ratio and target figures that were attached to a
    row are not repeated as rows of their own; baselines are (they are figures too)."""
    figs = {k: v for k, v in figures.items() if k not in NAME_KEYS and v is not None}
    rows = {k: Row(k, v, unit_of(k)) for k, v in figs.items()}
    used: set[str] = set()

    def sub(text: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) in figs:
                used.add(m.group(1))
                return fmt(figs[m.group(1)])
            return m.group(0)

        return re.sub(r"\{([^}]+)\}", one, text)

    def attach(
        row: Row, baseline: str | None, ratio: str | None, target: str | None, more: bool = False
    ) -> None:
        """``more``: a target adds to the row's targets (a figure RELATIONS gives several)."""
        if baseline and baseline in figs and not row.baseline:
            row.baseline = f"{with_unit(figs[baseline], unit_of(baseline))} ({baseline})"
        if ratio and ratio in figs and not row.ratio:
            row.ratio = f"{with_unit(figs[ratio], unit_of(ratio))} ({ratio})"
            used.add(ratio)
        if target and (more or not row.target):
            judged = judge(sub(target), row.value, figs)
            row.target = f"{row.target}; {judged}" if row.target else judged

    for rel in RELATIONS.get(bench, []):
        if rel.metric in rows:
            attach(rows[rel.metric], rel.baseline, rel.ratio, rel.target, more=True)
    # generic names: x + x_baseline / baseline_x / baseline.x, ratio_x / x_ratio, targets.x / target_x / x_target
    for key, row in rows.items():
        head, _, leaf = key.rpartition(".")
        pre = f"{head}." if head else ""
        if leaf.startswith(("baseline", "ratio", "target")) or leaf.endswith(
            ("_baseline", "_ratio", "_target")
        ):
            continue
        baseline = next(
            (
                c
                for c in (f"{pre}{leaf}_baseline", f"{pre}baseline_{leaf}", f"{pre}baseline.{leaf}")
                if c in figs
            ),
            None,
        )
        ratio = next(
            (c for c in (f"{pre}ratio_{leaf}", f"{pre}{leaf}_ratio", f"{pre}ratio.{leaf}") if c in figs), None
        )
        tkey = next(
            (
                c
                for c in (
                    f"{pre}targets.{leaf}",
                    f"{pre}target_{leaf}",
                    f"{pre}{leaf}_target",
                    f"{pre}target.{leaf}",
                )
                if c in figs
            ),
            None,
        )
        target = None
        if tkey is not None and not row.target and not isinstance(figs[tkey], bool):
            used.add(tkey)
            unit = row.unit
            op = ">= " if unit.endswith("/s") or unit == "×" else "<= " if unit in ("ms", "s") else ""
            target = f"{op}{fmt(figs[tkey])}"
        attach(row, baseline, ratio, target)
    # the figures compared with something first (stable: otherwise in the benchmark's order)
    return sorted(
        (r for k, r in rows.items() if k not in used), key=lambda r: not (r.baseline or r.ratio or r.target)
    )


def judge(target: str, value: object, figs: dict[str, object]) -> str:
    """``<= 10`` (or ``other_key >= 30``) with "met" or "**missed**" appended when both
    sides are numbers; otherwise the text as it is."""
    m = re.fullmatch(r"(?:(\S+) )?(<=|>=|=) (-?[\d.]+)", target)
    if not m:
        return target
    subject = figs.get(m.group(1)) if m.group(1) else value
    if isinstance(subject, bool) or not isinstance(subject, int | float):
        return target
    limit = float(m.group(3))
    ok = {"<=": subject <= limit, ">=": subject >= limit, "=": subject == limit}[m.group(2)]
    return f"{target} ({'met' if ok else '**missed**'})"


# --- running -------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    name: str
    argv: list[str]
    quick_note: str = ""
    status: str = "not run"  # not run | ok | failed
    reason: str = ""
    returncode: int | None = None
    seconds: float | None = None
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    result: dict | None = None
    json_line: str = ""
    stderr_tail: list[str] = dataclasses.field(default_factory=list)


def discover(bench_dir: Path) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.name.startswith(("_", "run_all")))


def quick_args(name: str, source: str) -> tuple[list[str], str]:
    args = QUICK_ARGS.get(name)
    if not args:
        return [], "no shorter run: full"
    missing = [a for a in args if a.startswith("--") and f'"{a}"' not in source and f"'{a}'" not in source]
    if missing:
        return [], f"quick options {', '.join(missing)} not declared by the benchmark: full run"
    return list(args), ""


def last_json_line(lines: list[str]) -> tuple[dict | None, str]:
    for line in reversed(lines):
        s = line.strip()
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj, s
    return None, ""


def _pump(stream, sink, keep) -> None:
    for line in stream:
        keep.append(line.rstrip("\n"))
        sink.write(line)
        sink.flush()


def loadavg() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT to the benchmark's process group (its finally blocks tear the stack down),
    then SIGKILL to the group if it has not gone after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _interruptible() -> None:
    """In the benchmark's child before its exec: SIGINT back to its default. A runner started
    with SIGINT ignored (from a script with `&`, under pytest-xdist) would hand that on, and
    Python then installs no KeyboardInterrupt: stop()'s SIGINT would be lost, the benchmark's
    finally blocks would never tear its stack down, and only SIGKILL would end it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_one(run: Run, bench_dir: Path, timeout: float | None, grace: float = INTERRUPT_GRACE_S) -> None:
    out_lines: list[str] = []
    err_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    cmd = [sys.executable, str(bench_dir / f"{run.name}.py"), *run.argv]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"== {run.name} {' '.join(run.argv)}".rstrip(), file=sys.stderr, flush=True)
    run.load_before = loadavg()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=_interruptible,
    )
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, out_lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, err_tail), daemon=True),
    ]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop(proc, grace)
    except KeyboardInterrupt:
        stop(proc, grace)
        run.status, run.reason = "failed", "interrupted (Ctrl-C)"
        raise
    finally:
        for t in pumps:
            t.join(5)
        run.seconds = round(time.monotonic() - t0, 1)
        run.load_after = loadavg()
        run.returncode = proc.returncode
        run.stderr_tail = list(err_tail)
        run.result, run.json_line = last_json_line(out_lines)
    reasons = []
    if timed_out:
        reasons.append(f"timed out after {timeout:g} s")
    elif proc.returncode < 0:
        reasons.append(f"killed by signal {-proc.returncode}")
    elif proc.returncode != 0:
        reasons.append(f"exit {proc.returncode}")
    if run.result is None:
        reasons.append("printed no JSON line")
    elif "error" in run.result:
        reasons.append(f"reported error: {run.result['error']}")
    run.status = "failed" if reasons else "ok"
    run.reason = "; ".join(reasons)


# --- the report ----------------------------------------------------------------------


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        mem = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        info["memory_gib"] = round(int(mem["MemTotal"].split()[0]) / 2**20, 1)
        info["memory_available_gib"] = round(int(mem["MemAvailable"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info.setdefault("cpu", platform.processor() or platform.machine())
    return info


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    if not head:
        return "unknown commit"
    paths = [ln[3:] for ln in dirty.splitlines() if ln.strip()]
    if not paths:
        return f"commit `{head}`"
    shown = ", ".join(f"`{p}`" for p in paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
    return f"commit `{head}` with uncommitted changes to {shown}"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_text(load: tuple[float, float, float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "–"


def render(
    runs: list[Run],
    started: dt.datetime,
    finished: dt.datetime | None,
    quick: bool,
    skipped: list[str],
    info: dict[str, object],
    git: str,
) -> str:
    failed = [r for r in runs if r.status == "failed"]
    pending = [r for r in runs if r.status == "not run"]
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run_all{' --quick' if quick else ''}` on {when}"
        + (
            f", finished {finished.strftime('%H:%M UTC')}"
            if finished
            else " (still running or stopped early)"
        )
        + f", at {git}. Each benchmark is `bench/<name>.py`; its figures are the one JSON line it printed.",
        "",
    ]
    if quick:
        lines += [
            "**Quick run**: shorter workloads (see the options in the run table); the figures are not "
            "comparable with a full run.",
            "",
        ]
    mem = (
        f"{info['memory_gib']} GiB memory ({info.get('memory_available_gib', '?')} GiB available at the start)"
        if "memory_gib" in info
        else "memory unknown"
    )
    lines += [
        f"**Machine**: {info['cores']} cores, {mem}, CPU {info['cpu']}; Linux {info['kernel']}, "
        f"Python {info['python']}.",
        "",
        "**Load**: the load average (1 / 5 / 15 min, `os.getloadavg()`) was taken before and after each "
        "benchmark. The machine may be shared: other work running at the same time takes CPU from the "
        "benchmark and from the services it starts, so figures taken at a higher load are lower "
        "(throughput) or higher (latency) than the code alone would give. Compare runs at similar load.",
        "",
    ]
    status = (
        "**Status**: "
        + (
            f"FAILED: {', '.join(f'{r.name} ({r.reason})' for r in failed)}"
            if failed
            else "every benchmark that ran passed"
        )
        + (f"; not run yet: {', '.join(r.name for r in pending)}" if pending else "")
        + (f"; not selected (`--only`): {', '.join(skipped)}" if skipped else "")
        + "."
    )
    lines += [
        status,
        "",
        "## Runs",
        "",
        "| benchmark | options | status | wall time | load before (1/5/15) | load after (1/5/15) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        st = {"ok": "ok", "not run": "not run"}.get(r.status, f"**FAILED**: {r.reason}")
        opts = " ".join(r.argv) or "(defaults)"
        if r.quick_note:
            opts += f" ({r.quick_note})"
        secs = f"{r.seconds:g} s" if r.seconds is not None else "–"
        lines.append(
            f"| {r.name} | {cell(opts)} | {cell(st)} | {secs} | {load_text(r.load_before)} "
            f"| {load_text(r.load_after)} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        "Baseline: what the benchmark compares the figure with (the figure it names is in brackets); "
        "ratio: as the benchmark computes it (its key in brackets); target: as the benchmark states it, "
        "with met or **missed** where it is a plain comparison. Figures compared with something come first "
        "in each benchmark's rows, the rest follow in the order the benchmark printed them.",
        "",
        "| benchmark | metric | value | unit | baseline | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        if r.status == "failed":
            lines.append(f"| {r.name} | **run failed** | {cell(r.reason)} | | | | |")
        elif r.status == "not run":
            lines.append(f"| {r.name} | (not run) | | | | | |")
        if r.result is None:
            continue
        for row in relate(r.name, flatten(r.result)):
            lines.append(
                f"| {r.name} | {cell(row.metric)} | {cell(fmt(row.value))} | {cell(row.unit)} "
                f"| {cell(row.baseline)} | {cell(row.ratio)} | {cell(row.target)} |"
            )
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [
                f"### {r.name}: {r.reason}",
                "",
                f"Command: `{' '.join(['python', f'bench/{r.name}.py', *r.argv])}`, "
                f"exit code {r.returncode}. Last lines of its stderr:",
                "",
                "```",
            ]
            lines += [ln.replace("```", "'''") for ln in r.stderr_tail] or ["(nothing)"]
            lines += ["```", ""]
    if any(r.json_line for r in runs):
        lines += ["", "## Raw JSON lines", "", "```"]
        lines += [f"{r.name}: {r.json_line}" for r in runs if r.json_line]
        lines += ["```"]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all in bench/)")
    ap.add_argument(
        "--quick", action="store_true", help="shorter runs where a benchmark has options for them"
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds per benchmark before it is stopped (default 3600; 0: none)",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write the Markdown (bench/RESULTS.md)"
    )
    ap.add_argument(
        "--source",
        help="what code is measured, for RESULTS.md (default: the git commit of this tree "
        "and its uncommitted changes)",
    )
    ap.add_argument(
        "--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS
    )  # tests: fake benchmarks
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    opts = ap.parse_args(argv)
    available = discover(opts.bench_dir)
    if opts.list:
        print("\n".join(available))
        return 0
    names = available
    if opts.only:
        names = [n.strip().removesuffix(".py") for n in opts.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            print(
                f"bench/run_all: unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(available)})",
                file=sys.stderr,
            )
            return 2
    if not names:
        print(f"bench/run_all: no benchmarks in {opts.bench_dir}", file=sys.stderr)
        return 2
    skipped = [n for n in available if n not in names]
    runs = []
    for n in names:
        argv_n, note = quick_args(n, (opts.bench_dir / f"{n}.py").read_text()) if opts.quick else ([], "")
        runs.append(Run(n, argv_n, note))
    started = dt.datetime.now(dt.UTC)
    info, git = machine(), opts.source or git_state()
    timeout = opts.timeout or None

    def report(finished: dt.datetime | None) -> None:
        write(opts.out, render(runs, started, finished, opts.quick, skipped, info, git))

    report(None)
    try:
        for r in runs:
            run_one(r, opts.bench_dir, timeout)
            report(None)
            if r.status == "failed":
                print(f"bench/run_all: {r.name} FAILED: {r.reason}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        report(None)
        print(f"bench/run_all: interrupted; what was measured is in {opts.out}", file=sys.stderr)
        return 130
    report(dt.datetime.now(dt.UTC))
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        print(
            f"bench/run_all: FAILED: {', '.join(f'{r.name} ({r.reason})' for r in failed)}; "
            f"results written to {opts.out}",
            file=sys.stderr,
        )
        return 1
    print(f"bench/run_all: {len(runs)} benchmark(s) ok; results written to {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
