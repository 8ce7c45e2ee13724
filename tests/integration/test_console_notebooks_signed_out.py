"""Finding 8 of issue 19: with only the README's URL and anon key (nobody signed in, no shared
session), every notebook runs top to bottom without a traceback or an error output: each
screen shows the sign-in form in its cell ("Sign in to open ..."), and the cells that need a
user say so in words. One kernel runs the code cells of all notebooks in order."""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_notebook

from tests.integration.test_console_notebooks import CELL_TIMEOUT_S, NOTEBOOKS, widget_text


def test_every_notebook_runs_signed_out_showing_the_sign_in_form(supabase_env, monkeypatch, tmp_path):
    for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY"):
        monkeypatch.setenv(k, supabase_env[k])
    for k in ("RACKPILOT_CONSOLE_EMAIL", "RACKPILOT_CONSOLE_PASSWORD", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RACKPILOT_CONSOLE_EXPORT_DIR", str(tmp_path))
    monkeypatch.setenv("RACKPILOT_CONSOLE_RUNTIME_DIR", str(tmp_path / "session"))  # no one signed in here
    cells = [
        c for path in NOTEBOOKS for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    bad = [
        o.get("ename") or o.get("text", "")[:200]
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error" or (o.get("output_type") == "stream" and o.get("name") == "stderr")
    ]
    assert not bad, bad
    assert "Traceback" not in outputs
    text = widget_text(nb)
    assert "not signed in" in text and "signed in as" not in text
    for title in ("Jobs", "Server update", "Blockers", "Windows", "Reports", "Audit log", "Identity"):
        assert f"Sign in to open <b>{title}</b>" in text, title
    assert "you@example.com" in text  # the form's email box
    # the cells that need a user say so
    assert "not signed in: sign in above, then run this cell again to follow the jobs live" in outputs
    assert "not signed in: sign in above, then run this cell again to export" in outputs
    assert "notification settings are for admins; you are not signed in" in outputs
    assert "no pre-flight report yet" in outputs
    assert not list(tmp_path.glob("*.csv"))  # nothing exported for nobody
