"""Driving JupyterLab (and Voilà's pages) in a real browser, shared by the browser tests.

JupyterLab runs on a loopback port with a token (`jupyterlab`); Debian's headless Chromium is
driven by Selenium through /usr/bin/chromedriver, never downloading a browser or a driver
(`chromium`). `run_all` opens a notebook and runs every cell; `click_labelled` clicks a button
by its text, finding it again when a redraw replaced it; `shot` leaves a screenshot in the
test's folder and under its stable name in test-output/screenshots/ (RACKPILOT_SCREENSHOT_DIR
when set). The scripts `BLANK_SELECTS` and `EMPTY_SELECTS` list the visible selectors an
operator would see blank.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.proc import spawn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# the mark of every browser test module: `pytestmark = needs_chromium`
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)",
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# every table with a uuid id (public and auth): what a whole UUID on a page may be the id of
ID_TABLES_SQL = """
select format('%I.%I', n.nspname, c.relname)
from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
where a.attname = 'id' and a.atttypid = 'uuid'::regtype and not a.attisdropped
  and c.relkind in ('r', 'p') and n.nspname in ('public', 'auth')
"""


def whole_ids(conn: Any, text: str) -> list[str]:
    """The whole UUIDs in ``text`` that are the id of a row, each with its table: where the
    console shows a whole id in the place of a name or a short id. Another UUID-shaped text
    is what someone typed into a name or a description, shown as typed: the page lists every
    row the user may see, and under `make test` other tests' rows share the database."""
    found = sorted(set(UUID.findall(text)))
    if not found:
        return []
    hits: list[str] = []
    with conn.cursor() as cur:
        cur.execute(ID_TABLES_SQL)
        for (table,) in cur.fetchall():
            cur.execute(f"select id::text from {table} where id = any(%s::uuid[])", (found,))
            hits += [f"{row_id} ({table})" for (row_id,) in cur.fetchall()]
    return hits


# visible single-choice selectors with options but none shown: a blank box to an operator
BLANK_SELECTS = """
return [...document.querySelectorAll('select:not([multiple])')].filter(s => s.offsetParent !== null && s.options.length > 0
  && (s.selectedIndex < 0 || !s.options[s.selectedIndex].text.trim())).map(s => s.outerHTML.slice(0, 120));
"""
# a visible single-choice selector with no option at all is a blank box as well
EMPTY_SELECTS = """
return [...document.querySelectorAll('select:not([multiple])')].filter(s => s.offsetParent !== null
  && s.options.length === 0).map(s => s.outerHTML.slice(0, 120));
"""
# the notebook named by arguments[0] is the current tab, with its kernel and its cells drawn
_NOTEBOOK_OPEN = """
const a = window.jupyterapp; const w = a && a.shell.currentWidget;
return !!(w && w.context && w.context.path && w.context.path.endsWith(arguments[0]) && w.sessionContext
  && w.sessionContext.session && w.sessionContext.session.kernel && w.content && w.content.widgets.length);
"""
# every code cell of the current notebook ran and its kernel is idle
RAN_ALL = """
const a = window.jupyterapp; const w = a && a.shell.currentWidget;
if (!(w && w.sessionContext && w.sessionContext.session && w.content)) return false;
const k = w.sessionContext.session.kernel;
const code = w.content.widgets.filter(c => c.model.type === 'code');
return !!k && k.status === 'idle' && code.length > 0 && code.every(c => c.model.executionCount !== null);
"""


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


def console_env(stack: Any, email: str, password: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's Jupyter: the stack's public settings and the console's
    sign-in, Jupyter's own folders under ``tmp``, and never the service key or the database."""
    env = {
        **os.environ,
        **stack.env(),
        "RACKPILOT_CONSOLE_EMAIL": email,
        "RACKPILOT_CONSOLE_PASSWORD": password,
        "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp / "session"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
        "JUPYTER_CONFIG_DIR": str(tmp / "cfg"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"),
        **extra,
    }
    env.pop("SUPABASE_SERVICE_ROLE_KEY", None)
    env.pop("SUPABASE_DB_URL", None)
    return env


@dataclass(frozen=True)
class JupyterLab:
    base: str
    token: str

    def url(self, notebook: str) -> str:
        """The page that opens ``notebook`` (a file name under the served folder)."""
        return f"{self.base}/lab/tree/{notebook}?token={self.token}"


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM (JupyterLab and Voilà stop their kernels on it), SIGKILL if it does not end."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def jupyterlab(root: Path, env: Mapping[str, str], log: Path, startup_s: float = 30) -> Iterator[JupyterLab]:
    """JupyterLab serving ``root`` on a loopback port with a fresh token, until the block ends."""
    port, token = free_port(), secrets.token_hex(16)
    args = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",  # no news fetched (the question itself: console/jupyter/)
        "--ServerApp.port_retries=0",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    args += ["--allow-root"] if os.geteuid() == 0 else []  # CI and the dev machines run as root
    with log.open("w") as out:
        # the console's JupyterLab setting defaults (no "Jupyter news?" question), as the demo's
        lab_env = {
            **env,
            "JUPYTER_CONFIG_PATH": str(Path(__file__).resolve().parents[2] / "console" / "jupyter"),
        }
        proc = spawn(args, new_session=False, env=lab_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", startup_s)
            yield JupyterLab(f"http://127.0.0.1:{port}", token)
        finally:
            stop(proc)


@contextmanager
def chromium(profile: Path, window: str = "1400,1800") -> Iterator[Any]:
    """Debian's headless Chromium under Selenium, with its profile in ``profile``; quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

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
        f"--user-data-dir={profile}",
        f"--window-size={window}",
    ):
        opts.add_argument(arg)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def console_jupyterlab(
    stack: Any, ce: Any, role: str, root: Path, tmp: Path, startup_s: float = 30, **extra: str
) -> Iterator[JupyterLab]:
    """JupyterLab serving ``root`` to the console user of ``role`` in ``ce`` (a
    tests.integration.console_support.ConsoleEnv; :func:`console_env`), its log in
    ``tmp``/jupyter.log. On the way out it stops, and ``ce`` signs out and closes."""
    from tests.integration.console_support import PASSWORD

    try:
        env = console_env(stack, ce.emails[role], PASSWORD, tmp, **extra)
        with jupyterlab(root, env, tmp / "jupyter.log", startup_s) as jl:
            yield jl
    finally:
        ce.close()


def waiter(driver: Any, timeout: float, poll: float = 0.3) -> Any:
    """A WebDriverWait that looks again when a redraw replaced an element it held."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout, poll_frequency=poll, ignored_exceptions=(StaleElementReferenceException,)
    )


def run_all(driver: Any, lab: JupyterLab, notebook: str, timeout: float, poll: float = 0.3) -> Any:
    """Open ``notebook`` and, once its kernel is there, Run All; the waiter it used is returned."""
    driver.get(lab.url(notebook))
    wait = waiter(driver, timeout, poll)
    wait.until(lambda d: d.execute_script(_NOTEBOOK_OPEN, notebook))
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return wait


def click_labelled(driver: Any, css: str, text: str, timeout: float, poll: float = 0.2) -> None:
    """Click the element among ``css`` whose text is ``text``, finding it again if a redraw
    replaced it, within ``timeout`` seconds."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt(d: Any) -> bool:
        try:
            btn = next((b for b in d.find_elements(By.CSS_SELECTOR, css) if b.text.strip() == text), None)
            if btn is None:
                return False
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn)
            btn.click()
            return True
        except StaleElementReferenceException:
            return False

    waiter(driver, timeout, poll).until(attempt)


SCREENSHOTS = "test-output/screenshots"  # the default screenshot folder, relative to the repository


def screenshot_dir() -> Path:
    """Where every browser test leaves its screenshots under stable names (docs/console.md lists
    them): RACKPILOT_SCREENSHOT_DIR, else test-output/screenshots/ in the repository."""
    return Path(
        os.environ.get("RACKPILOT_SCREENSHOT_DIR") or Path(__file__).resolve().parents[2] / SCREENSHOTS
    )


def shot(driver: Any, folder: Path, name: str) -> Path:
    """A screenshot ``name``.png in ``folder``, copied to :func:`screenshot_dir` (the same name
    each run, so the newest run's picture of a screen is always at the same path)."""
    # JupyterLab's "get notified about official Jupyter news?" toast would cover the screen
    # in every picture (console/jupyter/ turns it off where JupyterLab starts)
    prompts = driver.find_elements("xpath", "//*[contains(text(), 'official Jupyter news')]")
    assert not prompts, f"{name}: JupyterLab's news prompt is on the screen"
    p = folder / f"{name}.png"
    driver.save_screenshot(str(p))
    out = screenshot_dir()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(p, out / p.name)
    return p
