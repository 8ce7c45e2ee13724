"""App mode in a real browser: ``rackpilot console`` (Voilà) serves 00_console as a web app
and Debian's headless Chromium (Selenium, /usr/bin/chromedriver, no downloads) uses it as
an operator who never sees code would: the page shows the sign-in form (the demo
credentials in the server's environment are not handed to the page's kernel), the operator
signs in through the form, the app says "signed in as" once, names the jobs, draws the
reports' charts, shows no code, no traceback and no blank selector, and Sign out brings the
form back. Screenshots go to the test folder (and RACKPILOT_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time

import pytest

from tests.browser.jlab import (
    BLANK_SELECTS,
    chromium,
    click_labelled,
    free_port,
    needs_chromium,
    shot,
    stop,
    waiter,
    whole_ids,
)
from tests.integration.console_support import PASSWORD, make_console_env, scp_job

PAGE_TIMEOUT_S = 90  # Voilà runs the notebook before the page shows; sign-in and reads, on 2 loaded cores (s)

pytestmark = needs_chromium


def wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rackpilot console exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"rackpilot console did not listen on {port} in {timeout} s")


@pytest.fixture
def app(stack, tmp_path):
    pytest.importorskip("voila")
    ce = make_console_env(stack)
    job = scp_job(ce)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **stack.env(),
        # set as a demo would: the app must drop them, or every visitor would be this admin
        "RACKPILOT_CONSOLE_EMAIL": ce.emails["admin"],
        "RACKPILOT_CONSOLE_PASSWORD": PASSWORD,
        "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp_path / "session"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    log = (tmp_path / "console.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "console", f"--port={port}", f"--token={token}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(port, 60, proc)  # Voilà with one notebook has no /api/status; GET / runs it
        first = (tmp_path / "console.log").read_text().splitlines()[0]
        assert first == f"rackpilot console: http://127.0.0.1:{port}/?token={token}"
        yield {"url": f"http://127.0.0.1:{port}/?token={token}", "ce": ce, "job": job, "tmp": tmp_path}
    finally:
        stop(proc)  # the command became Voilà: SIGTERM stops it and its kernels
        log.close()
        ce.close()


def test_app_mode_signs_in_in_the_page_and_shows_the_console_without_code(app):
    tmp = app["tmp"]
    with chromium(tmp / "chromium") as d:
        try:
            use_the_app(d, app)
        finally:
            shot(d, tmp, "app-mode-last")


def sign_in(d, email: str, password: str, tries: int = 3) -> None:
    """Type and send the credentials; wait until the app's navigation shows. On a cold,
    loaded machine the first click can reach the kernel before the typed values did
    (a CI run met "wrong email or password" with both fields filled in): a refusal is
    retyped and sent again, up to ``tries`` times, so a wrong password still fails."""
    from selenium.webdriver.common.by import By

    def outcome(d):
        if d.find_elements(By.CSS_SELECTOR, ".rp-nav button"):
            return "in"
        return "refused" if "sign-in refused" in d.find_element(By.TAG_NAME, "body").text else False

    for attempt in range(1, tries + 1):
        for css, value in (
            ("input[placeholder='you@example.com']", email),
            ("input[type='password']", password),
        ):
            field = d.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(value)
        next(b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Sign in").click()
        result = waiter(d, PAGE_TIMEOUT_S).until(outcome)
        if result == "in":
            return
        assert attempt < tries, (
            f"sign-in refused {tries} times: " + d.find_element(By.TAG_NAME, "body").text[:300]
        )
        # the refusal line of this try must go before the next is judged
        d.execute_script(
            "for (const e of document.querySelectorAll('*')) if (e.children.length === 0 && "
            "e.textContent.includes('sign-in refused')) e.textContent = '';"
        )


def use_the_app(d, app) -> None:
    from selenium.webdriver.common.by import By

    tmp, ce = app["tmp"], app["ce"]
    wait = waiter(d, PAGE_TIMEOUT_S)

    def body() -> str:
        return d.find_element(By.TAG_NAME, "body").text

    def nav(title: str) -> None:
        click_labelled(d, ".rp-nav button", title, PAGE_TIMEOUT_S, poll=0.3)

    d.get(app["url"])
    # the form, not the admin of the server's environment, and no code on the page
    email = wait.until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='you@example.com']") or False
    )
    assert len(email) == 1, "one sign-in form on the page"
    text = body()
    assert "not signed in" in text and "signed in as" not in text
    assert "console.connect" not in text and "import console" not in text  # no code cells
    shot(d, tmp, "app-mode-sign-in")
    sign_in(d, ce.emails["operator"], PASSWORD)

    # signed in: the app with its navigation, "signed in as" once, the jobs by short id
    nav("Jobs")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-jobs tbody tr") or False)
    text = body()
    assert text.count("signed in as") == 1, text[:400]
    assert ce.emails["operator"] in text and "(role: operator)" in text
    assert app["job"][:8] in text and not whole_ids(ce.conn, text), "names and short ids, not UUIDs"
    assert PASSWORD not in d.page_source and "Traceback" not in text
    assert not d.execute_script(BLANK_SELECTS)
    titles = {b.text.strip() for b in d.find_elements(By.CSS_SELECTOR, ".rp-nav button")}
    assert "Server update" in titles and "Credentials" not in titles  # what an operator may open
    shot(d, tmp, "app-mode-jobs")

    # reports: the first report loads with its chart
    nav("Reports")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-app svg.rp-chart") or False)
    assert not whole_ids(ce.conn, body()) and not d.execute_script(BLANK_SELECTS)
    shot(d, tmp, "app-mode-reports-chart")

    # sign out: the form is back
    next(b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Sign out").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='you@example.com']") or False)
    assert "not signed in" in body()
