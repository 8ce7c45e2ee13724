"""executor/jobparams.py: the job parameter models and the JSON Schemas generated from them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from executor import jobparams as jp
from executor import jobtypes

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "supabase" / "functions" / "_shared" / "job-schemas.json"
S1, S2 = str(uuid.uuid4()), str(uuid.uuid4())
CATALOG = {"catalog_url": "https://downloads.example.com/catalog/Catalog.xml.gz"}

VALID = {
    "rolling_cluster_update": {"cluster_id": S1, "firmware": CATALOG},
    "firmware_update": {"server_ids": [S1, S2], "firmware": CATALOG},
    "power_operation": {"server_ids": [S1], "action": "graceful_restart"},
    "virtual_media_mount": {"server_ids": [S1], "image_url": "http://10.0.0.5/isos/esxi-8.0u3.iso"},
    "scp_backup": {"server_ids": [S1]},
    "esxi_upgrade": {"host_ids": [S1], "image": {"target_version": "8.0.3", "depot_url": "https://d/x.zip"}},
    "vcenter_sync": {"vcenter_id": S1},
    "replication_sync": {"replication_pair_ids": [S1]},
    "inventory_refresh": {"site_id": S1},
    "firmware_compliance": {"catalog_url": "https://downloads.example/Catalog.xml.gz", "server_ids": [S1]},
    "discovery_scan": {
        "site_id": S1,
        "ranges": ["10.1.2.0/24", "10.1.3.5-10.1.3.9"],
        "credential_set_ids": [S2],
    },
    "catalog_refresh": {"catalog_id": S1, "stale_after_days": 90},
    "directory_sync": {"site_id": S1},
    "vm_operation": {"vm_ids": [S1, S2], "action": "disconnect_media"},
}


def test_committed_schemas_match_the_models():
    committed = json.loads(SCHEMAS.read_text())
    assert committed == json.loads(json.dumps(jobtypes.json_schemas())), "run scripts/gen_job_schemas.py"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_job_schemas.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def test_every_job_type_has_a_model_and_a_schema():
    committed = json.loads(SCHEMAS.read_text())
    assert set(committed["job_types"]) == {t.value for t in jobtypes.CREATABLE} == set(VALID)
    assert set(committed["job_type_rules"]) == set(VALID)
    assert len(jobtypes.CREATABLE) == 14


@pytest.mark.parametrize("job_type", sorted(VALID))
def test_valid_params_parse_and_name_their_targets(job_type):
    params = jobtypes.parse_params(job_type, VALID[job_type])
    targets = jp.targets_of(job_type, params)
    assert targets and all(isinstance(t[1], uuid.UUID) for t in targets)
    # every x-target field in the schema names a known kind
    schema = jobtypes.json_schemas()["job_types"][job_type]
    kinds = {p["x-target"] for p in schema["properties"].values() if "x-target" in p}
    assert kinds and kinds <= {k.value for k in jp.TargetKind}


@pytest.mark.parametrize(
    "job_type,params,where",
    [
        ("firmware_update", {"server_ids": [], "firmware": CATALOG}, "server_ids"),
        ("firmware_update", {"server_ids": [S1, S1], "firmware": CATALOG}, "server_ids"),
        (
            "firmware_update",
            {"server_ids": [S1], "firmware": {"catalog_url": "ftp://x/Catalog.xml"}},
            "catalog_url",
        ),
        ("firmware_update", {"server_ids": [S1], "firmware": CATALOG, "surprise": 1}, "surprise"),
        ("power_operation", {"server_ids": [S1], "action": "explode"}, "action"),
        ("power_operation", {"server_ids": ["not-a-uuid"], "action": "on"}, "server_ids"),
        (
            "rolling_cluster_update",
            {"cluster_id": S1, "firmware": CATALOG, "max_parallel_hosts": 0},
            "max_parallel_hosts",
        ),
        ("rolling_cluster_update", {"cluster_id": S1}, "firmware"),
        (
            "esxi_upgrade",
            {"host_ids": [S1], "image": {"target_version": "latest", "depot_url": "https://d"}},
            "target_version",
        ),
        ("replication_sync", {"replication_pair_ids": [S1], "keep_snapshots": 0}, "keep_snapshots"),
        ("vm_operation", {"vm_ids": [S1], "action": "delete"}, "action"),
        ("vm_operation", {"vm_ids": [S1], "action": "power_off", "timeout_s": 1}, "timeout_s"),
        ("vm_operation", {"vm_ids": [], "action": "power_off"}, "vm_ids"),
        ("vm_operation", {"vm_ids": [S1, S1], "action": "power_off"}, "vm_ids"),
        ("vm_operation", {"vm_ids": [S1]}, "action"),
    ],
)
def test_invalid_params_are_refused_with_the_field_named(job_type, params, where):
    with pytest.raises(jp.InvalidJobParamsError) as info:
        jobtypes.parse_params(job_type, params)
    assert any(where in ".".join(map(str, e["loc"])) for e in info.value.errors)
    # the error details never carry the offending input (it may be sensitive)
    assert all("input" not in e for e in info.value.errors)


def test_unknown_job_type_is_its_own_error():
    with pytest.raises(jp.UnknownJobTypeError):
        jobtypes.parse_params("format_all_disks", {})
    with pytest.raises(jp.UnknownJobTypeError):  # a test-only type has no params create-job takes
        jobtypes.parse_params("selftest", {})
    assert issubclass(jp.UnknownJobTypeError, jp.JobParamsError)


def test_patterns_are_ascii_only_so_both_regex_engines_agree():
    # Python and JavaScript disagree on what \s and \w match outside ASCII; the schemas must
    # not depend on that.
    text = SCHEMAS.read_text()
    for pattern in re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', text):
        assert "\\s" not in pattern and "\\w" not in pattern and "\\d" not in pattern, pattern
