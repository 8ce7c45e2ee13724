"""The sign-in/jobs notebook in a real browser: JupyterLab on a loopback port with a
token, Debian's headless Chromium driven by Selenium through /usr/bin/chromedriver (no
browser downloads). Run All, then the rendered job list must show the stack's jobs.
A screenshot is left in the test's tmp dir."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.console_support import PASSWORD, make_console_env, scp_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_sign_in_and_jobs.ipynb"
PAGE_TIMEOUT_S = 45  # JupyterLab page, kernel start and the notebook's cells on a loaded machine (s)

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture
def lab(stack, tmp_path):
    """JupyterLab serving a copy of the notebook (so nothing is written into the repo)."""
    ce = make_console_env(stack)
    jobs = [scp_job(ce) for _ in range(2)]
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **stack.env(),
        "RACKPILOT_CONSOLE_EMAIL": ce.emails["operator"],
        "RACKPILOT_CONSOLE_PASSWORD": PASSWORD,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
    }
    env.pop("SUPABASE_SERVICE_ROLE_KEY", None)  # the notebook gets what an operator's Jupyter would
    env.pop("SUPABASE_DB_URL", None)
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--ServerApp.port_retries=0",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI and the dev machines run as root
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", 30)
        yield {
            "url": f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}",
            "jobs": jobs,
            "email": ce.emails["operator"],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for s in ce.sessions.values():
            s.sign_out()
        ce.conn.close()


def test_jobs_notebook_renders_job_rows_in_chromium(lab, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    shot = tmp_path / "jobs-notebook.png"
    try:
        driver.get(lab["url"])
        wait = WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.3)
        wait.until(
            lambda d: d.execute_script(
                "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
                "return !!(w && w.sessionContext && w.sessionContext.session && w.content && w.content.widgets.length)"
            )
        )
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        rows = wait.until(
            lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "table.rp-jobs tbody tr.rp-row")] or False
        )
        text = [r.text for r in rows]
        for jid in lab["jobs"]:
            assert any(jid[:8] in t and "scp_backup" in t and "pending" in t for t in text), text
        banner = driver.find_element(By.CSS_SELECTOR, ".rp-signed-in").text
        assert lab["email"] in banner and "operator" in banner
        assert PASSWORD not in driver.page_source
        # the live feed cell ran too
        wait.until(lambda d: "live: True" in d.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        if not shot.exists():
            driver.save_screenshot(str(shot))
        driver.quit()
