"""`python -m devstack.lab.idrac.validate --schemas DIR [--personality idrac9 idrac10]`

Runs the DMTF's Redfish Service Validator (`rf_service_validator`, PyPI
redfish-service-validator) against a simulated iDRAC of each personality, over HTTPS with
a self-signed certificate, and prints one JSON line per personality with its pass, warn and
fail counts. The validator checks every payload against the DMTF schemas, which it cannot
download here: give it a copy of the CSDL folder of DMTF/Redfish-Publications (`--schemas`).
Dell OEM payloads are skipped (`--nooemcheck`): the DMTF bundle has no Dell schemas.

`make redfish-service-validator SCHEMAS=<dir>` runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from .server import Lab, LabThread
from .testing import self_signed_cert


def run(personality: str, schemas: Path, workdir: Path) -> dict:
    cert, key = self_signed_cert(workdir / "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    lab = Lab(1, time_scale=100, ssl_context=ctx, personality=personality)
    logdir = workdir / f"logs-{personality}"
    with LabThread(lab):
        # requests lets REQUESTS_CA_BUNDLE override a tool's own certificate choice
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(cert), "CURL_CA_BUNDLE": str(cert)}
        exe = Path(sys.executable).parent / "rf_service_validator"
        proc = subprocess.run(
            [
                str(exe),
                "-r",
                lab.url(0),
                "-u",
                "root",
                "-p",
                "calvin",
                "--authtype",
                "Session",
                "--schema_directory",
                str(schemas),
                "--logdir",
                str(logdir),
                "--nooemcheck",
                "--timeout",
                "30",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    counts = {}
    table = re.search(
        r"\|\s*PASS\s*\|\s*WARN\s*\|\s*FAIL\s*\|\s*NOT TESTED\s*\|.*?\n.*?\n.*?\|\s*(\d+)\s*\|\s*(\d+)\s*"
        r"\|\s*(\d+)\s*\|\s*(\d+)\s*\|",
        out,
    )
    if table:
        counts = dict(zip(("pass", "warn", "fail", "not_tested"), map(int, table.groups()), strict=True))
    logs = "".join(f.read_text(errors="replace") for f in logdir.glob("*/*.log"))
    warnings = sorted(
        {
            f"{uri.strip()}: {what.strip()}"
            for uri, what in re.findall(r"WARN - (/[^:]+?) \(.*?\): ([^:]+Warning)", logs)
        }
    )
    html = sorted(logdir.glob("*/*.html"))
    return {
        "personality": personality,
        "exit": proc.returncode,
        "counts": counts,
        "warnings": warnings,
        "report": str(html[-1]) if html else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m devstack.lab.idrac.validate", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--schemas", required=True, help="the CSDL folder of a DMTF/Redfish-Publications copy")
    ap.add_argument("--personality", nargs="+", default=["idrac9", "idrac10"])
    ap.add_argument("--workdir", default="", help="where reports go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    schemas = Path(args.schemas).resolve()
    if not any(schemas.glob("*_v1.xml")):
        ap.error(f"{schemas} holds no DMTF CSDL files (*_v1.xml)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rackpilot-rsv-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    worst = 0
    for p in args.personality:
        result = run(p, schemas, workdir)
        print(json.dumps(result), flush=True)
        worst = max(worst, result["exit"])
    return worst


if __name__ == "__main__":
    sys.exit(main())
