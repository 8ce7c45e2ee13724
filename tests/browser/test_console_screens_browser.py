"""The newer screens in the AppShell, in a real browser: fleet intake (discovery, catalogs,
schedules, BMC call log), replication, the audit log and identity administration. One
JupyterLab and one headless Chromium (Debian's, through /usr/bin/chromedriver) serve the
whole module; a notebook draws ``con.app()`` for an admin, and each test clicks one screen
in the navigation and checks what is on the page: the screen's own content, no red error
line, no traceback, no blank selector. A screenshot per screen goes to the test folder
(and RACKPILOT_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from console import screens
from tests.browser.test_console_browser import CHROMEDRIVER, CHROMIUM, free_port, wait_http
from tests.browser.test_console_wizard_browser import BLANK_SELECTS, shot
from tests.integration.console_support import PASSWORD, make_console_env, scp_job

PAGE_TIMEOUT_S = 60  # JupyterLab, kernel start, sign-in and a screen's reads on a loaded 2-core machine (s)
# each screen and what only it draws once its reads are done: a CSS class, else a text
SCREENS = {
    "discovery": "Scan and register",
    "catalogs": ".rp-catalogs",
    "schedules": ".rp-schedules",
    "calls": ".rp-bmc-calls",
    "replication": ".rp-replication",
    "audit": ".rp-audit-chain",
    "identity": ".rp-breakglass-sessions",
}

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def lab(stack, tmp_path_factory):
    ce = make_console_env(stack)
    scp_job(ce)  # something in the audit log
    tmp = tmp_path_factory.mktemp("screens")
    root = tmp / "lab"
    root.mkdir()
    nb = new_notebook(cells=[new_code_cell("import console\ncon = console.connect()\napp = con.app()\napp")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "app.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **stack.env(),
        "RACKPILOT_CONSOLE_EMAIL": ce.emails["admin"],
        "RACKPILOT_CONSOLE_PASSWORD": PASSWORD,
        "JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
        "JUPYTER_CONFIG_DIR": str(tmp / "cfg"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"),
        "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp / "session"),
    }
    env.pop("SUPABASE_SERVICE_ROLE_KEY", None)
    env.pop("SUPABASE_DB_URL", None)
    log = (tmp / "jupyter.log").open("w")
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
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", 30)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/app.ipynb?token={token}", "tmp": tmp}
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


@pytest.fixture(scope="module")
def driver(lab):
    """One Chromium on the notebook, Run All done and the AppShell drawn."""
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
        f"--user-data-dir={lab['tmp'] / 'chromium'}",
        "--window-size=1400,1800",
    ):
        opts.add_argument(arg)
    os.environ["SE_OFFLINE"] = "true"
    d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        d.get(lab["url"])
        wait = WebDriverWait(d, PAGE_TIMEOUT_S, poll_frequency=0.3)
        wait.until(
            lambda d: d.execute_script(
                "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
                "return !!(w && w.sessionContext && w.sessionContext.session && w.content && w.content.widgets.length)"
            )
        )
        d.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-app .rp-nav button"))
        yield d
    finally:
        d.quit()


@pytest.mark.parametrize("key", list(SCREENS))
def test_screen_opens_in_the_app_shell_without_errors(driver, lab, key):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = screens.get(key)
    wait = WebDriverWait(
        driver, PAGE_TIMEOUT_S, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,)
    )

    def click(d) -> bool:
        btn = next(
            (
                b
                for b in d.find_elements(By.CSS_SELECTOR, ".rp-app .rp-nav button")
                if b.text.strip() == s.title
            ),
            None,
        )
        if btn is None:
            return False
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn)
        btn.click()
        return True

    wait.until(click)
    marker = SCREENS[key]

    def drawn(d) -> bool:
        app = d.find_element(By.CSS_SELECTOR, ".rp-app")
        if s.help not in app.find_element(By.CSS_SELECTOR, ".rp-help").text:
            return False
        return (
            bool(app.find_elements(By.CSS_SELECTOR, marker)) if marker.startswith(".") else marker in app.text
        )

    try:
        wait.until(drawn)
    finally:
        p = shot(driver, lab["tmp"], f"screen-{key}")
    app = driver.find_element(By.CSS_SELECTOR, ".rp-app")
    errors = [
        e.text for e in app.find_elements(By.CSS_SELECTOR, ".rp-error") if e.is_displayed() and e.text.strip()
    ]
    assert not errors, f"{key}: {errors}"
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body and not driver.find_elements(
        By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr']"
    ), key
    assert not driver.execute_script(BLANK_SELECTS), key
    assert p.stat().st_size > 10_000
