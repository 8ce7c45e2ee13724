"""``scp_backup``: export each server's Server Configuration Profile (SCP) into
``artifacts`` (sha256 and size checked by the control plane), and compare it with the
previous backup of the same server.

Steps:

=======  ========  ======================================================================
step     priority  resumable
=======  ========  ======================================================================
export   100       yes: an export only reads the server; servers already stored before an
                   interruption are not exported again
=======  ========  ======================================================================

The artifact holds the profile in the format asked for: SCP XML (what Dell's tools
import) or JSON. The comparison is made on the attributes (component FQDD + attribute
name -> value), so the export timestamp alone never counts as a change; the result of
each server lists added, removed and changed attributes against the previous backup.
The firmware handler calls :func:`take_backup` too (DESIGN.md invariant 4).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from xml.etree import ElementTree as ET

from ..jobparams import ScpBackupParams
from ..steps import JobHandler, Progress, StepContext, step
from ..targets.dell import FAILED, DellOEM
from ..targets.errors import JobFailed, JobStuck, TargetError
from ..targets.redfish import RedfishClient
from ..vocabulary import JobType
from . import register
from ._dell import (
    DellHandlerError,
    call,
    each_server,
    latest_artifact,
    open_servers,
    params_of,
    per_server,
    raise_failures,
    wait,
    wait_lc_ready,
)

DIFF_LIMIT = 200  # attribute changes listed per server (count); the rest is counted


def profile_xml(profile: dict[str, Any]) -> bytes:
    """The SCP XML document of an exported profile (the layout iDRAC exports and imports)."""
    sc = profile.get("SystemConfiguration") or {}
    root = ET.Element(
        "SystemConfiguration", {k: str(sc[k]) for k in ("Model", "ServiceTag", "TimeStamp") if k in sc}
    )
    for comp in sc.get("Components") or []:
        ce = ET.SubElement(root, "Component", FQDD=str(comp.get("FQDD", "")))
        for a in comp.get("Attributes") or []:
            ae = ET.SubElement(ce, "Attribute", Name=str(a.get("Name", "")))
            ae.text = "" if a.get("Value") is None else str(a.get("Value"))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def attributes_of(content: bytes) -> dict[str, dict[str, str]]:
    """{FQDD: {attribute: value}} of a stored backup, JSON or XML."""
    text = content.lstrip()
    out: dict[str, dict[str, str]] = {}
    if text.startswith(b"{"):
        sc = json.loads(text).get("SystemConfiguration") or {}
        for comp in sc.get("Components") or []:
            out[str(comp.get("FQDD"))] = {
                str(a.get("Name")): "" if a.get("Value") is None else str(a.get("Value"))
                for a in comp.get("Attributes") or []
            }
        return out
    root = ET.fromstring(text)
    for comp in root.iter("Component"):
        out[comp.get("FQDD", "")] = {a.get("Name", ""): a.text or "" for a in comp.iter("Attribute")}
    return out


def config_sha256(attrs: dict[str, dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(attrs, sort_keys=True).encode()).hexdigest()


def diff(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    for fqdd in sorted(set(old) | set(new)):
        a, b = old.get(fqdd, {}), new.get(fqdd, {})
        for name in sorted(set(a) | set(b)):
            if name not in a:
                changes.append({"change": "added", "fqdd": fqdd, "name": name, "new": b[name]})
            elif name not in b:
                changes.append({"change": "removed", "fqdd": fqdd, "name": name, "old": a[name]})
            elif a[name] != b[name]:
                changes.append(
                    {"change": "changed", "fqdd": fqdd, "name": name, "old": a[name], "new": b[name]}
                )
    return {
        "unchanged": not changes,
        "count": len(changes),
        "changes": changes[:DIFF_LIMIT],
        "truncated": len(changes) > DIFF_LIMIT,
    }


async def export_profile(
    ctx: StepContext, c: RedfishClient, *, target: str = "ALL", include: str = "Default"
) -> dict[str, Any]:
    """SCP export as JSON: the iDRAC task is waited for through ``ctx.wait_for``
    (state and percent are the progress marker, so a wedged export is told from a slow one)."""
    dell: DellOEM = await call(c.require_dell, "export SCP")
    await wait_lc_ready(ctx, c, "export SCP")
    uri = dell.ext.export_system_configuration_uri
    body = {
        "ExportFormat": "JSON",
        "ExportUse": "Default",
        "IncludeInExport": include,
        "ShareParameters": {"Target": [target]},
    }
    _, resp, headers = await call(c.configure, "export SCP", lambda: dell.post_action(uri, body))
    jid = DellOEM.job_id_from(headers, resp)
    task_path = f"/redfish/v1/TaskService/Tasks/{jid}"
    got: dict[str, Any] = {}

    async def probe() -> Progress:
        code, doc, _ = await call(c.get_json, task_path, "export SCP")
        if code == 200 and "SystemConfiguration" in doc:
            got["profile"] = doc
            return Progress(True, "Completed")
        oem = (doc.get("Oem") or {}).get("Dell") or {}
        state, pct = str(oem.get("JobState", doc.get("TaskState", ""))), int(oem.get("PercentComplete") or 0)
        if state in FAILED or doc.get("TaskState") == "Exception":
            raise JobFailed(
                f"SCP export job {jid} ended {state}: {oem.get('Message', '')}",
                job_id=jid,
                state=state,
                target=c.target,
                operation="export SCP",
            )
        return Progress(False, (state, pct), {"job_id": jid, "percent": pct})

    await wait(
        ctx,
        probe,
        what=f"{c.target}: SCP export {jid}",
        budget=c.timeouts.scp,
        on_stall=lambda why: JobStuck(
            f"SCP export job {jid}: {why}", job_id=jid, target=c.target, operation="export SCP"
        ),
    )
    return got["profile"]


async def take_backup(
    ctx: StepContext,
    c: RedfishClient,
    server: dict[str, Any],
    *,
    components: list[str],
    export_format: str = "XML",
    include_read_only: bool = False,
) -> dict[str, Any]:
    """Export, compare with the previous backup of the server, store. Returns the record
    kept in the job's result (artifact id, sha256, size, diff)."""
    profile = await export_profile(
        ctx, c, target=",".join(components), include="IncludeReadOnly" if include_read_only else "Default"
    )
    if export_format == "XML":
        content, ctype = profile_xml(profile), "application/xml"
    else:
        content, ctype = json.dumps(profile, sort_keys=True, indent=1).encode(), "application/json"
    attrs = attributes_of(content)
    previous = await latest_artifact(ctx, str(server["id"]), "scp_backup")
    stored = await ctx.put_artifact("scp_backup", content, content_type=ctype, server_id=str(server["id"]))
    record: dict[str, Any] = {
        **stored,
        "format": export_format,
        "content_type": ctype,
        "config_sha256": config_sha256(attrs),
        "components": sum(1 for _ in attrs),
        "attributes": sum(len(v) for v in attrs.values()),
    }
    if previous is None:
        record["diff"] = None
        record["previous_artifact_id"] = None
    else:
        try:
            record["diff"] = diff(attributes_of(previous["content"]), attrs)
        except (ValueError, ET.ParseError):
            record["diff"] = {"error": "the previous backup could not be parsed"}
        record["previous_artifact_id"] = str(previous["id"])
    return record


@register
class ScpBackupHandler(JobHandler):
    job_type = JobType.SCP_BACKUP

    def validate(self, job: dict[str, Any]) -> None:
        params_of(job, ScpBackupParams)

    @step(100, resumable=True)
    async def export(self, ctx: StepContext) -> dict[str, Any]:
        p = params_of(ctx.job, ScpBackupParams)
        if "ALL" in p.components and len(p.components) > 1:
            raise DellHandlerError("components: ALL already includes every component; give ALL alone")
        servers, eps = await open_servers(ctx, p.server_ids)

        async def backup(s: dict[str, Any], c: RedfishClient) -> dict[str, Any]:
            return await take_backup(
                ctx,
                c,
                s,
                components=list(p.components),
                export_format=p.export_format,
                include_read_only=p.include_read_only,
            )

        # a backup stored before an interruption is not taken again
        failures = await each_server(ctx, servers, eps, backup, errors=(TargetError, DellHandlerError))
        raise_failures(failures, len(servers))
        return {"stored": sum(1 for v in per_server(ctx).values() if v.get("ok"))}
