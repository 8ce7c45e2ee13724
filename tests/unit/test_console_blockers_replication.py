"""The console's blocker wizard answers the replication gate: recheck, and acknowledge with a
reason, for replication_lag blockers only (resolve-blockers holds the same rules)."""

from __future__ import annotations

import uuid

import pytest

from console.errors import ValidationFailed
from console.models.blockers import BlockerWizard
from console.widgets.blockers import BlockerWizardView
from tests.unit.test_console_models import FakeApi


def lag_blocker() -> dict:
    return {
        "id": str(uuid.uuid4()),
        "kind": "replication_lag",
        "host_id": None,
        "vm_id": None,
        "status": "open",
        "server_id": str(uuid.uuid4()),
        "description": "store01 holds the source of replication pair vm-store (tank/vm -> backup/vm), whose "
        "lag is 3.0 h, beyond the allowed 60 min",
    }


def test_recheck_and_acknowledge_with_a_reason_for_replication_blockers_only():
    api = FakeApi()
    lag, usb = (
        lag_blocker(),
        {
            "id": str(uuid.uuid4()),
            "kind": "usb_passthrough",
            "host_id": None,
            "vm_id": str(uuid.uuid4()),
            "status": "open",
            "description": "d",
        },
    )
    api.blockers = [lag, usb]
    wz = BlockerWizard(api, "j")  # type: ignore[arg-type]
    wz.load()
    with pytest.raises(ValidationFailed, match="needs a reason"):
        wz.decide(lag["id"], "acknowledge")
    with pytest.raises(ValidationFailed, match="replication lag blockers only"):
        wz.decide(usb["id"], "acknowledge", note="because")
    with pytest.raises(ValidationFailed, match="replication lag blockers only"):
        wz.decide(usb["id"], "recheck")
    wz.decide(lag["id"], "recheck")
    wz.decide(lag["id"], "acknowledge", note="replica verified by hand")
    wz.decide(usb["id"], "migrate_manually_done")
    # bulk: an override without a reason is skipped, with the reason in words
    assert wz.bulk("acknowledge", only_undecided=False)[0] == 0
    wz.save()
    sent = api.calls[-1][1]["decisions"]
    assert {"blocker_id": lag["id"], "decision": "acknowledge", "note": "replica verified by hand"} in sent


def test_the_wizard_view_sends_the_note_with_the_decision():
    api = FakeApi()
    lag = lag_blocker()
    api.blockers = [lag]
    wz = BlockerWizard(api, "j")  # type: ignore[arg-type]
    wz.load()
    view = BlockerWizardView(wz)
    row = view.rows.children[0]
    label, dd, note = row.children
    assert "vm-store" in label.value  # a server job's blocker names no host or VM: its words are shown
    dd.value = "acknowledge"  # no reason yet: refused in red, nothing decided
    assert lag["id"] not in wz.choices and "reason" in view.status.value
    row = view.rows.children[0]
    _, dd, note = row.children
    note.value = "array retired tonight"
    dd.value = "acknowledge"
    assert (
        wz.choices[lag["id"]].decision == "acknowledge"
        and wz.choices[lag["id"]].note == "array retired tonight"
    )
