"""The job form against the real local stack (issue 19, "forms from the job schemas"): no
field of any job type is a raw JSON box. Credential sets are picked by name, in the order
they are tried; address ranges and host names are list editors that refuse a bad entry in
words as it is added; a nested selection (the firmware selection, the ESXi image) is its own
group of typed fields. The request they build passes create-job's dry run."""

from __future__ import annotations

import ipywidgets as w
import pytest

from console.models.form_fields import field_specs
from console.models.job_form import FORM_JOB_TYPES, JobForm
from console.widgets.job_form import JobFormView, ListEditor, NestedFields
from tests.integration._functions_support import q
from tests.integration.console_support import CATALOG, make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    e.close()


def all_widgets(root: w.Widget):
    yield root
    for c in getattr(root, "children", ()):
        yield from all_widgets(c)


def test_no_job_type_has_a_json_box(ce):
    assert {(jt, s.name) for jt in FORM_JOB_TYPES for s in field_specs(jt) if s.kind == "json"} == set()
    for jt in FORM_JOB_TYPES:
        view = JobFormView(JobForm(ce.api("operator"), jt))
        boxes = [x.description for x in all_widgets(view.fields) if isinstance(x, w.Textarea)]
        assert boxes == [], f"{jt}: raw JSON boxes {boxes}"


def test_discovery_form_pickers_and_words(ce):
    creds = {}
    for name in ("idrac-a", "idrac-b"):
        creds[name] = str(
            q(
                ce.conn,
                "insert into public.credential_sets (site_id, name, kind, username) "
                "values (%s, %s, 'idrac', 'root') returning id",
                ce.fleet.site_a,
                f"{name}-{ce.tag}",
            )[0]["id"]
        )
    view = JobFormView(JobForm(ce.api("operator"), "discovery_scan"))
    ranges, hosts, cred = (view._inputs[n] for n in ("ranges", "hosts", "credential_set_ids"))
    assert isinstance(ranges, ListEditor) and isinstance(cred, ListEditor)

    # credential sets by name, never a blank selector, added in priority order
    labels = [label for label, _ in cred.entry.options]
    assert f"idrac-b-{ce.tag}" in labels and not any(len(x) == 36 and x.count("-") == 4 for x in labels)
    assert cred.entry.value is None and cred.entry.label  # the explicit placeholder
    for name in ("idrac-b", "idrac-a"):
        cred.entry.value = creds[name]
        cred.add.click()
    assert cred.value == [creds["idrac-b"], creds["idrac-a"]]
    cred.add.click()  # the same one again
    assert "already in the list" in cred.status.value and len(cred.value) == 2
    shown = " ".join(x.value for x in all_widgets(cred.rows) if isinstance(x, w.HTML))
    assert f"1. idrac-b-{ce.tag}" in shown and f"2. idrac-a-{ce.tag}" in shown  # the order tried
    assert creds["idrac-a"] not in shown  # names, not ids

    # ranges: refused in words as they are added, nothing added
    for bad, words in (
        ("10.0.0.x", "an address, a range a-b, or a network in CIDR form"),
        ("10.0.0.300/24", "is not an address, a range a-b or a CIDR network"),
        ("10.0.0.9-10.0.0.1", "the first address must not be after the last"),
    ):
        ranges.entry.value = bad
        ranges.add.click()
        assert words in ranges.status.value and "pattern" not in ranges.status.value, ranges.status.value
        assert "^" not in ranges.status.value
    assert ranges.value == []
    ranges.entry.value = "127.0.0.1-127.0.0.2"
    ranges.add.click()
    assert ranges.value == ["127.0.0.1-127.0.0.2"] and ranges.entry.value == ""
    hosts.entry.value = "bad host!"
    hosts.add.click()
    assert "a host name or address" in hosts.status.value and hosts.value == []

    # the plan on screen goes stale when a list changes; the request passes create-job's dry run
    site_picker = view._pick["site_id"]
    site_picker.value = ce.fleet.site_a
    view._inputs["scheme"].value = "http"
    view.dry.click()
    assert "dry run passed" in view.status.value, view.status.value
    assert view.plan.value
    params, _ = view._request()
    assert params["ranges"] == ["127.0.0.1-127.0.0.2"]
    assert params["credential_set_ids"] == [creds["idrac-b"], creds["idrac-a"]]
    ranges.remove("127.0.0.1-127.0.0.2")
    assert view.plan.value == "" and "run the dry run again" in view.status.value
    assert "removed" in ranges.status.value


def test_nested_firmware_selection_is_typed_fields(ce):
    view = JobFormView(JobForm(ce.api("operator"), "firmware_update"))
    fw = view._inputs["firmware"]
    assert isinstance(fw, NestedFields)
    assert set(fw.inputs) >= {"catalog_url", "catalog_id", "baseline_id", "components", "allow_downgrade"}
    comps = fw.inputs["components"]
    assert isinstance(comps, ListEditor)
    fw.inputs["catalog_url"].value = "ftp://nope"
    comps.entry.value = "BIOS"
    comps.add.click()
    view._pick["server_ids"].value = (ce.fleet.standalone_server,)
    view.dry.click()
    # the nested field's problem in words, named by its place
    assert "catalog URL: an http(s) URL" in view.status.value, view.status.value
    fw.inputs["catalog_url"].value = CATALOG
    params, _ = view._request()
    assert params["firmware"]["catalog_url"] == CATALOG and params["firmware"]["components"] == ["BIOS"]
