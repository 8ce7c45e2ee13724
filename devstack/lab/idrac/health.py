"""Hardware health of a simulated iDRAC, the way a pre-flight reads it: power supplies and
their redundancy (Chassis Power), temperatures and fans (Chassis Thermal), the RAID
controller's virtual disks and drives (Storage, Volumes, Drives with ``FailurePredicted``),
DIMM health (Memory) and the SEL and Lifecycle Controller logs (LogServices Entries).

Every document here is a standard Redfish resource in the shapes iDRAC9 serves (legacy
``Power``/``Thermal`` under the chassis, as iDRAC9 7.x and iDRAC10 both still answer).
Tests fail each area through :func:`set_health` and :func:`add_event`:

    set_health(bmc, psu_failed=1)              # PS2 Critical, redundancy lost
    set_health(bmc, inlet_c=48)                # inlet above its critical threshold
    set_health(bmc, fan_failed=1)              # one fan Critical
    set_health(bmc, vdisk="Degraded")          # or "Rebuilding" (an operation at 40 %)
    set_health(bmc, predicted_failures=1)      # a drive reporting predicted failure
    set_health(bmc, memory="Critical")         # DIMM A1 (Warning: a correctable-error storm)
    add_event(bmc, "Critical", "The system board fail-safe voltage is outside of range.",
              days_ago=2, log="Sel", message_id="VLT0204")
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from . import resources as res
from .resources import CHS, MGR, SYS, collection, ref, resource

HEALTHS = ("OK", "Warning", "Critical")
VDISK_STATES = ("Optimal", "Degraded", "Rebuilding", "Failed")
MAX_EVENTS = 32  # entry slots each log serves (oldest dropped first)


@dataclass
class HardwareHealth:
    psu_failed: int = 0  # of the two power supplies (one is enough: N+1)
    inlet_c: float = 23.0  # System Board Inlet Temp; non-critical 42, critical 47
    fan_failed: int = 0  # of four fans
    vdisk: str = "Optimal"  # Optimal | Degraded | Rebuilding | Failed
    predicted_failures: int = 0  # of two drives, reporting predicted failure
    memory: str = "OK"  # DIMM A1: OK | Warning (correctable-error storm) | Critical
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"Sel": [], "Lclog": []})


def health_of(bmc: Any) -> HardwareHealth:
    h = getattr(bmc, "hardware_health", None)
    if h is None:
        h = bmc.hardware_health = HardwareHealth()
    return h


def set_health(bmc: Any, **kw: Any) -> None:
    """Change hardware health fields (unknown names and values refused)."""
    known = {f.name for f in fields(HardwareHealth)} - {"events"}
    with bmc.lock:
        h = health_of(bmc)
        for k, v in kw.items():
            if k not in known:
                raise ValueError(f"unknown health field {k!r}; known: {', '.join(sorted(known))}")
            if k == "vdisk" and v not in VDISK_STATES:
                raise ValueError(f"vdisk must be one of {', '.join(VDISK_STATES)}")
            if k == "memory" and v not in HEALTHS:
                raise ValueError(f"memory must be one of {', '.join(HEALTHS)}")
            setattr(h, k, v)


def add_event(
    bmc: Any, severity: str, message: str, *, days_ago: float = 0, log: str = "Sel", message_id: str = ""
) -> str:
    """Log one entry (Severity OK, Warning or Critical) ``days_ago`` days back; returns its Id."""
    if severity not in HEALTHS:
        raise ValueError(f"severity must be one of {', '.join(HEALTHS)}")
    if log not in ("Sel", "Lclog"):
        raise ValueError("log must be Sel or Lclog")
    with bmc.lock:
        entries = health_of(bmc).events[log]
        n = (int(entries[-1]["Id"]) if entries else 0) + 1
        created = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
        entries.append(
            {
                "Id": str(n),
                "Severity": severity,
                "Message": message,
                "MessageId": message_id,
                "Created": created.replace(microsecond=0).isoformat(),
            }
        )
        del entries[:-MAX_EVENTS]
        return str(n)


def clear_health(bmc: Any) -> None:
    with bmc.lock:
        bmc.hardware_health = HardwareHealth()


# ---- documents --------------------------------------------------------------------------------
def _st(health: str = "OK", state: str = "Enabled") -> dict[str, str]:
    return {"Health": health, "State": state}


def power(bmc: Any) -> dict[str, Any]:
    h = health_of(bmc)
    path = f"{CHS}/Power"
    psus = []
    for n in (1, 2):
        failed = n > 2 - h.psu_failed
        psus.append(
            {
                "@odata.id": f"{path}#/PowerSupplies/{n - 1}",
                # DMTF: MemberId is the array index (the service validator fails anything
                # else). Real iDRACs write their FQDD (PSU.Slot.1) there; the lab keeps the
                # rule, and rackpilot names members by Name, never by MemberId.
                "MemberId": str(n - 1),
                "Name": f"PS{n} Status",
                "PowerCapacityWatts": 1100,
                "LastPowerOutputWatts": 0 if failed else 180,
                "Status": _st("Critical" if failed else "OK"),
            }
        )
    lost = h.psu_failed > 0
    return resource(
        path,
        "Power.v1_5_0",
        "Power",
        "Power",
        PowerSupplies=psus,
        **{"PowerSupplies@odata.count": len(psus)},
        Redundancy=[
            {
                "@odata.id": f"{path}#/Redundancy/0",
                "MemberId": "0",
                "Name": "PSU Redundancy",
                "Mode": "N+m",
                "MinNumNeeded": 1,
                "MaxNumSupported": 2,
                "RedundancySet": [ref(p["@odata.id"]) for p in psus],
                "RedundancySet@odata.count": len(psus),
                "Status": _st("Critical" if lost else "OK"),
            }
        ],
        **{"Redundancy@odata.count": 1},
    )


def thermal(bmc: Any) -> dict[str, Any]:
    h = health_of(bmc)
    path = f"{CHS}/Thermal"
    t = float(h.inlet_c)
    t_health = "Critical" if t >= 47 else "Warning" if t >= 42 else "OK"
    fans = [
        {
            "@odata.id": f"{path}#/Fans/{n - 1}",
            "MemberId": str(n - 1),
            "Name": f"System Board Fan{n}A",
            "Reading": 0 if n <= h.fan_failed else 6840,
            "ReadingUnits": "RPM",
            "Status": _st("Critical" if n <= h.fan_failed else "OK"),
        }
        for n in (1, 2, 3, 4)
    ]
    return resource(
        path,
        "Thermal.v1_4_0",
        "Thermal",
        "Thermal",
        Temperatures=[
            {
                "@odata.id": f"{path}#/Temperatures/0",
                "MemberId": "0",
                "Name": "System Board Inlet Temp",
                "ReadingCelsius": t,
                "UpperThresholdNonCritical": 42,
                "UpperThresholdCritical": 47,
                "Status": _st(t_health),
            }
        ],
        **{"Temperatures@odata.count": 1},
        Fans=fans,
        **{"Fans@odata.count": len(fans)},
    )


STORAGE = f"{SYS}/Storage/RAID.Integrated.1-1"
DRIVES = [f"{STORAGE}/Drives/Disk.Bay.{n}:Enclosure.Internal.0-1:RAID.Integrated.1-1" for n in (0, 1)]
VOLUME = f"{STORAGE}/Volumes/Disk.Virtual.0:RAID.Integrated.1-1"


def storage(bmc: Any) -> dict[str, Any]:
    doc = res.storage(bmc)
    h = health_of(bmc)
    bad = h.vdisk != "Optimal" or h.predicted_failures
    doc.update(
        Drives=[ref(d) for d in DRIVES],
        **{"Drives@odata.count": len(DRIVES)},
        Volumes=ref(f"{STORAGE}/Volumes"),
        Status={"Health": "OK", "HealthRollup": "Warning" if bad else "OK", "State": "Enabled"},
    )
    return doc


def drive(bmc: Any, n: int) -> dict[str, Any]:
    h = health_of(bmc)
    predicted = n < h.predicted_failures
    return resource(
        DRIVES[n],
        "Drive.v1_9_0",
        DRIVES[n].rsplit("/", 1)[-1],
        f"Physical Disk 0:1:{n}",
        CapacityBytes=959119884288,
        MediaType="SSD",
        Protocol="SAS",
        Manufacturer="TOSHIBA",
        Model="KPM5XVUG960G",
        FailurePredicted=predicted,
        PredictedMediaLifeLeftPercent=4 if predicted else 100,
        Status=_st("Warning" if predicted else "OK"),
    )


def volume(bmc: Any) -> dict[str, Any]:
    h = health_of(bmc)
    health = {"Optimal": "OK", "Degraded": "Warning", "Rebuilding": "Warning", "Failed": "Critical"}[h.vdisk]
    ops = [{"OperationName": "Rebuilding", "PercentageComplete": 40}] if h.vdisk == "Rebuilding" else []
    return resource(
        VOLUME,
        "Volume.v1_5_0",
        "Disk.Virtual.0:RAID.Integrated.1-1",
        "Virtual Disk 0",
        RAIDType="RAID1",
        CapacityBytes=959119884288,
        Operations=ops,
        Links={"Drives": [ref(d) for d in DRIVES], "Drives@odata.count": len(DRIVES)},
        Oem={"Dell": {"DellVirtualDisk": {"RaidStatus": "Online" if h.vdisk == "Optimal" else h.vdisk}}},
        Status=_st(health),
    )


def dimm(bmc: Any, n: int) -> dict[str, Any]:
    doc = res.dimm(n)
    if n == 1:
        doc["Status"] = _st(health_of(bmc).memory)
    return doc


def log_entries(bmc: Any, kind: str) -> dict[str, Any]:
    base = f"{MGR}/LogServices/{kind}/Entries"
    return collection(
        base, "LogEntryCollection", "Log Entry Collection", [entry(bmc, kind, e) for e in _events(bmc, kind)]
    )


def _events(bmc: Any, kind: str) -> list[dict[str, Any]]:
    return list(reversed(health_of(bmc).events[kind]))  # newest first, as iDRAC lists them


def entry(bmc: Any, kind: str, e: dict[str, Any]) -> dict[str, Any]:
    return resource(
        f"{MGR}/LogServices/{kind}/Entries/{e['Id']}",
        "LogEntry.v1_6_1",
        e["Id"],
        "Log Entry " + e["Id"],
        Created=e["Created"],
        EntryType="SEL" if kind == "Sel" else "Oem",
        Message=e["Message"],
        MessageId=e["MessageId"],
        Severity=e["Severity"],
    )


def one_entry(bmc: Any, kind: str, ident: str) -> dict[str, Any] | None:
    e = next((e for e in health_of(bmc).events[kind] if e["Id"] == ident), None)
    return entry(bmc, kind, e) if e else None


def documents(bmc: Any) -> dict[str, Any]:
    """Paths this module serves (added to, and overriding, the resources' static ones)."""
    chs = res.chassis(bmc)

    def chassis() -> dict[str, Any]:
        doc = res.chassis(bmc)
        doc["Power"], doc["Thermal"] = ref(f"{CHS}/Power"), ref(f"{CHS}/Thermal")
        return doc

    assert chs["@odata.id"] == CHS
    docs: dict[str, Any] = {
        CHS: chassis,
        f"{CHS}/Power": lambda: power(bmc),
        f"{CHS}/Thermal": lambda: thermal(bmc),
        STORAGE: lambda: storage(bmc),
        f"{STORAGE}/Volumes": lambda: collection(
            f"{STORAGE}/Volumes", "VolumeCollection", "Volume Collection", [VOLUME]
        ),
        VOLUME: lambda: volume(bmc),
        f"{SYS}/Memory/DIMM.Socket.A1": lambda: dimm(bmc, 1),
        f"{SYS}/Memory/DIMM.Socket.A2": lambda: dimm(bmc, 2),
    }
    for n, d in enumerate(DRIVES):
        docs[d] = lambda n=n: drive(bmc, n)
    for kind in ("Sel", "Lclog"):
        docs[f"{MGR}/LogServices/{kind}/Entries"] = lambda kind=kind: log_entries(bmc, kind)
        for i in range(1, 4 * MAX_EVENTS):  # entry ids grow; the slots served are the live ones
            docs[f"{MGR}/LogServices/{kind}/Entries/{i}"] = lambda kind=kind, i=i: one_entry(
                bmc, kind, str(i)
            )
    return docs
