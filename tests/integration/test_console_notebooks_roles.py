"""Every notebook runs headless as each role below admin (viewer, operator, approver; the
admin runs them in test_console_notebooks.py) without a traceback or an error output: what
the role may not do is said in words (a red line from the frame, or the notebook's own note). To keep it fast, each role runs the
notebooks' code cells in order in one kernel (one kernel start per role, not per notebook);
each notebook's first cell connects again, as it does when opened alone."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_notebook

from tests.integration.console_support import PASSWORD, make_console_env, scp_job
from tests.integration.test_console_notebooks import CELL_TIMEOUT_S, NOTEBOOKS, widget_text


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    scp_job(e)
    yield e
    e.conn.close()


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_every_notebook_runs_as_role(role, ce, supabase_env, monkeypatch, tmp_path):
    for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY"):
        monkeypatch.setenv(k, supabase_env[k])
    monkeypatch.setenv("RACKPILOT_CONSOLE_EMAIL", ce.emails[role])
    monkeypatch.setenv("RACKPILOT_CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("RACKPILOT_CONSOLE_EXPORT_DIR", str(tmp_path))
    monkeypatch.setenv("RACKPILOT_CONSOLE_RUNTIME_DIR", str(tmp_path / "session"))
    cells, origin = [], []
    for path in NOTEBOOKS:
        for c in nbformat.read(path, as_version=4).cells:
            if c.cell_type == "code":
                cells.append(c)
                origin.append(path.stem)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    bad = [
        (origin[i], o.get("ename") or o.get("name"))
        for i, c in enumerate(nb.cells)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
        or (
            o.get("output_type") == "stream"
            and o.get("name") == "stderr"
            and "Traceback" in o.get("text", "")
        )
    ]
    assert not bad, bad
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    text = widget_text(nb)
    assert "Traceback" not in outputs and PASSWORD not in outputs + text
    assert f"signed in as <b>{ce.emails[role]}</b>" in text
    assert f"notification settings are for admins; you are {role}" in outputs
    # screens above the role say so in words (05's audit log, 06's identity), nothing is asked
    assert f"Identity is for admins; your role is {role}." in text
    gate = "Audit log is for approvers and admins; your role is"
    assert (f"{gate} {role}." in text) == (role != "approver")
    assert ("rp-audit-chain" in text) == (role == "approver")
