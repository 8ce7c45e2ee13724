"""Every notebook of notebooks/ in a real browser, and the blocker wizard clicked through.

One JupyterLab (on loopback, with a token) serves copies of the notebooks; Debian's headless
Chromium (Selenium, /usr/bin/chromedriver, no downloads) opens each one, runs it all as an
admin would (the sign-in from the environment, as in a demo) and checks what is on the page:
the notebook's own content, no traceback or stderr output, no red error line, no blank
selector, no whole UUID where a name or short id belongs, "signed in as" once, and charts
where the notebook draws them. In 03_blockers the test then decides the paused job's blocker
in the wizard's row selector and saves: the control plane records the decision and the job
resumes. A screenshot per notebook goes to the test folder (and RACKPILOT_SCREENSHOT_DIR)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser.jlab import (
    BLANK_SELECTS,
    EMPTY_SELECTS,
    RAN_ALL,
    chromium,
    console_jupyterlab,
    needs_chromium,
    run_all,
    shot,
    whole_ids,
)
from tests.integration._functions_support import insert_blocker, q
from tests.integration.console_support import PASSWORD, claim, make_console_env, report_history, scp_job

PAGE_TIMEOUT_S = 120  # a notebook's kernel start, sign-in and every cell on a loaded 2-core machine (s)
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# what only each notebook draws once its cells ran (CSS selectors, all of them)
MARKERS = {
    "00_console": [".rp-app .rp-nav button", ".rp-jobs"],
    "01_sign_in_and_jobs": [".rp-jobs tbody tr", ".rp-monitor"],
    "02_rolling_update": [
        ".rp-wizard",
        ".rp-cluster-pick select",
        ".rp-servers",
        ".rp-list-credential_set_ids select",
    ],
    "03_blockers": [".rp-blocked-job-pick select", "table.rp-blockers tbody tr"],
    "04_windows_and_approvals": [".rp-windows"],
    "05_reports": ["svg.rp-chart", ".rp-v_host_history", "svg.rp-lag-plot", ".rp-audit-chain"],
    "06_admin": [".rp-notify", ".rp-breakglass-sessions"],
}

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def lab(stack, tmp_path_factory):
    ce = make_console_env(stack)
    report_history(ce)  # 05_reports charts compliance over time and replication lag
    f = ce.fleet
    host = f.hosts[f.clusters[0]][0]
    job = scp_job(ce, f.host_servers[host])  # a job paused for a blocker, so 03 draws its wizard
    claim(ce, job)
    vm = next(v for v, h in f.vms.items() if h == host)
    blocker = insert_blocker(ce.conn, job, host, vm)
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", job)
    tmp = tmp_path_factory.mktemp("notebooks")
    root = tmp / "lab"
    root.mkdir()
    for nb in NOTEBOOKS:
        shutil.copy(nb, root / nb.name)
    # the notebooks get what an operator's Jupyter would (no service key, no database)
    (tmp / "exports").mkdir()
    with console_jupyterlab(
        stack, ce, "admin", root, tmp, startup_s=60, RACKPILOT_CONSOLE_EXPORT_DIR=str(tmp / "exports")
    ) as jl:
        yield {"jupyterlab": jl, "tmp": tmp, "ce": ce, "job": job, "blocker": blocker}


@pytest.fixture(scope="module")
def driver(lab):
    with chromium(lab["tmp"] / "chromium") as d:
        yield d


def run_notebook(driver, lab, name: str):
    """Open the notebook, Run All once the kernel is there, wait until every code cell ran."""
    wait = run_all(driver, lab["jupyterlab"], f"{name}.ipynb", PAGE_TIMEOUT_S, poll=0.5)
    wait.until(lambda d: d.execute_script(RAN_ALL))
    return wait


def shut_down(driver) -> None:
    """Stop the notebook's kernel (one kernel at a time on a loaded machine)."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const w = window.jupyterapp.shell.currentWidget;"
        "(w && w.sessionContext ? w.sessionContext.shutdown() : Promise.resolve()).then(() => done(true), () => done(false));"
    )


def no_blank_selector(driver, settle_s: float = 10.0) -> bool:
    """No visible selector is blank (options but none shown) or empty (no option at all),
    once the page settled: a selector drawn a moment before its state arrived passes when it
    fills in, one built the wrong way (options given after creation) stays blank and fails."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def clean(d) -> bool:
        return not d.execute_script(BLANK_SELECTS) and not d.execute_script(EMPTY_SELECTS)

    try:
        WebDriverWait(driver, settle_s, poll_frequency=0.5).until(clean)
    except TimeoutException:
        raise AssertionError(
            f"blank: {driver.execute_script(BLANK_SELECTS)} empty: {driver.execute_script(EMPTY_SELECTS)}"
        ) from None
    return True


def outputs_text(driver) -> str:
    return "\n".join(
        driver.execute_script(
            "return [...document.querySelectorAll('.jp-OutputArea')].filter(o => o.offsetParent !== null)"
            ".map(o => o.innerText)"
        )
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_the_browser_with_names_charts_and_no_errors(driver, lab, path):
    from selenium.webdriver.common.by import By

    name = path.stem
    wait = run_notebook(driver, lab, name)
    try:
        for marker in MARKERS[name]:
            wait.until(lambda d, m=marker: d.find_elements(By.CSS_SELECTOR, m) or False)
    finally:
        p = shot(driver, lab["tmp"], f"notebook-{name}")
    try:
        text = outputs_text(driver)
        assert "Traceback" not in text and not driver.find_elements(
            By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr']"
        ), name
        errors = [
            e.text
            for e in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .rp-error")
            if e.is_displayed() and e.text.strip()
        ]
        assert not errors, f"{name}: {errors}"
        assert no_blank_selector(driver), name
        ids = whole_ids(lab["ce"].conn, text)
        assert not ids, f"{name}: a whole id on the page: {ids}"
        assert text.count("signed in as") == 1, name
        assert PASSWORD not in driver.page_source
        if name in ("01_sign_in_and_jobs", "03_blockers"):
            assert lab["job"][:8] in text  # the job by its short id
        if name == "05_reports":
            charts = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea svg.rp-chart")
            assert len(charts) >= 2 and "success rate per job type" in text
            assert "servers compliant after each inventory / compliance run" in text
        assert p.stat().st_size > 10_000
    finally:
        shut_down(driver)


def test_blocker_wizard_decides_and_resumes_in_the_browser(driver, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ce = lab["ce"]
    wait = run_notebook(driver, lab, "03_blockers")
    try:
        row_select = wait.until(
            lambda d: next(
                (
                    s
                    for s in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea select")
                    if s.is_displayed() and "— decide —" in s.text
                ),
                False,
            )
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row_select)
        Select(row_select).select_by_visible_text("I moved the VM myself")
        wait.until(lambda d: "migrate_manually_done" in outputs_text(d))  # the table shows the decision
        save = next(
            b
            for b in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea button")
            if b.text == "Save decisions"
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", save)
        save.click()
        wait.until(lambda d: "decision(s) saved" in outputs_text(d))
        shot(driver, lab["tmp"], "blocker-wizard-saved")
        text = outputs_text(driver)
        assert "1 decision(s) saved; job is pending and resumed" in text, text[-600:]
        assert not whole_ids(ce.conn, text) and "Traceback" not in text
        row = q(ce.conn, "select status::text from public.job_blockers where id = %s", lab["blocker"])[0]
        job = q(ce.conn, "select status::text from public.jobs where id = %s", lab["job"])[0]
        assert (row["status"], job["status"]) == ("resolved", "pending")
    finally:
        shot(driver, lab["tmp"], "blocker-wizard-last")
        shut_down(driver)


def test_fleet_servers_show_in_a_data_grid_in_the_browser(driver, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = f"site-a-{lab['ce'].tag}"
    wait = run_notebook(driver, lab, "02_rolling_update")
    try:
        pick = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-fleet-site select") or False)[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", pick)
        Select(pick).select_by_visible_text(site)
        grid = wait.until(
            lambda d: next(
                (g for g in d.find_elements(By.CSS_SELECTOR, ".rp-grid.rp-servers") if g.is_displayed()),
                False,
            )
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
        assert grid.size["height"] > 40 and grid.find_elements(By.TAG_NAME, "canvas")  # drawn by the grid
        assert "Traceback" not in outputs_text(driver)
        shot(driver, lab["tmp"], "fleet-data-grid")
    finally:
        shut_down(driver)
