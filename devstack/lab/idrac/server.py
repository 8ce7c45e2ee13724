"""The simulated iDRAC fleet: many BMCs in one asyncio process, one loopback port each,
each playing an iDRAC9 or an iDRAC10 (`personality`, per BMC).

Scripting from tests: `Lab` (async) or `LabThread` (runs the lab's event loop in a
background thread, for synchronous clients such as sushy). Each BMC also answers an
unauthenticated control API under `/_lab/` so that a lab in another process can be
driven and inspected:

  GET  /_lab/state            this BMC's counters (sessions, peak, jobs, power state)
  POST /_lab/faults           {"fault": value, ...}   (see `Faults`); {"clear": true} resets
  POST /_lab/exhaust-sessions fill the session table with sessions of "another tool"
  POST /_lab/stale-jobs       {"count": n} queue entries that never progress
  GET  /_lab/fleet            counters of every BMC in the process
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from . import multipart as mp
from . import redfish as rf
from . import resources as res
from .bmc import BMC, MANAGER_ID, PERSONALITIES, SYSTEM_ID, Rejected, Timing, dell_error, message_info
from .http import Request, Response, start_server

R = res.R
_OPEN_PATHS = {"/redfish", R, f"{R}/odata", f"{R}/$metadata"}
_SESSIONS = {f"{R}/SessionService/Sessions", f"{R}/Sessions"}
_SESSION_POST = _SESSIONS | {f"{p}/Members" for p in _SESSIONS}
_WRITE_PRIVILEGED = ("POST", "PATCH", "PUT", "DELETE")


def _err(
    status: int, message_id: str, message: str, resolution: str = "", headers: dict[str, str] | None = None
) -> Response:
    return Response.json(dell_error(message_id, message, resolution), status, headers)


def _not_found(path: str) -> Response:
    return _err(
        404,
        "Base.1.12.ResourceMissingAtURI",
        f"The resource at the URI {path} was not found.",
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
    )


def _success() -> dict[str, Any]:
    return rf.patched()


_PUSH_ACTION = "UpdateService.MultipartHttpPushUri"
# the UpdateParameters a multipart push may carry, and whether a value is one the BMC takes
# (the second argument: the URIs of the BMC's firmware inventory)
_PUSH_PARAMETERS: dict[str, Callable[[Any, set[str]], bool]] = {
    "Targets": lambda value, inventory: isinstance(value, list) and all(t in inventory for t in value),
    "@Redfish.OperationApplyTime": lambda value, inventory: value in ("Immediate", "OnReset"),
    "Oem": lambda value, inventory: isinstance(value, dict),
}


def _push_refusal(
    status: int,
    name: str,
    message: str,
    resolution: str,
    args: list[str] | None = None,
    base: str = "Base.1.13.",  # PayloadTooLarge and MissingOrMalformedPart entered the Base registry in 1.13.0
) -> rf.ProtocolError:
    return rf.ProtocolError(status, [message_info(base + name, message, resolution, "Critical", args)])


def _unknown_push_parameter(name: str) -> rf.ProtocolError:
    return _push_refusal(
        400,
        "ActionParameterUnknown",
        f"The action {_PUSH_ACTION} was submitted with the invalid parameter {name}.",
        "Correct the invalid parameter and resubmit the request if the operation failed.",
        [_PUSH_ACTION, name],
        base=rf.BASE,
    )


def _push_parts(parts: dict[str, mp.Part]) -> tuple[dict[str, Any], mp.Part]:
    """The pushed UpdateParameters (a JSON object) and the UpdateFile part; refused when one
    is missing or malformed, or another part than these and Oem ones came along."""
    params_part, file_part = parts.get("UpdateParameters"), parts.get("UpdateFile")
    if params_part is None or file_part is None or not file_part.filename or not file_part.size:
        raise _push_refusal(
            400,
            "MissingOrMalformedPart",
            "The multipart request contains malformed parts or is missing required parts.",
            "Add any missing required parts or correct the malformed parts and resubmit the request.",
        )
    for name in parts:
        if name not in ("UpdateParameters", "UpdateFile") and not name.startswith("Oem"):
            raise _unknown_push_parameter(name)
    try:
        params = json.loads(params_part.head) if params_part.size == len(params_part.head) else None
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise _push_refusal(
            400,
            "MalformedJSON",
            "The request body submitted was malformed JSON and could not be parsed by the receiving service.",
            "Ensure that the request body is valid JSON and resubmit the request.",
            base=rf.BASE,
        )
    return params, file_part


class BMCApp:
    """HTTP front of one BMC."""

    def __init__(self, bmc: BMC, lab: Lab):
        self.bmc = bmc
        self.lab = lab
        self.docs = res.static_documents(bmc)
        key, export_target, import_target = res.scp_action_names(bmc)
        self.actions = {
            f"{res.SYS}/Actions/ComputerSystem.Reset",
            export_target,
            import_target,
            f"{R}/UpdateService/Actions/UpdateService.SimpleUpdate",
            f"{res.DELL_MGR}/DellJobService/Actions/DellJobService.DeleteJobQueue",
            f"{res.DELL_MGR}/DellLCService/Actions/DellLCService.GetRemoteServicesAPIStatus",
            f"{res.DELL_MGR}/DelliDRACCardService/Actions/DelliDRACCardService.iDRACReset",
            f"{res.MGR}/Actions/Manager.Reset",
        } | {
            f"{res.media_base(bmc)}/{s}/Actions/VirtualMedia.{a}Media"
            for s in bmc.virtual_media
            for a in ("Insert", "Eject")
        }
        self.export_target, self.import_target = export_target, import_target
        self._lookup_tables()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"OData-Version": "4.0", "Cache-Control": "no-cache"}
        h.update(extra or {})
        return h

    def _unauthorised(self) -> Response:
        # Quirk reproduced: iDRAC10 (Basic authentication off by default) advertises only
        # its session login; iDRAC9 offers Basic too.
        scheme = (
            'Basic realm="RedfishService"'
            if self.bmc.basic_auth_enabled
            else 'X-Auth-Token realm="RedfishService"'
        )
        return _err(
            401,
            "Base.1.12.NoValidSession",
            "There is no valid session established with the implementation.",
            "Establish a session before attempting any operations.",
            self._headers({"WWW-Authenticate": scheme}),
        )

    async def __call__(self, req: Request) -> Response | None:
        bmc = self.bmc
        if req.path.startswith("/_lab/"):
            return self.control(req)
        bmc.tick()
        if bmc.faults.unreachable or bmc.idrac_down:
            with bmc.lock:
                bmc.dropped += 1
            return None
        if bmc.faults.slow_seconds or self.lab.latency:
            await asyncio.sleep(bmc.faults.slow_seconds + self.lab.latency)
        with bmc.lock:
            bmc.requests += 1
            if bmc.faults.server_errors:
                if bmc.faults.server_errors > 0:
                    bmc.faults.server_errors -= 1
                return _err(
                    500,
                    "SYS446",
                    "Internal server error. The request could not be completed.",
                    "Retry the operation. If the issue persists, reset the iDRAC.",
                )
        try:
            ov = req.headers.get("odata-version")
            if ov is not None and ov.strip() != "4.0":
                raise rf.ProtocolError(
                    412,
                    [
                        rf.base_info(
                            "PreconditionFailed",
                            f"The OData-Version {ov} requested is not supported.",
                            "Resubmit the request with OData-Version 4.0.",
                        )
                    ],
                )
            if req.path in _SESSION_POST and req.method == "POST":
                resp = self.login(req)
            else:
                user = None
                if req.path not in _OPEN_PATHS:
                    user = self.authorised(req)
                    if user is None:
                        return self._unauthorised()
                    if req.method in _WRITE_PRIVILEGED and not self.may_write(user, req):
                        raise rf.ProtocolError(
                            403,
                            [
                                rf.base_info(
                                    "InsufficientPrivilege",
                                    "There are insufficient privileges for the account or "
                                    "credentials associated with the current session to perform the requested operation.",
                                    "Either abandon the operation or change the associated access rights and resubmit "
                                    "the request if the operation failed.",
                                )
                            ],
                        )
                resp = await self.route(req, user)
        except rf.ProtocolError as exc:
            resp = Response.json(exc.body(), exc.status, exc.headers)
        except Rejected as rej:
            resp = _err(rej.status, rej.message_id, rej.message, rej.resolution)
        except (ValueError, KeyError, TypeError) as exc:
            resp = _err(
                400,
                "Base.1.12.MalformedJSON",
                f"The request body submitted was malformed JSON or missing a field: {exc}",
                "Correct the request body and resubmit.",
            )
        for k, v in self._headers().items():
            resp.headers.setdefault(k, v)
        return resp

    def authorised(self, req: Request) -> dict[str, Any] | None:
        """The account behind the request's token or Basic credentials, or None."""
        bmc = self.bmc
        token = req.headers.get("x-auth-token")
        basic = None
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                basic = (user, pw)
            except ValueError:
                return None
        if not bmc.authenticate(token, basic):
            return None
        with bmc.lock:
            if token:
                s = next((s for s in bmc.sessions.values() if s.token == token), None)
                name = s.user if s else ""
            else:
                name = basic[0] if basic else ""
            return next(
                (a for a in bmc.accounts if a["UserName"] == name and a["Enabled"]),
                {"UserName": name, "RoleId": "Administrator", "Id": ""},
            )

    def may_write(self, user: dict[str, Any], req: Request) -> bool:
        role = user.get("RoleId")
        if role == "Administrator":
            return True
        if req.method == "DELETE" and req.path.startswith(
            (f"{R}/SessionService/Sessions/", f"{R}/Sessions/")
        ):
            with self.bmc.lock:  # every account may log itself out
                s = self.bmc.sessions.get(req.path.rsplit("/", 1)[-1])
                return s is not None and s.user == user.get("UserName")
        if req.path.startswith(res.ACCOUNTS + "/") and req.method == "PATCH":
            # ConfigureSelf: an account may change its own password, nothing else
            body = req.json() if req.body else {}
            return req.path.rsplit("/", 1)[-1] == user.get("Id") and set(body) <= {"Password"}
        if role == "Operator":
            return not req.path.startswith(f"{R}/AccountService")
        return False

    def login(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise rf.ProtocolError(
                400,
                [
                    rf.base_info(
                        "MalformedJSON",
                        "The request body submitted was malformed "
                        "JSON and could not be parsed by the receiving service.",
                        "Ensure that the request body is valid JSON.",
                    )
                ],
            )
        missing = [k for k in ("UserName", "Password") if not isinstance(body.get(k), str)]
        if missing:
            raise rf.ProtocolError(
                400,
                [
                    rf.base_info(
                        "PropertyMissing",
                        f"The property {k} is a required property and must be included in the request.",
                        "Ensure that the property is in the request body and has a valid value and resubmit the request "
                        "if the operation failed.",
                        [k],
                        [f"#/{k}"],
                    )
                    for k in missing
                ],
            )
        s = self.bmc.create_session(body["UserName"], body["Password"])
        path = f"{R}/SessionService/Sessions/{s.id}"
        return Response.json(
            res.session_doc(s.id, s.user), 201, self._headers({"X-Auth-Token": s.token, "Location": path})
        )

    # ---- lookup -------------------------------------------------------------------------------
    def lookup(self, p: str) -> dict[str, Any] | Response | None:
        """The document at `p` (a Response for tasks, which answer 202 while running), or None:
        the service root and the static documents, then the collections the BMC's state
        fills, then one member of such a collection by its id (the path's last segment)."""
        if p in self.bmc.faults.broken_paths:
            return None
        with self.bmc.lock:
            fn = self._roots.get(p) or self.docs.get(p)
            if fn is not None:
                return fn()
            listing = self._collections.get(p)
            if listing is not None:
                return listing(p)
            for prefix, member in self._members:
                if p.startswith(prefix):
                    return member(p, p.rsplit("/", 1)[-1])
        return None

    def _lookup_tables(self) -> None:
        """The paths `lookup` answers beyond the static documents: each exact path with what
        draws it, and each collection's member prefix with what draws one member (or None)."""
        bmc = self.bmc
        self._roots: dict[str, Callable[[], dict[str, Any]]] = {
            "/redfish": lambda: {"v1": f"{R}/"},
            R: lambda: res.service_root(bmc),
            f"{R}/odata": res.odata_service,
        }
        self._collections: dict[str, Callable[[str], dict[str, Any]]] = {
            res.SUBSCRIPTIONS: self._subscription_collection,
            **dict.fromkeys(_SESSIONS, self._session_collection),
            f"{R}/UpdateService/FirmwareInventory": self._firmware_collection,
            f"{res.MGR}/Jobs": self._job_queue,
            f"{R}/TaskService/Tasks": self._task_collection,
        }
        self._members: tuple[tuple[str, Callable[[str, str], dict[str, Any] | Response | None]], ...] = (
            (f"{res.SUBSCRIPTIONS}/", self._subscription),
            (f"{R}/SessionService/Sessions/", self._session),
            (f"{R}/UpdateService/FirmwareInventory/", self._firmware),
            (f"{res.MGR}/Jobs/", self._job),
            (f"{R}/TaskService/Tasks/", self._task),
        )

    # the collections and their members (called by `lookup`, under the BMC's lock)
    def _subscription_collection(self, p: str) -> dict[str, Any]:
        return res.collection(
            p,
            "EventDestinationCollection",
            "Event Subscriptions Collection",
            [f"{p}/{i}" for i in self.bmc.subscriptions],
        )

    def _subscription(self, p: str, sid: str) -> dict[str, Any] | None:
        sub = self.bmc.subscriptions.get(sid)
        return res.subscription(sub) if sub else None

    def _session_collection(self, p: str) -> dict[str, Any]:
        return res.collection(
            p,
            "SessionCollection",
            "Session Collection",
            [f"{R}/SessionService/Sessions/{s}" for s in self.bmc.sessions],
        )

    def _session(self, p: str, sid: str) -> dict[str, Any] | None:
        s = self.bmc.sessions.get(sid)
        return res.session_doc(s.id, s.user) if s else None

    def _firmware_collection(self, p: str) -> dict[str, Any]:
        return res.collection(
            p,
            "SoftwareInventoryCollection",
            "Firmware Inventory Collection",
            [f"{p}/{res.fw_id(c)}" for c in self.bmc.components],
        )

    def _firmware(self, p: str, fid: str) -> dict[str, Any] | None:
        c = next((c for c in self.bmc.components if res.fw_id(c) == fid), None)
        return res.firmware(self.bmc, c) if c else None

    def _job_queue(self, p: str) -> dict[str, Any]:
        doc = res.collection(
            p,
            "DellJobCollection",
            "Collection of Job Instances",
            [f"{p}/{j.id}" for j in self.bmc.jobs.values()],
        )
        doc.update({"Id": "JobQueue", "Name": "JobQueue"})
        return doc

    def _job(self, p: str, jid: str) -> dict[str, Any] | None:
        j = self.bmc.jobs.get(jid)
        return res.job(j) if j else None

    def _task_collection(self, p: str) -> dict[str, Any]:
        return res.collection(
            p,
            "TaskCollection",
            "Task Collection",
            [f"{p}/{j.id}" for j in self.bmc.jobs.values() if j.is_task],
        )

    def _task(self, p: str, tid: str) -> Response | None:
        j = self.bmc.jobs.get(tid)
        if j is None or not j.is_task:
            return None
        if j.job_type == "ExportConfiguration" and j.state == "Completed":
            return Response.json(j.result)  # iDRAC answers the finished export task with the profile
        doc = res.task(j)
        return Response.json(doc) if j.finished else Response.json(doc, 202, {"Location": p})

    def allow(self, p: str) -> str | None:
        """The methods `p` takes, or None when nothing is there."""
        if p in self.actions:
            return "POST"
        if p in _SESSIONS or p == res.SUBSCRIPTIONS:
            return "GET, HEAD, POST"
        if p.startswith(f"{res.SUBSCRIPTIONS}/") and self.lookup(p) is not None:
            return "GET, HEAD, DELETE"
        if p.startswith(f"{R}/SessionService/Sessions/") and self.lookup(p) is not None:
            return "GET, HEAD, DELETE"
        if p == f"{R}/$metadata":
            return "GET, HEAD"
        doc = self.lookup(p)
        if doc is None:
            return None
        return "GET, HEAD, PATCH" if self.patch_rules(p) is not None else "GET, HEAD"

    def patch_rules(self, p: str) -> rf.Rules | None:
        bmc = self.bmc
        boot = {
            "BootSourceOverrideEnabled": ("Disabled", "Once", "Continuous"),
            "BootSourceOverrideTarget": tuple(res.BOOT_TARGETS),
            "BootSourceOverrideMode": ("UEFI", "Legacy"),
            "UefiTargetBootSourceOverride": str,
        }
        if p == res.SYS:
            # iDRAC10 takes the boot override only through the settings object
            return {"LocationIndicatorActive": bool} | ({"Boot": boot} if bmc.generation < 10 else {})
        if p == f"{res.SYS}/Settings" and bmc.generation >= 10:
            return {"Boot": {k: v for k, v in boot.items() if k != "UefiTargetBootSourceOverride"}}
        if p.startswith(f"{res.ACCOUNTS}/") and p.rsplit("/", 1)[-1] in {a["Id"] for a in bmc.accounts}:
            if p.endswith("/1"):
                return {}  # slot 1 is reserved: nothing in it may be written
            return {
                "UserName": str,
                "Password": str,
                "RoleId": tuple(res.ROLE_PRIVILEGES),
                "Enabled": bool,
                "Locked": (False,),
            }
        if p == f"{res.MGR}/Attributes":
            return {"Attributes": {k.replace("#", "."): str for k in bmc.attributes["iDRAC.Embedded.1"]}}
        return None

    # ---- routing --------------------------------------------------------------------------
    async def route(self, req: Request, user: dict[str, Any] | None) -> Response:
        p, m = req.path, req.method
        if m in ("GET", "HEAD"):
            return self.get(req)
        if m == "PATCH":
            return self.patch(req, user)
        if m == "DELETE" and (
            p.startswith(f"{R}/SessionService/Sessions/") or p.startswith(f"{R}/Sessions/")
        ):
            if not self.bmc.delete_session(p.rsplit("/", 1)[-1]):
                return _not_found(p)
            if self.bmc.generation >= 10:
                return Response.empty(204)  # iDRAC10 answers a logout with 204 and no body
            return Response.json(_success())
        if m == "POST" and p == res.MULTIPART_PUSH and self.bmc.multipart_push:
            return await self.multipart_push(req)
        if m == "POST" and p in self.actions:
            return await self.action(req)
        if m == "POST" and p == res.SUBSCRIPTIONS:
            return self.subscribe(req)
        if m == "DELETE" and p.startswith(f"{res.SUBSCRIPTIONS}/"):
            with self.bmc.lock:
                if self.bmc.subscriptions.pop(p.rsplit("/", 1)[-1], None) is None:
                    return _not_found(p)
            return Response.json(_success())
        return self._not_allowed(p, m)

    def _not_allowed(self, p: str, m: str) -> Response:
        allow = self.allow(p)
        if allow is None:
            return _not_found(p)
        return _err(
            405,
            "Base.1.12.OperationNotAllowed",
            f"The {m} operation is not allowed on {p}.",
            "Use a method the resource lists in its Allow header.",
            {"Allow": allow},
        )

    def get(self, req: Request) -> Response:
        p = req.path
        if p == f"{R}/$metadata":
            version = res.service_root(self.bmc)["@odata.type"].split(".")[1]
            return Response(
                200,
                rf.metadata_xml(version),
                {"Content-Type": "application/xml;charset=utf-8", "Allow": "GET, HEAD"},
            )
        doc = self.lookup(p)
        if doc is None:
            return _not_found(p)
        if isinstance(doc, Response):
            return doc
        opts = rf.parse_query(req.query, collection="Members" in doc)
        if "expand" in opts:
            doc = self.expand(doc, opts["expand"])
        if "top" in opts or "skip" in opts:
            doc = rf.page(doc, opts.get("top"), opts.get("skip"))
        headers = {"Allow": self.allow(p) or "GET, HEAD"}
        link = rf.described_by(doc)
        if link:
            headers["Link"] = link
        if "Members" not in doc and p not in ("/redfish",):
            tag = rf.etag(doc)
            headers["ETag"] = tag
            if self.bmc.generation >= 10:
                doc = {**doc, "@odata.etag": tag}  # iDRAC10 carries the ETag in the body too
            inm = req.headers.get("if-none-match")
            if inm and (inm.strip() == tag or inm.strip() == "*"):
                return Response(304, b"", headers)
        if "select" in opts:
            doc = rf.select(doc, opts["select"])
        return Response.json(doc, 200, headers)

    def expand(self, doc: dict[str, Any], how: str) -> dict[str, Any]:
        """`$expand` one level: `*` every reference, `.` those outside Links, `~` those in Links."""

        def one(v: Any) -> Any:
            if isinstance(v, dict) and set(v) == {"@odata.id"}:
                d = self.lookup(v["@odata.id"])
                return d if isinstance(d, dict) else v
            return v

        out = dict(doc)
        for k, v in doc.items():
            if k == "Links":
                if how in ("*", "~") and isinstance(v, dict):
                    out[k] = {
                        lk: ([one(x) for x in lv] if isinstance(lv, list) else one(lv))
                        for lk, lv in v.items()
                        if lk != "Oem"
                    } | ({"Oem": v["Oem"]} if "Oem" in v else {})
                continue
            if how == "~" or k.startswith("@") or k == "Oem":
                continue
            if isinstance(v, list):
                out[k] = [one(x) for x in v]
            else:
                out[k] = one(v)
        return out

    def patch(self, req: Request, user: dict[str, Any] | None) -> Response:
        bmc, p = self.bmc, req.path
        rules = self.patch_rules(p)
        current = self.lookup(p)
        if rules is None or not isinstance(current, dict):
            return self._not_allowed(p, "PATCH")
        try:
            body = req.json()
        except ValueError:
            body = None
        errors = rf.validate_patch(body, current, rules)
        if not errors and not body:
            errors = [
                rf.base_info(
                    "EmptyJSON",
                    "The request body submitted contained an empty JSON object and the "
                    "service is unable to process it.",
                    "Add properties in the JSON object and resubmit the request.",
                )
            ]
        if errors:
            raise rf.ProtocolError(400, errors)
        rf.check_if_match(req.headers.get("if-match"), rf.etag(current))
        if p in (res.SYS, f"{res.SYS}/Settings"):
            if "Boot" in body:
                bmc.patch_boot(body["Boot"])
            if "LocationIndicatorActive" in body:
                with bmc.lock:
                    bmc.location_indicator = body["LocationIndicatorActive"]
        elif p.startswith(f"{res.ACCOUNTS}/"):
            slot = p.rsplit("/", 1)[-1]
            name = body.get("UserName")
            if name and any(a["UserName"] == name and a["Id"] != slot for a in bmc.accounts):
                raise rf.ProtocolError(
                    400,
                    [
                        rf.base_info(
                            "ResourceAlreadyExists",
                            f"The requested resource of type ManagerAccount with the property "
                            f"UserName with the value {name} already exists.",
                            "Do not repeat the create operation as the resource has already been created.",
                            ["ManagerAccount", "UserName", name],
                        )
                    ],
                )
            pw = body.get("Password")
            if pw is not None and not 4 <= len(pw) <= 40:
                raise rf.ProtocolError(
                    400,
                    [
                        rf.base_info(
                            "PropertyValueFormatError",
                            "The value for the property Password is of a different format "
                            "than the property can accept.",
                            "Use a password of 4 to 40 characters.",
                            ["******", "Password"],
                            ["#/Password"],
                        )
                    ],
                )
            bmc.patch_account(slot, body)
        elif p == f"{res.MGR}/Attributes":
            bmc.patch_attributes("iDRAC.Embedded.1", {_attr_key(k): v for k, v in body["Attributes"].items()})
        return Response.json(_success(), 200)

    def subscribe(self, req: Request) -> Response:
        """An event subscription (EventDestination): stored, listed and deletable; the lab
        never sends events."""
        body = req.json()
        rules: rf.Rules = {
            "Destination": str,
            "Protocol": ("Redfish",),
            "Context": str,
            "EventFormatType": ("Event", "MetricReport"),
            "RegistryPrefixes": list,
            "ResourceTypes": list,
            "SubscriptionType": ("RedfishEvent",),
            "HttpHeaders": list,
            "EventTypes": list,
        }
        errors = rf.validate_patch(body, {}, rules)
        if not errors and not str(body.get("Destination", "")).startswith(("https://", "http://")):
            errors = [
                rf.base_info(
                    "PropertyMissing" if "Destination" not in body else "PropertyValueFormatError",
                    "The property Destination is required and must be an http(s) URI.",
                    "Supply a valid Destination and resubmit the request.",
                    ["Destination"],
                    ["#/Destination"],
                )
            ]
        if errors:
            raise rf.ProtocolError(400, errors)
        with self.bmc.lock:
            sid = str(max((int(i) for i in self.bmc.subscriptions), default=0) + 1)
            self.bmc.subscriptions[sid] = {
                "Id": sid,
                "Destination": body["Destination"],
                "Context": body.get("Context", ""),
                "Protocol": "Redfish",
                "EventFormatType": body.get("EventFormatType", "Event"),
            }
            doc = res.subscription(self.bmc.subscriptions[sid])
        return Response.json(doc, 201, {"Location": doc["@odata.id"]})

    async def action(self, req: Request) -> Response:
        bmc, p = self.bmc, req.path
        mgr, dell = res.MGR, res.DELL_MGR
        body = req.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        if p == f"{res.SYS}/Actions/ComputerSystem.Reset":
            bmc.reset(body.get("ResetType", ""))
            return Response.empty(204)
        if "/VirtualMedia/" in p:
            slot = p.split("/VirtualMedia/", 1)[1].split("/", 1)[0]
            if p.endswith("VirtualMedia.InsertMedia"):
                image = body.get("Image")
                if not image:
                    return _err(
                        400,
                        "Base.1.12.ActionParameterMissing",
                        "The action VirtualMedia.InsertMedia "
                        "requires the parameter Image to be present in the request body.",
                        "Supply the action with the required parameter in the request body.",
                    )
                if not await self.lab.fetchable(image):
                    return _err(
                        400,
                        "RAC0720",
                        "Unable to locate the ISO or IMG image file or folder in the "
                        "network share location because the file or folder path or the user "
                        "credentials entered are incorrect.",
                        "Enter a valid image URL and credentials and retry the operation.",
                    )
                bmc.insert_media(slot, image)
            else:
                bmc.eject_media(slot)
            return Response.empty(204)
        if p == self.export_target:
            job = bmc.scp_export(body)
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if p == self.import_target:
            job = bmc.scp_import(body)
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if p == f"{R}/UpdateService/Actions/UpdateService.SimpleUpdate":
            job = bmc.simple_update(body)
            asyncio.get_running_loop().create_task(self._download(job, body["ImageURI"]))
            await self._hold_update_answer()
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if p == f"{dell}/DellJobService/Actions/DellJobService.DeleteJobQueue":
            bmc.delete_job_queue(str(body.get("JobID", "")))
            return Response.json(
                {
                    "@Message.ExtendedInfo": [
                        {"MessageId": "IDRAC.2.8.SUP020", "Message": "Successfully deleted the job(s)."}
                    ]
                }
            )
        if p == f"{dell}/DellLCService/Actions/DellLCService.GetRemoteServicesAPIStatus":
            st = bmc.lc_status()
            st["@Message.ExtendedInfo"] = [
                {
                    "MessageId": "IDRAC.2.8.LC061",
                    "Message": "Lifecycle Controller Remote Services is ready."
                    if st["Status"] == "Ready"
                    else "Lifecycle Controller Remote Services is not ready.",
                }
            ]
            return Response.json(st)
        if p in (
            f"{dell}/DelliDRACCardService/Actions/DelliDRACCardService.iDRACReset",
            f"{mgr}/Actions/Manager.Reset",
        ):
            if p.endswith("Manager.Reset") and body.get("ResetType") != "GracefulRestart":
                return _err(
                    400,
                    "Base.1.12.ActionParameterValueNotInList",
                    f"The value {body.get('ResetType')} "
                    "for the parameter ResetType is not in the list of acceptable values.",
                    "Choose a value from the allowable values.",
                )
            bmc.reset_idrac()
            return Response.json(
                {
                    "@Message.ExtendedInfo": [
                        {
                            "MessageId": "IDRAC.2.8.RAC064",
                            "Message": "iDRAC restart operation initiated successfully.",
                        }
                    ]
                }
            )
        return _not_found(p)

    async def multipart_push(self, req: Request) -> Response:
        """A package pushed to the MultipartHttpPushUri (DSP0266 "Multipart HTTP push
        updates", as iDRAC9 4.40+ and iDRAC10 take it): `multipart/form-data` with a JSON
        `UpdateParameters` part and the package as `UpdateFile`, read in chunks and never held
        whole. Refused, with the body read to its end first so the client sees the answer: a
        body that is not multipart (415), one larger than the BMC takes (413), a missing or
        malformed part (400 MissingOrMalformedPart), UpdateParameters that are not a JSON
        object or carry a parameter or value the service does not know (400). Accepted: 202
        with the task's Location, the same job SimpleUpdate starts."""
        parts = await self._read_push(req)
        params, file_part = _push_parts(parts)
        self._check_push_params(params)
        job = self.bmc.push_update(
            params,
            file_part.head,
            {"filename": file_part.filename, "size": file_part.size, "sha256": file_part.sha256},
        )
        await self._hold_update_answer()
        return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})

    async def _read_push(self, req: Request) -> dict[str, mp.Part]:
        """The pushed body's parts by name (none when it is malformed), read to its end; a
        body that is not multipart or is larger than the BMC takes is refused."""

        async def drain() -> None:
            while await req.read_chunk():
                pass

        boundary = mp.boundary_of(req.headers.get("content-type", ""))
        if boundary is None:
            await drain()
            raise _push_refusal(
                415,
                "HeaderInvalid",
                f"The header 'Content-Type: {req.headers.get('content-type', '')}' is invalid.",
                "Send the package as multipart/form-data with a boundary.",
                [f"Content-Type: {req.headers.get('content-type', '')}"],
            )
        if req.unread > self.bmc.upload_limit:
            await drain()
            raise _push_refusal(
                413,
                "PayloadTooLarge",
                "The supplied payload exceeds the maximum size supported by the service.",
                "Check that the supplied payload is correct and supported by this service.",
            )
        try:
            parts = await mp.read_parts(req.read_chunk, boundary)
            await drain()  # an epilogue after the closing delimiter
        except mp.Malformed:
            await drain()
            parts = {}
        return parts

    def _check_push_params(self, params: dict[str, Any]) -> None:
        """Refuse a parameter the service does not know, or a value it does not take."""
        inventory = {f"{R}/UpdateService/FirmwareInventory/{res.fw_id(c)}" for c in self.bmc.components}
        for key, value in params.items():
            takes = _PUSH_PARAMETERS.get(key)
            if takes is None:
                raise _unknown_push_parameter(key)
            if not takes(value, inventory):
                raise _push_refusal(
                    400,
                    "ActionParameterValueNotInList",
                    f"The value '{json.dumps(value)}' for the parameter {key} in the action {_PUSH_ACTION} "
                    "is not in the list of acceptable values.",
                    "Choose a value from the enumeration list that the implementation can support "
                    "and resubmit the request if the operation failed.",
                    [json.dumps(value), key, _PUSH_ACTION],
                    base=rf.BASE,
                )

    async def _hold_update_answer(self) -> None:
        """Fault ``hold_update_answer``: the update job is queued, its answer waits that many
        seconds, or until the fault is cleared."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.bmc.faults.hold_update_answer
        while self.bmc.faults.hold_update_answer and loop.time() < end:
            await asyncio.sleep(0.05)

    async def _download(self, job, uri: str) -> None:
        data, error = await self.lab.fetch(uri)
        self.bmc.download_finished(job, data, error)

    # ---- control API -------------------------------------------------------------------------
    def control(self, req: Request) -> Response:
        bmc = self.bmc
        try:
            if req.path == "/_lab/state":
                return Response.json(bmc.stats())
            if req.path == "/_lab/fleet":
                return Response.json(self.lab.fleet_stats())
            if req.path == "/_lab/faults" and req.method == "POST":
                body = req.json()
                if body.pop("clear", False):
                    bmc.clear_faults()
                bmc.inject(**body)
                return Response.json(bmc.stats())
            if req.path == "/_lab/exhaust-sessions" and req.method == "POST":
                bmc.exhaust_sessions()
                return Response.json(bmc.stats())
            if req.path == "/_lab/stale-jobs" and req.method == "POST":
                body = req.json()
                return Response.json(
                    {
                        "jobs": bmc.add_stale_jobs(
                            int(body.get("count", 2)),
                            str(body.get("state", "Scheduled")),
                            str(body.get("message", "")),
                        )
                    }
                )
            if req.path == "/_lab/reset-stats" and req.method == "POST":
                self.lab.reset_stats()
                return Response.json({"ok": True})
        except (ValueError, TypeError) as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json({"error": f"unknown control path {req.path}"}, 404)


def _attr_key(k: str) -> str:
    """`Group.N.Name` (how the Attributes resource spells an iDRAC attribute) -> `Group.N#Name`."""
    head, _, name = k.rpartition(".")
    return f"{head}#{name}" if head else k


def personalities_for(count: int, personality: str | Sequence[str]) -> list[str]:
    """One personality per BMC: a name for all, or a sequence cycled over the fleet."""
    names = [personality] if isinstance(personality, str) else list(personality)
    if not names or any(n not in PERSONALITIES for n in names):
        raise ValueError(f"personality must be one of {', '.join(PERSONALITIES)} (or a list of them)")
    return [names[i % len(names)] for i in range(count)]


class Lab:
    """A fleet of simulated BMCs. `base_port=0` binds each BMC to a free port."""

    def __init__(
        self,
        count: int = 1,
        *,
        base_port: int = 0,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        username: str = "root",
        password: str = "calvin",
        timing: Timing | None = None,
        ssl_context: Any = None,
        latency: float = 0.0,
        personality: str | Sequence[str] = "idrac9",
    ):
        self.host = host
        self.latency = latency  # real seconds added to every answer: network + BMC service time
        self.ssl_context = ssl_context  # serve HTTPS (e.g. a self-signed lab certificate)
        self.base_port = base_port
        self.time_scale = time_scale
        self.personalities = personalities_for(count, personality)
        self.bmcs = [
            BMC(
                i,
                time_scale=time_scale,
                username=username,
                password=password,
                timing=Timing(**vars(timing)) if timing else None,
                personality=self.personalities[i],
            )
            for i in range(count)
        ]
        self._servers: list[asyncio.base_events.Server] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> Lab:
        self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        for bmc in self.bmcs:
            port = self.base_port + bmc.index if self.base_port else 0
            srv = await start_server(self.host, port, BMCApp(bmc, self), ssl=self.ssl_context)
            bmc.host, bmc.port = self.host, srv.sockets[0].getsockname()[1]
            self._servers.append(srv)
        return self

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
        if self._http:
            await self._http.aclose()

    def url(self, i: int) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.bmcs[i].port}"

    def fleet_stats(self) -> dict[str, Any]:
        stats = [b.stats() for b in self.bmcs]
        return {
            "count": len(stats),
            "sessions": sum(s["sessions"] for s in stats),
            "peak_sessions_max": max((s["peak_sessions"] for s in stats), default=0),
            "sessions_created": sum(s["sessions_created"] for s in stats),
            "sessions_deleted": sum(s["sessions_deleted"] for s in stats),
            "requests": sum(s["requests"] for s in stats),
        }

    def reset_stats(self) -> None:
        for b in self.bmcs:
            with b.lock:
                b.peak_sessions = b.own_sessions()
                b.sessions_created = b.sessions_deleted = b.requests = 0

    async def fetchable(self, url: str) -> bool:
        """Virtual media: the iDRAC checks that the image URL answers before it mounts."""
        assert self._http is not None
        try:
            r = await self._http.head(url)
            if r.status_code == 405:
                r = await self._http.get(url, headers={"Range": "bytes=0-511"})
            return r.status_code in (200, 206)
        except httpx.HTTPError:
            return False

    async def fetch(self, url: str) -> tuple[bytes | None, str]:
        assert self._http is not None
        try:
            r = await self._http.get(url)
        except httpx.HTTPError as exc:
            return None, f"Unable to download the update package: {type(exc).__name__}."
        if r.status_code != 200:
            return None, f"Unable to download the update package: HTTP {r.status_code}."
        return r.content, ""


class LabThread:
    """Runs a `Lab` on its own event loop in a daemon thread (for synchronous clients)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="idrac-lab", daemon=True)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Lab:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.lab.start(), self.loop).result(30)
        return self.lab

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.lab.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


__all__ = ["Lab", "LabThread", "BMC", "Timing", "MANAGER_ID", "SYSTEM_ID"]
