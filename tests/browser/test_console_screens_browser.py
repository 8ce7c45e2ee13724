"""Every screen of the AppShell in a real browser. One JupyterLab and one headless Chromium
(Debian's, through /usr/bin/chromedriver) serve the whole module; a notebook draws
``con.app()`` for an admin, and each test clicks one screen in the navigation and checks what
is on the page: the screen's own content, no red error line, no traceback, no blank or empty
selector, no whole UUID where a name or short id belongs, and the charts where the screen
draws them. A screenshot per screen, ``screen-<key>.png``, goes to the test folder and to
test-output/screenshots/ (docs/console.md lists them)."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from console import screens
from tests.browser.jlab import (
    BLANK_SELECTS,
    EMPTY_SELECTS,
    chromium,
    click_labelled,
    console_jupyterlab,
    needs_chromium,
    run_all,
    shot,
    waiter,
    whole_ids,
)
from tests.integration.console_support import make_console_env, scp_job

PAGE_TIMEOUT_S = 60  # JupyterLab, kernel start, sign-in and a screen's reads on a loaded 2-core machine (s)
# each screen and what only it draws once its reads are done: a CSS selector (".class" or
# "tag.class"), else a text
SCREENS = {
    "jobs": ".rp-jobs",
    "update": ".rp-wizard .rp-cluster-pick",
    "blockers": ".rp-blocked-job-pick",
    "new_job": ".rp-job-fields",
    "windows": ".rp-windows",
    "fleet": ".rp-servers",
    "reports": "svg.rp-chart",
    "force_resume": ".rp-stuck",
    "credentials": "Credential sets of the site",
    "notifications": ".rp-notify",
    "discovery": "Scan and register",
    "catalogs": ".rp-catalogs",
    "schedules": ".rp-schedules",  # and its typed params form, checked below
    "calls": ".rp-bmc-calls",
    "replication": ".rp-replication",
    "audit": ".rp-audit-chain",
    "identity": ".rp-breakglass-sessions",
}

pytestmark = needs_chromium


def test_every_screen_of_the_console_is_opened_here():
    """A screen registered later gets its browser check and its screenshot, or this fails."""
    assert sorted(SCREENS) == sorted(s.key for s in screens.all_screens())


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
    with console_jupyterlab(stack, ce, "admin", root, tmp) as jl:
        yield {"jupyterlab": jl, "tmp": tmp, "ce": ce}


@pytest.fixture(scope="module")
def driver(lab):
    """One Chromium on the notebook, Run All done and the AppShell drawn."""
    from selenium.webdriver.common.by import By

    with chromium(lab["tmp"] / "chromium") as d:
        wait = run_all(d, lab["jupyterlab"], "app.ipynb", PAGE_TIMEOUT_S)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-app .rp-nav button"))
        yield d


@pytest.mark.parametrize("key", list(SCREENS))
def test_screen_opens_in_the_app_shell_without_errors(driver, lab, key):
    from selenium.webdriver.common.by import By

    s = screens.get(key)
    wait = waiter(driver, PAGE_TIMEOUT_S)
    click_labelled(driver, ".rp-app .rp-nav button", s.title, PAGE_TIMEOUT_S, poll=0.3)
    marker = SCREENS[key]

    def drawn(d) -> bool:
        app = d.find_element(By.CSS_SELECTOR, ".rp-app")
        helps = app.find_elements(By.CSS_SELECTOR, ".rp-help")
        if s.help and not (helps and s.help in helps[0].text):
            return False
        return (
            bool(app.find_elements(By.CSS_SELECTOR, marker))
            if re.match(r"^[a-z]*\.", marker)
            else marker in app.text
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
    assert not driver.execute_script(EMPTY_SELECTS), key
    text = app.text
    ids = whole_ids(lab["ce"].conn, text)
    assert not ids, f"{key}: a whole id on the page: {ids}"
    if key == "reports":  # the first report's charts, drawn as SVG
        assert app.find_elements(By.CSS_SELECTOR, "svg.rp-chart rect.rp-bar"), key
        assert "success rate per job type" in text
    if key == "schedules":  # a new schedule's params: the job form's typed fields, no JSON box
        form = app.find_element(By.CSS_SELECTOR, ".rp-schedule-params")
        assert form.find_elements(By.CSS_SELECTOR, ".rp-job-fields") and not form.find_elements(
            By.TAG_NAME, "textarea"
        )
    assert p.stat().st_size > 10_000
