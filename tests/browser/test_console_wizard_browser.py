"""The server update wizard and the live monitor in a real browser: JupyterLab on loopback,
Debian's headless Chromium through Selenium and /usr/bin/chromedriver (no downloads).

A notebook draws the wizard for an operator. The test checks what an operator sees: the
first step's cluster selector is not blank (no visible dropdown with options is), Next goes
on, the pre-flight shows what will change per host and component and the hosts already
compliant, a blocking VM's fix decided for later and another's done now (a vm_operation job
followed live, the pre-flight run again), then a typed confirmation creates the job and the wizard becomes the live
monitor, whose phase timeline grows as the executor (played by SQL) reports phases over
Realtime. Screenshots go to the test's folder (and RACKPILOT_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.browser.jlab import (
    BLANK_SELECTS,
    chromium,
    click_labelled,
    console_jupyterlab,
    needs_chromium,
    run_all,
    shot,
    waiter,
)
from tests.integration._functions_support import q
from tests.integration.console_support import CATALOG, PASSWORD, approved_window, claim, make_console_env

PAGE_TIMEOUT_S = 60  # JupyterLab, kernel start, sign-in and the wizard on a loaded 2-core machine (s)

pytestmark = needs_chromium


@pytest.fixture
def lab(stack, tmp_path):
    ce = make_console_env(stack)
    f = ce.fleet
    cluster = f.clusters[0]
    # one cluster to choose (as in the demo), a catalog of the site, an approved window, and
    # compliance that says the first host's BIOS is behind while the others are current
    for other in f.clusters[1:]:
        q(ce.conn, "update public.clusters set site_id = %s where id = %s", f.site_b, other)
    q(
        ce.conn,
        "insert into public.firmware_catalogs (site_id, name, url) values (%s, 'dell-catalog', %s)",
        f.site_a,
        CATALOG,
    )
    cat = q(ce.conn, "select id from public.firmware_catalogs where site_id = %s", f.site_a)[0]["id"]
    q(
        ce.conn,
        "insert into public.firmware_packages (catalog_id, component, version, path, criticality, "
        "reboot_required) values (%s, 'BIOS', '2.20.1', 'bios.exe', 'urgent', true)",
        cat,
    )
    for i, h in enumerate(f.hosts[cluster]):
        q(
            ce.conn,
            "insert into public.server_firmware (server_id, component, version) values (%s, 'BIOS', %s)",
            f.host_servers[h],
            "2.19.1" if i == 0 else "2.20.1",
        )
    approved_window(ce, cluster)
    site_a_cluster = q(ce.conn, "select name from public.clusters where id = %s", cluster)[0]["name"]

    root = tmp_path / "lab"
    root.mkdir()
    nb = new_notebook(
        cells=[
            new_code_cell("import console\ncon = console.connect()"),
            new_code_cell(f"con.update_wizard(site_id='{f.site_a}')"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "wizard.ipynb")
    with console_jupyterlab(stack, ce, "operator", root, tmp_path) as jl:
        yield {"jupyterlab": jl, "ce": ce, "cluster_name": site_a_cluster, "hosts": f.hosts[cluster]}


def click_button(driver, text: str) -> None:
    """Click the wizard's button labelled ``text``, finding it again if a redraw replaced it."""
    click_labelled(driver, ".rp-wizard button", text, PAGE_TIMEOUT_S)


def test_wizard_first_step_preflight_preview_and_live_monitor(lab, tmp_path):
    with chromium(tmp_path / "chromium") as driver:
        try:
            walk_the_wizard(driver, lab, tmp_path)
        finally:
            shot(driver, tmp_path, "wizard-last")


def fix_now(driver, wait, lab, tmp_path) -> None:
    """... or fixed now: the third host's VM powered off by a vm_operation job, asked first,
    followed live (the executor's part played by SQL: claimed, the VM's row off, completed,
    which reaches the page over Realtime), and the pre-flight runs again without it."""
    from selenium.webdriver.common.by import By

    ce = lab["ce"]
    vm_id = next(v for v, h in ce.fleet.vms.items() if h == lab["hosts"][2])
    name = q(ce.conn, "select name from public.vms where id = %s", vm_id)[0]["name"]
    pick = driver.find_element(By.CSS_SELECTOR, ".rp-vm-fix-pick select")
    option = next(
        o
        for o in pick.find_elements(By.TAG_NAME, "option")
        if o.get_attribute("textContent").replace("\xa0", " ").startswith(f"{name} on ")
    )
    option.click()

    def shown(text: str):
        return lambda d: any(
            b.is_displayed() and b.text.strip() == text
            for b in d.find_elements(By.CSS_SELECTOR, ".rp-wizard button")
        )

    wait.until(shown("Power off now"))
    assert not shown("Disconnect media now")(driver)  # USB passthrough: disconnecting media would not do
    click_button(driver, "Power off now")
    wait.until(lambda d: f"Power off {name} now?" in d.find_element(By.CSS_SELECTOR, ".rp-wizard").text)
    click_button(driver, "Yes, do it")
    wait.until(
        lambda d: (
            "the pre-flight runs again when it completes"
            in d.find_element(By.CSS_SELECTOR, ".rp-wizard").text
        )
    )
    jid = str(
        q(
            ce.conn,
            "select id from public.jobs where type = 'vm_operation' and site_id = %s order by created_at desc limit 1",
            ce.fleet.site_a,
        )[0]["id"]
    )
    assert q(ce.conn, "select params from public.jobs where id = %s", jid)[0]["params"]["vm_ids"] == [vm_id]
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".rp-wizard .rp-monitor")) == 1)
    claim(ce, jid)
    q(ce.conn, "update public.vms set power_state = 'off' where id = %s", vm_id)
    q(ce.conn, "update public.jobs set status = 'completed', finished_at = now() where id = %s", jid)
    wait.until(
        lambda d: (
            f"{name}: power it off - done; the pre-flight ran again"
            in d.find_element(By.CSS_SELECTOR, ".rp-wizard").text
        )
    )
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".rp-wizard .rp-monitor"))  # done: closed
    blockers = driver.find_element(By.CSS_SELECTOR, "table.rp-vmblockers").text
    assert name not in blockers and blockers.strip(), blockers  # the other VMs still block
    assert driver.execute_script(BLANK_SELECTS) == []
    shot(driver, tmp_path, "wizard-step3-vm-fix-now")


def walk_the_wizard(driver, lab, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    ce = lab["ce"]
    wait = run_all(driver, lab["jupyterlab"], "wizard.ipynb", PAGE_TIMEOUT_S)

    # step 1: the cluster is chosen and named, not blank; no visible selector is blank
    sel = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-cluster-pick select") or False)[0]
    wait.until(lambda d: sel.get_attribute("value") != "")
    assert (
        driver.execute_script("const s = arguments[0]; return s.options[s.selectedIndex].text", sel)
        == lab["cluster_name"]
    )
    assert driver.execute_script(BLANK_SELECTS) == []
    cat = driver.find_element(By.CSS_SELECTOR, ".rp-catalog-pick select")
    assert "dell-catalog" in driver.execute_script(
        "const s = arguments[0]; return s.options[s.selectedIndex].text", cat
    )
    shot(driver, tmp_path, "wizard-step1-targets")
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text

    # step 2: options and the approved window, then the pre-flight
    click_button(driver, "Next: options")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-window-pick select") or False)
    assert driver.execute_script(BLANK_SELECTS) == []
    click_button(driver, "Next: pre-flight")
    changes = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.rp-changes tbody tr") or False)
    text = driver.find_element(By.CSS_SELECTOR, ".rp-wizard").text
    assert len(changes) == 1 and "BIOS" in changes[0].text and "2.19.1 → 2.20.1" in changes[0].text
    assert "already compliant, will be skipped" in text and "verdict: ready" in text
    assert "at most 1 host(s) out at once" in text
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.rp-hostgates tbody tr")) == len(lab["hosts"])
    for uuid_like in lab["hosts"]:
        assert uuid_like not in text  # names, not ids
    shot(driver, tmp_path, "wizard-step3-preflight")
    # a blocking VM's fix is offered before the job starts: picked by name, confirmed,
    # and its result said in words on the line under it
    fix = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-vm-fix-pick select") or False)[0]
    vm_label = driver.execute_script("return arguments[0].selectedOptions[0].textContent", fix)
    vm_label = vm_label.replace("\xa0", " ")  # the select draws spaces as no-break spaces
    assert "USB passthrough" in vm_label, vm_label
    click_button(driver, "Apply…")
    wait.until(
        lambda d: (
            any(b.is_displayed() for b in d.find_elements(By.CSS_SELECTOR, ".rp-vm-fix-yes button"))
            or any(
                b.is_displayed() and b.text.strip() == "Yes, do it"
                for b in d.find_elements(By.CSS_SELECTOR, ".rp-wizard button")
            )
        )
    )
    click_button(driver, "Yes, do it")
    wait.until(
        lambda d: (
            "will be powered off when the update reaches"
            in d.find_element(By.CSS_SELECTOR, ".rp-wizard").text
        )
    )
    assert driver.execute_script(BLANK_SELECTS) == []
    shot(driver, tmp_path, "wizard-step3-vm-fix")
    fix_now(driver, wait, lab, tmp_path)

    # step 4-5: typed confirmation, create, and the live monitor
    typed = next(
        i
        for i in driver.find_elements(By.CSS_SELECTOR, ".rp-wizard input")
        if i.get_attribute("placeholder") == "the cluster's name, to confirm"
    )
    typed.send_keys(lab["cluster_name"])
    typed.send_keys("\t")
    wait.until(lambda d: d.execute_script("return arguments[0].value", typed) == lab["cluster_name"])
    click_button(driver, "Confirm")

    def start_offered(d) -> bool:
        # a click that landed while a redraw replaced the button is lost: while the wizard
        # still offers Confirm (and not Start update), click it again
        texts = [b.text.strip() for b in d.find_elements(By.CSS_SELECTOR, ".rp-wizard button")]
        if "Start update" in texts:
            return True
        if "Confirm" in texts:
            click_button(driver, "Confirm")
        return False

    waiter(driver, PAGE_TIMEOUT_S * 2, poll=1.0).until(start_offered)
    click_button(driver, "Start update")
    wait.until(
        lambda d: (
            (
                "following it live below" in d.find_element(By.CSS_SELECTOR, ".rp-wizard").text
                and d.find_elements(By.CSS_SELECTOR, ".rp-monitor .rp-host-row")
            )
            or False
        )
    )
    jid = str(
        q(
            ce.conn,
            "select id from public.jobs where cluster_id = %s and type = 'rolling_cluster_update' "
            "order by created_at desc limit 1",
            ce.fleet.clusters[0],
        )[0]["id"]
    )
    claim(ce, jid)
    tasks = q(ce.conn, "select id, target_name from public.job_tasks where job_id = %s order by seq", jid)
    q(
        ce.conn,
        "update public.job_tasks set status = 'skipped', started_at = now(), finished_at = now(), "
        'details = details || \'{"reason": "already compliant"}\' where id = %s',
        tasks[1]["id"],
    )
    for phase, pct in (("backup", 5), ("stage", 15), ("maintenance", 30), ("apply", 50)):
        q(
            ce.conn,
            "update public.job_tasks set status = 'running', started_at = coalesce(started_at, now()), "
            "progress = %s, details = details || jsonb_build_object('phase', %s::text), "
            "updated_at = clock_timestamp() where id = %s",
            pct,
            phase,
            tasks[0]["id"],
        )
        wait.until(
            lambda d, p=phase: d.find_elements(By.CSS_SELECTOR, f".rp-gantt rect.rp-phase-{p}") or False
        )
    mon = driver.find_element(By.CSS_SELECTOR, ".rp-monitor").text
    assert "already compliant" in mon and tasks[0]["target_name"] in mon and "running" in mon
    assert jid not in mon  # the job shows by type, cluster and short id
    # operator may pause: the buttons follow the job's status, which arrives over Realtime
    # apart from the task updates above, so wait for it rather than look once
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rp-monitor .rp-act-pause") or False)
    assert driver.execute_script(BLANK_SELECTS) == []
    driver.execute_script("document.querySelector('.rp-monitor').scrollIntoView({block: 'start'})")
    shot(driver, tmp_path, "monitor-live")
    assert PASSWORD not in driver.page_source
