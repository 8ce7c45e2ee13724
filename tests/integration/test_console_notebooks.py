"""Every notebook in notebooks/ runs headless (nbclient, a real ipykernel) against the
local stack, signed in from the environment as the demo admin, without an error; the
committed notebooks carry no outputs; and the widgets they drew hold the stack's data."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration._functions_support import insert_blocker, q
from tests.integration.console_support import PASSWORD, claim, make_console_env, report_history, scp_job

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120  # a cell on a loaded 2-core machine, kernel imports included (s)


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    report_history(e)  # 05_reports: compliance over time and replication lag have data to chart
    yield e
    e.conn.close()


@pytest.fixture(scope="module")
def paused_job(ce):
    """A job waiting for blocker decisions, so 03_blockers draws a wizard."""
    f = ce.fleet
    host = f.hosts[f.clusters[0]][0]
    jid = scp_job(ce, f.host_servers[host])
    claim(ce, jid)
    vm = next(v for v, h in f.vms.items() if h == host)
    insert_blocker(ce.conn, jid, host, vm)
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", jid)
    return jid


def widget_text(nb) -> str:
    """Everything the notebook's widgets held when it finished (their stored state)."""
    state = (
        nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    )
    return json.dumps(state)


def test_notebooks_are_committed_without_outputs():
    assert len(NOTEBOOKS) >= 6
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "widgets" not in nb.metadata, f"{path.name} carries widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path, ce, paused_job, supabase_env, monkeypatch, tmp_path):
    for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY"):
        monkeypatch.setenv(k, supabase_env[k])
    monkeypatch.setenv("RACKPILOT_CONSOLE_EMAIL", ce.emails["admin"])
    monkeypatch.setenv("RACKPILOT_CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("RACKPILOT_CONSOLE_EXPORT_DIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    text = widget_text(nb)
    assert PASSWORD not in outputs and PASSWORD not in text
    assert f"signed in as <b>{ce.emails['admin']}</b>" in text
    assert "Traceback" not in outputs
    if path.stem.startswith("00"):
        assert "rp-app" in text and "Server update" in text and "rp-nav" in text
    elif path.stem.startswith("01"):
        assert paused_job[:8] in text and "rp-jobs" in text
        assert "live: True" in outputs
    elif path.stem.startswith("02"):
        # the discovery form: list editors and the credential picker, no raw JSON box
        assert "rp-list-ranges" in text and "rp-list-credential_set_ids" in text
        assert "TextareaModel" not in text  # no raw JSON box in either form
    elif path.stem.startswith("03"):
        assert f"Blockers of job {paused_job[:8]}" in text and "usb_passthrough" in text
    elif path.stem.startswith("05"):
        assert (tmp_path / "job_stats_by_type.csv").read_text().startswith("type,")
        assert "rp-chart" in text and "success rate per job type" in text  # charts, not only tables
        assert "rp-v_host_history" in text
        # compliance over time (recorded by the database per inventory run) and the
        # replication lag plot of the Replication screen, both charted
        assert "servers compliant after each inventory / compliance run" in text
        assert "rp-lag-plot" in text and f"rep-{ce.tag}" in text
        # the audit log viewer: entries by name and the hash chain checked
        assert "rp-audit-chain" in text and "chain intact" in text and "rp-audit" in text
        assert "rp-role-gate" not in text
    elif path.stem.startswith("06"):
        assert "Force-resume" in text and "Target credential" in text
        assert "rp-notify" in text and "job and window events" in text
        # identity administration instead of printed session UUIDs
        assert "rp-breakglass-sessions" in text
        assert "rp-role-gate" not in text
