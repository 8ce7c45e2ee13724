"""bench/run_all: collecting each benchmark's JSON line and writing the results table.

The benchmarks run here are FAKES written by these tests into a temporary folder (test
fixtures, not real benchmarks): one prints a log line and then its JSON line of figures,
one exits non-zero, one prints nothing, one sleeps past the timeout. No stack is started.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = ROOT / "bench" / "run_all.py"

spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
run_all = importlib.util.module_from_spec(spec)
sys.modules["bench_run_all"] = run_all  # dataclasses resolve annotations through sys.modules
spec.loader.exec_module(run_all)

# --- fixtures: fake benchmark scripts ------------------------------------------------

FAKE_GOOD = '''
"""Test fixture (fake benchmark): a log line, then one JSON line with a baseline and a ratio."""
import json, sys
print("starting the fake stack...")
print("progress", file=sys.stderr)
print(json.dumps({"bench": "good", "argv": sys.argv[1:], "wall_s": 2.5, "wall_s_baseline": 10.0,
                  "ratio_wall_s": 0.25, "targets": {"wall_s": 3}, "p99_ms": 4.2, "claims_per_s": 1234,
                  "phases": [{"path": "sql", "batch": 10, "rps": 900}, {"path": "rest", "batch": 10, "rps": 600}],
                  "ok": True, "note": "a|b"}))
'''
FAKE_FAILS = '''
"""Test fixture (fake benchmark): figures, then a non-zero exit (like a broken invariant)."""
import json, sys
print(json.dumps({"bench": "fails", "double_claims": 3}))
print("Traceback: something broke", file=sys.stderr)
sys.exit(3)
'''
FAKE_SILENT = '''
"""Test fixture (fake benchmark): exits 0 without printing a JSON line."""
print("no figures here")
'''
FAKE_ERROR = '''
"""Test fixture (fake benchmark): exits 2 with an error object as its JSON line."""
import json, sys
print(json.dumps({"error": "wrk is not installed"}))
sys.exit(2)
'''
FAKE_SLOW = '''
"""Test fixture (fake benchmark): sleeps past the timeout; cleans up on SIGINT like the real ones."""
import pathlib, sys, time
try:
    pathlib.Path(sys.argv[1]).touch()  # running: an interrupt from now on meets the finally
    time.sleep(60)
finally:
    print("torn down")
'''


def fakes(tmp_path: Path, **scripts: str) -> Path:
    d = tmp_path / "bench"
    d.mkdir()
    for name, body in scripts.items():
        (d / f"{name}.py").write_text(textwrap.dedent(body).lstrip())
    return d


def results(path: Path) -> str:
    return path.read_text()


def figure_rows(md: str, bench: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.split("## Figures", 1)[1].splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if len(cells) == 7 and cells[0] == bench:
            rows[cells[1]] = cells[2:]
    return rows


# --- collecting and failing ------------------------------------------------------------


def test_all_fakes_good_failing_silent(tmp_path: Path, capsys) -> None:
    d = fakes(tmp_path, good=FAKE_GOOD, fails=FAKE_FAILS, silent=FAKE_SILENT)
    out = tmp_path / "RESULTS.md"
    rc = run_all.main(["--bench-dir", str(d), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    # the failures are named, with why
    assert "fails FAILED: exit 3" in err
    assert "silent FAILED: printed no JSON line" in err
    assert "good FAILED" not in err
    md = results(out)
    assert "**Status**: FAILED: fails (exit 3), silent (printed no JSON line)" in md
    # machine and load
    assert f"**Machine**: {os.cpu_count()} cores" in md and "GiB memory" in md and "CPU " in md
    runs = [
        ln for ln in md.split("## Runs", 1)[1].split("## Figures", 1)[0].splitlines() if ln.startswith("| ")
    ]
    assert len(runs) == 4  # header + 3 benchmarks, alphabetical
    assert [r.split(" | ")[0] for r in runs[1:]] == ["| fails", "| good", "| silent"]
    good = next(r for r in runs if r.startswith("| good "))
    assert "| ok |" in good and good.count(" / ") == 4  # load before and after, 1/5/15 each
    # the good benchmark's figures, with baseline, ratio and target attached
    rows = figure_rows(md, "good")
    assert rows["wall_s"] == ["2.5", "s", "10.0 s (wall_s_baseline)", "0.25 (ratio_wall_s)", "<= 3 (met)"]
    assert rows["p99_ms"][:2] == ["4.2", "ms"]
    assert rows["claims_per_s"][:2] == ["1234", "claims/s"]
    assert rows["phases[path=sql,batch=10].rps"][:2] == ["900", "req/s"]
    assert rows["phases[path=rest,batch=10].rps"][0] == "600"
    assert rows["ok"][0] == "yes"
    assert rows["note"][0] == "a\\|b"  # escaped for the table
    assert "ratio_wall_s" not in rows and "targets.wall_s" not in rows  # attached, not repeated
    assert "wall_s_baseline" in rows  # a baseline is a figure of its own too
    assert "bench" not in rows
    # the failing one keeps the figures it printed, marked; the silent one is marked
    fails = figure_rows(md, "fails")
    assert fails["**run failed**"][0] == "exit 3"
    assert fails["double_claims"][0] == "3"
    assert figure_rows(md, "silent")["**run failed**"][0] == "printed no JSON line"
    # failures section with the stderr tail, raw JSON lines
    assert "### fails: exit 3" in md and "Traceback: something broke" in md
    raw = md.split("## Raw JSON lines", 1)[1]
    assert json.loads(raw.split("good: ", 1)[1].splitlines()[0])["wall_s"] == 2.5


def test_error_object_is_a_failure(tmp_path: Path, capsys) -> None:
    d = fakes(tmp_path, broken=FAKE_ERROR)
    out = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(d), "--out", str(out)]) == 1
    assert "broken FAILED: exit 2; reported error: wrk is not installed" in capsys.readouterr().err
    assert "| broken | **run failed** | exit 2; reported error: wrk is not installed |" in results(out)


def test_only_selects_and_names_the_rest(tmp_path: Path, capsys) -> None:
    d = fakes(tmp_path, good=FAKE_GOOD, fails=FAKE_FAILS, silent=FAKE_SILENT)
    out = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(d), "--out", str(out), "--only", "good"]) == 0
    md = results(out)
    assert "every benchmark that ran passed; not selected (`--only`): fails, silent." in md
    assert ", at commit `" in md  # this tree's commit, by default
    assert figure_rows(md, "good") and not figure_rows(md, "fails")
    assert (
        run_all.main(["--bench-dir", str(d), "--out", str(out), "--only", "good", "--source", "an export"])
        == 0
    )
    assert ", at an export. Each benchmark" in results(out)
    assert run_all.main(["--bench-dir", str(d), "--out", str(out), "--only", "good,nope"]) == 2
    assert "unknown benchmark(s): nope" in capsys.readouterr().err


def test_quick_passes_declared_options_only(tmp_path: Path, monkeypatch) -> None:
    d = fakes(
        tmp_path,
        good=FAKE_GOOD.replace("import json, sys", "import json, sys  # '--runs' '--size'"),
        other=FAKE_GOOD,
    )
    monkeypatch.setitem(run_all.QUICK_ARGS, "good", ["--runs", "1", "--size", "2"])
    monkeypatch.setitem(run_all.QUICK_ARGS, "other", ["--gone", "1"])  # not declared by the fake: full run
    out = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(d), "--out", str(out), "--quick"]) == 0
    md = results(out)
    raw = {
        ln.split(": ", 1)[0]: json.loads(ln.split(": ", 1)[1])
        for ln in md.split("## Raw JSON lines", 1)[1].splitlines()
        if ": {" in ln
    }
    assert raw["good"]["argv"] == ["--runs", "1", "--size", "2"]
    assert raw["other"]["argv"] == []
    assert "**Quick run**" in md and "--gone not declared by the benchmark: full run" in md


def test_timeout_stops_the_benchmark_with_sigint(tmp_path: Path, capsys) -> None:
    d = fakes(tmp_path, slow=FAKE_SLOW)
    started = tmp_path / "started"
    # the runner may itself run with SIGINT ignored (started with `&` from a script, or as a
    # pytest-xdist worker): the benchmark must still get SIGINT, not only the SIGKILL after it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # a timeout that fell before the benchmark's Python even started (a busy machine)
        # tests nothing: run again with twice the timeout until the fake was running then
        timeout = 1.0
        while True:
            run = run_all.Run("slow", [str(started)])
            run_all.run_one(run, d, timeout=timeout, grace=10)
            assert (
                run.status == "failed"
                and run.reason == f"timed out after {timeout:g} s; printed no JSON line"
            )
            assert run.seconds < timeout + 10, run.seconds  # stopped within the grace, not by SIGKILL
            if started.exists() or timeout >= 16:
                break
            capsys.readouterr()
            timeout *= 2
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started.exists(), "the fake benchmark never started within 16 s"
    assert run.returncode != -signal.SIGKILL
    assert "torn down" in capsys.readouterr().out  # its finally block ran (SIGINT, not SIGKILL)


# --- the table logic on a real benchmark's shape ----------------------------------------


def test_relations_of_a_known_benchmark() -> None:
    line = {
        "benchmark": "rest_throughput",
        "connections": 16,
        "loadavg_1m_before": 1.2,
        "gateway_get": {"rps": 5400, "p50_ms": 2.1, "p99_ms": 8.0, "non_2xx": 0},
        "direct_get": {"rps": 6000, "p50_ms": 1.9, "p99_ms": 6.5},
        "ratio_get": 0.9,
        "target_get_met": True,
    }
    rows = {r.metric: r for r in run_all.relate("rest_throughput", run_all.flatten(line))}
    get = rows["gateway_get.rps"]
    assert (get.unit, get.baseline, get.ratio, get.target) == (
        "req/s",
        "6000 req/s (direct_get.rps)",
        "0.9 (ratio_get)",
        ">= 5000 (met); ratio_get >= 0.7 (met)",  # a figure may carry several targets
    )
    assert rows["gateway_get.p99_ms"].baseline == "6.5 ms (direct_get.p99_ms)"
    assert rows["gateway_get.p99_ms"].target == "<= 10 (met)"
    assert list(rows)[:3] == ["gateway_get.rps", "gateway_get.p50_ms", "gateway_get.p99_ms"]  # compared first
    assert "ratio_get" not in rows and "benchmark" not in rows
    slow = run_all.relate("rest_throughput", run_all.flatten({**line, "ratio_get": 0.56}))
    assert slow[0].target == ">= 5000 (met); ratio_get >= 0.7 (**missed**)"
    assert rows["target_get_met"].value is True and rows["loadavg_1m_before"].unit == ""
    # a target read from the JSON itself
    fleet = {"wall_s": 12.0, "sequential_extrapolated_s": 1000.0, "speedup": 83.3, "target_wall_s": 30}
    rows = {r.metric: r for r in run_all.relate("fleet_inventory", fleet)}
    assert rows["wall_s"].target == "<= 30 (met)" and rows["wall_s"].ratio == "83.3 (speedup)"
    assert set(rows) == {"wall_s", "sequential_extrapolated_s"}


def test_targets_missed_and_on_another_figure() -> None:
    line = {
        "wall_s": 160.0,
        "physical_limit_s": 140.0,
        "overhead_pct": 12.5,
        "maintenance_s_per_host": {"staged": 3.3, "naive": 13.6},
        "staging_cut_pct": 75.7,
    }
    rows = {r.metric: r for r in run_all.relate("rolling_update", run_all.flatten(line))}
    wall = rows["wall_s"]
    assert wall.baseline == "140.0 s (physical_limit_s)" and wall.ratio == "12.5 % (overhead_pct)"
    assert wall.target == "overhead_pct <= 5 (**missed**)"
    line["overhead_pct"] = 4.0
    rows_met = {r.metric: r for r in run_all.relate("rolling_update", run_all.flatten(line))}
    assert rows_met["wall_s"].target == "overhead_pct <= 5 (met)"
    staged = rows["maintenance_s_per_host.staged"]
    assert staged.unit == "s/host" and staged.baseline == "13.6 s/host (maintenance_s_per_host.naive)"
    assert staged.ratio == "75.7 % (staging_cut_pct)" and staged.target == "staging_cut_pct >= 30 (met)"
    assert run_all.judge("about 3", 1, {}) == "about 3"


def test_replication_transport_against_raw_ssh() -> None:
    line = {
        "benchmark": "replication",
        "ratio_median": 1.02,
        "ratio_worst": 0.97,
        "transport_mb_s_median": 410.5,
        "raw_mb_s_median": 402.1,
        "executor_rss_during_mb": [30.1, 31.0],
        "executor_cpu_s_per_gib": 0.2,
    }
    rows = {r.metric: r for r in run_all.relate("replication", run_all.flatten(line))}
    t = rows["transport_mb_s_median"]
    assert (t.unit, t.baseline, t.ratio) == ("MB/s", "402.1 MB/s (raw_mb_s_median)", "1.02 (ratio_median)")
    assert "ratio_median" not in rows and rows["ratio_worst"].value == 0.97
    assert (
        rows["executor_rss_during_mb"].value == "30.1; 31.0" and rows["executor_rss_during_mb"].unit == "MB"
    )


@pytest.mark.parametrize(
    "key,unit",
    [
        ("p99_ms", "ms"),
        ("total_s", "s"),
        ("overhead_pct", "%"),
        ("rps", "req/s"),
        ("vms_per_s", "vms/s"),
        ("sustained.max_changes_per_s_p99_under_1s", "changes/s"),
        ("steps[rate_per_s=500].p50_ms", "ms"),
        ("maintenance_s_per_host.staged", "s/host"),
        ("gateway_get.non_2xx", ""),
        ("loadavg_start", ""),
        ("hosts", ""),
        ("speedup", "×"),
        ("cpus", "cores"),
    ],
)
def test_units_from_names(key: str, unit: str) -> None:
    assert run_all.unit_of(key) == unit


def test_the_wrapper_is_executable_and_runs_fakes(tmp_path: Path) -> None:
    d = fakes(tmp_path, good=FAKE_GOOD, silent=FAKE_SILENT)
    out = tmp_path / "R.md"
    wrapper = ROOT / "bench" / "run_all"
    assert os.access(wrapper, os.X_OK)
    p = subprocess.run(
        [str(wrapper), "--bench-dir", str(d), "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1, p.stderr
    assert "silent FAILED: printed no JSON line" in p.stderr
    assert "| good | wall_s | 2.5 | s |" in out.read_text()
