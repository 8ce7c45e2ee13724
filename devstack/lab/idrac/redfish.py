"""The Redfish protocol rules a simulated iDRAC holds to, as the DMTF specification and
iDRAC firmware apply them: response headers, ETags and If-Match, the `$` query parameters
it implements and the ones it refuses, PATCH validation with the Base message registry's
entries, and the OData `$metadata` document.

What a real iDRAC refuses, the lab refuses the same way: a PATCH naming a property the
resource lacks gets `Base.1.12.PropertyUnknown`, one naming a read-only property
`PropertyNotWritable`, a wrong value `PropertyValueNotInList` / `PropertyValueTypeError`,
all at once in one 400 with one ExtendedInfo entry per property, and nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .bmc import message_info

R = "/redfish/v1"
BASE = "Base.1.12."
SUPPORTED_QUERY = ("$expand", "$select", "$top", "$skip")
_EXPAND = re.compile(r"^([*.~])(?:\(\$levels=(\d+)\))?$")


class ProtocolError(Exception):
    """A request the protocol layer refuses: status and ExtendedInfo entries."""

    def __init__(self, status: int, infos: list[dict[str, Any]], headers: dict[str, str] | None = None):
        super().__init__(infos[0]["Message"] if infos else str(status))
        self.status = status
        self.infos = infos
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        if len(self.infos) == 1:
            i = self.infos[0]
            return {
                "error": {
                    "@Message.ExtendedInfo": self.infos,
                    "code": i["MessageId"],
                    "message": i["Message"],
                }
            }
        return {
            "error": {
                "@Message.ExtendedInfo": self.infos,
                "code": f"{BASE}GeneralError",
                "message": "A general error has occurred. See ExtendedInfo for more information",
            }
        }


def base_info(
    name: str,
    message: str,
    resolution: str,
    args: list[str] | None = None,
    related: list[str] | None = None,
    severity: str = "Warning",
) -> dict[str, Any]:
    return message_info(BASE + name, message, resolution, severity, args or [], related)


# ---- ETags ------------------------------------------------------------------------------------
def etag(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "@odata.etag"}
    return 'W/"' + hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16] + '"'


def check_if_match(header: str | None, current: str) -> None:
    """If-Match on a PATCH: `*` or the current ETag passes; anything else is 412."""
    if not header:
        return
    tags = [t.strip() for t in header.split(",")]
    if "*" in tags or current in tags or current.removeprefix("W/") in tags:
        return
    raise ProtocolError(
        412,
        [
            base_info(
                "PreconditionFailed",
                "The ETag supplied did not match the ETag required to change this resource.",
                "Try the operation again using the appropriate ETag.",
            )
        ],
    )


# ---- query parameters -------------------------------------------------------------------------
def parse_query(query: dict[str, str], *, collection: bool) -> dict[str, Any]:
    """The `$` options of a GET, validated. Unknown `$` options get 501 (the DMTF rule,
    which iDRAC follows); parameters without `$` are ignored."""
    opts: dict[str, Any] = {}
    for k, v in query.items():
        if not k.startswith("$"):
            continue
        if k not in SUPPORTED_QUERY:
            raise ProtocolError(
                501,
                [
                    base_info(
                        "QueryParameterUnsupported",
                        f"The query parameter {k} is not supported.",
                        "Correct or remove the query parameter and resubmit the request.",
                        [k],
                    )
                ],
            )
        if k == "$expand":
            m = _EXPAND.match(v)
            if not m:
                raise ProtocolError(
                    400,
                    [
                        base_info(
                            "QueryParameterValueFormatError",
                            f"The value {v} for the parameter $expand is of a "
                            "different format than the parameter can accept.",
                            "Correct the value for the query "
                            "parameter in the request and resubmit the request if the operation failed.",
                            [v, "$expand"],
                        )
                    ],
                )
            levels = int(m.group(2) or 1)
            if levels != 1:
                raise ProtocolError(
                    400,
                    [
                        base_info(
                            "QueryParameterOutOfRange",
                            f"The value {levels} for the query parameter $levels is out of range 1-1.",
                            "Reduce the value for the query parameter to a value that is within the range.",
                            [str(levels), "$levels", "1-1"],
                        )
                    ],
                )
            opts["expand"] = m.group(1)
        elif k == "$select":
            fields = [f.strip() for f in v.split(",") if f.strip()]
            if not fields:
                raise ProtocolError(
                    400,
                    [
                        base_info(
                            "QueryParameterValueFormatError",
                            "The value for the parameter $select is of a different "
                            "format than the parameter can accept.",
                            "Correct the value and resubmit.",
                            [v, "$select"],
                        )
                    ],
                )
            opts["select"] = fields
        else:
            if not v.isdigit():
                raise ProtocolError(
                    400,
                    [
                        base_info(
                            "QueryParameterValueTypeError",
                            f"The value {v} for the query parameter {k} is of a "
                            "different type than the parameter can accept.",
                            "Correct the value and resubmit.",
                            [v, k],
                        )
                    ],
                )
            if not collection:
                raise ProtocolError(
                    400,
                    [
                        base_info(
                            "QueryNotSupportedOnResource",
                            "Querying is not supported on the requested resource.",
                            f"Remove {k} and resubmit the request.",
                        )
                    ],
                )
            opts[k[1:]] = int(v)
    return opts


_ALWAYS = ("@odata.id", "@odata.type", "@odata.context", "@odata.etag", "Members@odata.count")


def select(doc: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`$select=A,B/C`: the named properties (paths with `/`) plus the OData annotations."""
    out = {k: doc[k] for k in _ALWAYS if k in doc}
    for f in fields:
        parts = f.split("/")
        src, dst = doc, out
        for i, p in enumerate(parts):
            if not isinstance(src, dict) or p not in src:
                break
            if i == len(parts) - 1:
                dst[p] = src[p]
            else:
                src = src[p]
                dst = dst.setdefault(p, {})
    return out


def page(doc: dict[str, Any], top: int | None, skip: int | None) -> dict[str, Any]:
    members = doc.get("Members") or []
    start = skip or 0
    end = len(members) if top is None else start + top
    out = dict(doc, Members=members[start:end])
    if end < len(members):
        nxt = f"{doc['@odata.id']}?$skip={end}" + (f"&$top={top}" if top is not None else "")
        out["Members@odata.nextLink"] = nxt
    return out


# ---- PATCH validation --------------------------------------------------------------------------
# A rule per property: a tuple of allowed values, a type, or a nested dict of rules.
Rules = dict[str, Any]


def validate_patch(
    body: Any, current: dict[str, Any], rules: Rules, prefix: str = ""
) -> list[dict[str, Any]]:
    """ExtendedInfo entries for every property of `body` the resource refuses (empty list =
    every property may be written). `current` is the resource as a GET shows it."""
    if not isinstance(body, dict):
        return [
            base_info(
                "MalformedJSON",
                "The request body submitted was malformed JSON and could not be "
                "parsed by the receiving service.",
                "Ensure that the request body is valid JSON and resubmit the request.",
            )
        ]
    errors: list[dict[str, Any]] = []
    for k, v in body.items():
        path = f"{prefix}{k}"
        pointer = "#/" + path.replace(".", "/")
        if k.startswith("@odata."):
            continue  # annotations such as @odata.etag may be sent back unchanged
        if k not in rules:
            if k in current:
                errors.append(
                    base_info(
                        "PropertyNotWritable",
                        f"The property {path} is a read only property and cannot be assigned a value.",
                        "Remove the property from the request "
                        "body and resubmit the request if the operation failed.",
                        [path],
                        [pointer],
                    )
                )
            else:
                errors.append(
                    base_info(
                        "PropertyUnknown",
                        f"The property {path} is not in the list of valid properties for the resource.",
                        "Remove the unknown property from the "
                        "request body and resubmit the request if the operation failed.",
                        [path],
                        [pointer],
                    )
                )
            continue
        rule = rules[k]
        if isinstance(rule, dict):
            sub = current.get(k) if isinstance(current.get(k), dict) else {}
            if not isinstance(v, dict):
                errors.append(_type_error(path, v, pointer))
            else:
                errors += validate_patch(v, sub, rule, f"{path}.")
        elif isinstance(rule, tuple):
            kind = type(rule[0])
            if not isinstance(v, kind) or isinstance(v, bool) is not (kind is bool):
                errors.append(_type_error(path, v, pointer))
            elif v not in rule:
                errors.append(
                    base_info(
                        "PropertyValueNotInList",
                        f"The value {json.dumps(v)} for the property "
                        f"{path} is not in the list of acceptable values.",
                        "Choose a value from "
                        "the enumeration list that the implementation can support and resubmit "
                        "the request if the operation failed.",
                        [str(v), path],
                        [pointer],
                    )
                )
        elif isinstance(rule, type):
            if not isinstance(v, rule) or (rule is int and isinstance(v, bool)):
                errors.append(_type_error(path, v, pointer))
    return errors


def _type_error(path: str, v: Any, pointer: str) -> dict[str, Any]:
    return base_info(
        "PropertyValueTypeError",
        f"The value {json.dumps(v)} for the property {path} is of a "
        "different type than the property can accept.",
        "Correct the value for the property in the "
        "request body and resubmit the request if the operation failed.",
        [json.dumps(v), path],
        [pointer],
    )


def patched(message: str = "Successfully Completed Request") -> dict[str, Any]:
    return {"@Message.ExtendedInfo": [message_info(BASE + "Success", message, "None", "OK")]}


# ---- $metadata -----------------------------------------------------------------------------------
# (schema file, namespaces) for every DMTF type the lab serves.
_VERSIONED = {
    "ServiceRoot": ["v1_17_0", "v1_18_0"],
    "ComputerSystem": ["v1_13_0", "v1_20_0"],
    "Bios": ["v1_1_0"],
    "BootOption": ["v1_0_4"],
    "Processor": ["v1_11_0"],
    "Memory": ["v1_11_0"],
    "Storage": ["v1_8_0"],
    "SecureBoot": ["v1_1_0"],
    "EthernetInterface": ["v1_6_0"],
    "Chassis": ["v1_11_0"],
    "Manager": ["v1_9_0", "v1_19_0"],
    "ManagerNetworkProtocol": ["v1_5_0"],
    "HostInterface": ["v1_2_0"],
    "LogService": ["v1_1_3"],
    "LogEntry": ["v1_6_1"],
    "Power": ["v1_5_0"],
    "Thermal": ["v1_4_0"],
    "Drive": ["v1_9_0"],
    "Volume": ["v1_5_0"],
    "AccountService": ["v1_10_0"],
    "ManagerAccount": ["v1_7_0"],
    "Role": ["v1_2_4"],
    "EventService": ["v1_7_0"],
    "EventDestination": ["v1_9_0"],
    "SessionService": ["v1_1_8"],
    "Session": ["v1_3_0"],
    "TaskService": ["v1_1_4"],
    "Task": ["v1_4_3"],
    "UpdateService": ["v1_8_0", "v1_11_0"],
    "SoftwareInventory": ["v1_5_0"],
    "VirtualMedia": ["v1_3_0"],
    "Settings": ["v1_3_5"],
    "Message": ["v1_1_2"],
    "Resource": ["v1_11_0"],
    "RedfishExtensions": ["v1_0_0"],
}
_COLLECTIONS = [
    "ComputerSystemCollection",
    "BootOptionCollection",
    "ProcessorCollection",
    "MemoryCollection",
    "StorageCollection",
    "EthernetInterfaceCollection",
    "NetworkInterfaceCollection",
    "ChassisCollection",
    "ManagerCollection",
    "HostInterfaceCollection",
    "SerialInterfaceCollection",
    "LogServiceCollection",
    "LogEntryCollection",
    "VolumeCollection",
    "ManagerAccountCollection",
    "RoleCollection",
    "EventDestinationCollection",
    "MessageRegistryFileCollection",
    "JsonSchemaFileCollection",
    "SessionCollection",
    "TaskCollection",
    "SoftwareInventoryCollection",
    "VirtualMediaCollection",
    "SimpleStorageCollection",
    "CertificateCollection",
]


def metadata_xml(service_root_version: str) -> bytes:
    refs = []
    for ns, versions in _VERSIONED.items():
        uri = "http://redfish.dmtf.org/schemas/v1/" + (
            "RedfishExtensions_v1.xml" if ns == "RedfishExtensions" else f"{ns}_v1.xml"
        )
        inc = "".join(f'\n    <edmx:Include Namespace="{ns}.{v}"/>' for v in versions)
        alias = ' Alias="Redfish"' if ns == "RedfishExtensions" else ""
        head = "" if ns == "RedfishExtensions" else f'\n    <edmx:Include Namespace="{ns}"/>'
        if alias:
            inc = f'\n    <edmx:Include Namespace="{ns}.v1_0_0"{alias}/>'
        refs.append(f'  <edmx:Reference Uri="{uri}">{head}{inc}\n  </edmx:Reference>')
    for c in _COLLECTIONS:
        refs.append(
            f'  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{c}_v1.xml">\n'
            f'    <edmx:Include Namespace="{c}"/>\n  </edmx:Reference>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
        + "\n".join(refs)
        + "\n"
        "  <edmx:DataServices>\n"
        '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">\n'
        f'      <EntityContainer Name="Service" Extends="ServiceRoot.{service_root_version}.ServiceContainer"/>\n'
        "    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n"
    ).encode()


def described_by(doc: dict[str, Any]) -> str | None:
    """The Link header naming the JSON schema of a document, as iDRAC sends it."""
    t = str(doc.get("@odata.type") or "").lstrip("#")
    if not t:
        return None
    parts = t.split(".")
    name = ".".join(parts[:2]) if len(parts) == 3 else parts[0]
    return f"</redfish/v1/Schemas/{name}.json>;rel=describedby"
