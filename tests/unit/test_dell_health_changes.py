"""What will change per host and component, and why a host is already compliant
(executor/targets/dell_health.py): the words the rolling update's pre-flight report stores and
the console's preview shows, from a catalog compliance report's rows."""

from __future__ import annotations

from executor.targets.dell_health import catalog_rows, what_will_change

ROWS = [  # ComplianceReport.as_rows()
    {
        "component_id": "159",
        "name": "BIOS",
        "current": "2.1.0",
        "target": "2.3.1",
        "status": "update",
        "criticality": "urgent",
        "reboot_required": True,
    },
    {
        "component_id": "25227",
        "name": "iDRAC",
        "current": "7.10",
        "target": "7.10",
        "status": "current",
        "criticality": None,
        "reboot_required": False,
    },
    {
        "component_id": "999",
        "name": "CPLD",
        "current": "1.0.9",
        "target": None,
        "status": "not_in_catalog",
        "criticality": None,
        "reboot_required": None,
    },
]


def test_changes_per_component_with_criticality_and_reboot():
    changes, why = what_will_change("esx-01", catalog_rows(ROWS))
    assert why is None and changes == [
        {
            "host": "esx-01",
            "component": "BIOS",
            "installed": "2.1.0",
            "target": "2.3.1",
            "criticality": "urgent",
            "reboot": True,
        }
    ]


def test_a_compliant_host_says_why():
    changes, why = what_will_change("esx-02", catalog_rows(ROWS[1:]))
    assert changes == [] and why == (
        "already compliant: 1 component(s) at the catalog version, 1 component(s) not in the catalog"
    )


def test_an_update_the_job_does_not_select_is_not_a_change():
    changes, why = what_will_change("esx-03", catalog_rows(ROWS, ["iDRAC"]))
    assert changes == [] and "1 component(s) outdated but not selected by the job" in why


def test_nothing_known_is_not_compliant():
    assert what_will_change("esx-04", []) == ([], None)
