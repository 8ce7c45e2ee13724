"""The sign-in/jobs notebook in a real browser: JupyterLab on a loopback port with a
token, Debian's headless Chromium driven by Selenium through /usr/bin/chromedriver (no
browser downloads; tests/browser/jlab.py). Run All, then the rendered job list must show
the stack's jobs. A screenshot is left in the test's tmp dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser.jlab import chromium, console_jupyterlab, needs_chromium, run_all
from tests.integration.console_support import PASSWORD, make_console_env, scp_job

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_sign_in_and_jobs.ipynb"
PAGE_TIMEOUT_S = 45  # JupyterLab page, kernel start and the notebook's cells on a loaded machine (s)

pytestmark = needs_chromium


@pytest.fixture
def lab(stack, tmp_path):
    """JupyterLab serving a copy of the notebook (so nothing is written into the repo)."""
    ce = make_console_env(stack)
    jobs = [scp_job(ce) for _ in range(2)]
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # the notebook gets what an operator's Jupyter would (no service key, no database)
    with console_jupyterlab(stack, ce, "operator", root, tmp_path) as jl:
        yield {"jupyterlab": jl, "jobs": jobs, "email": ce.emails["operator"]}


def test_jobs_notebook_renders_job_rows_in_chromium(lab, tmp_path):
    from selenium.webdriver.common.by import By

    shot = tmp_path / "jobs-notebook.png"
    with chromium(tmp_path / "chromium", window="1400,1000") as driver:
        try:
            wait = run_all(driver, lab["jupyterlab"], NOTEBOOK.name, PAGE_TIMEOUT_S)
            rows = wait.until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "table.rp-jobs tbody tr.rp-row") or False
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
