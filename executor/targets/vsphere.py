"""vCenter client for rackpilot's executor (pyvmomi).

Everything the vCenter handlers need, as plain data and blocking calls (pyvmomi is
synchronous; async callers use `asyncio.to_thread`):

- `VSphereClient.inventory()`: clusters (HA/DRS/admission control, affinity rules),
  hosts (version, build, connection, maintenance, service tag, BMC address), VMs with
  the device facts the blocker scan needs, datastores. One PropertyCollector pass over a
  ContainerView, never one call per object, so 3,000+ VMs stay cheap.
- maintenance mode in and out, with a server-side evacuation timeout and a
  progress-aware wait;
- cluster HA/DRS settings read as plain data, changed, and restored exactly (verified
  by reading them back);
- VM power on/off, host reconnection waits.

TLS follows `Endpoint`: verified against the system store or a per-target CA bundle, or
`insecure=True` explicitly (logged on every connect).
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import escape

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import GetWsdlName

from .endpoint import Endpoint
from .errors import (
    AuthenticationFailed,
    JobFailed,
    JobStuck,
    OperationTimedOut,
    RequestRejected,
    TargetError,
    TargetUnreachable,
    TLSConfigurationError,
    UnsupportedTarget,
)

log = logging.getLogger("rackpilot.targets.vsphere")

# Host custom attributes that may hold the BMC (iDRAC) address, in order of preference.
BMC_ATTRIBUTES = ("BMC Address", "iDRAC", "iDRAC IP", "bmc_address")
# Hardware identification types carrying a Dell service tag, in order of preference.
SERVICE_TAG_TYPES = ("ServiceTag", "EnclosureSerialNumberTag", "SerialNumberTag")


# -- errors ------------------------------------------------------------------------------
class TaskFailed(JobFailed):
    """A vCenter task ended in error; `fault` is the vim fault type (e.g. `InvalidState`)."""

    def __init__(self, message: str, *, fault: str = "", **kw: Any):
        self.fault = fault
        super().__init__(message, state="error", **kw)


class InvalidTargetState(TaskFailed):
    """vCenter refused because of the object's state (InvalidState, HostNotConnected, ...)."""

    hint = "check DRS automation, maintenance and connection state of the host or cluster"


class MaintenanceTimeout(OperationTimedOut):
    """The host did not reach maintenance mode before the evacuation timeout.

    `stuck_vms` names the VMs still running on the host when the task gave up."""

    hint = "resolve the VMs that cannot move (blocker scan), or give the evacuation more time"

    def __init__(self, message: str, *, stuck_vms: list[str] | None = None, **kw: Any):
        self.stuck_vms = stuck_vms or []
        super().__init__(message, **kw)


class ObjectNotFound(RequestRejected):
    """The managed object (host, cluster, VM) does not exist (any more) in vCenter."""

    hint = "run vcenter_sync: the inventory is out of date"


class SettingsMismatch(TargetError):
    """Cluster settings read back after a change differ from what was applied."""

    hint = "another tool or user changed the cluster at the same time; compare and fix by hand"


# -- timeouts ----------------------------------------------------------------------------
# TaskInfo.descriptionId of HostSystem.EnterMaintenanceMode_Task
ENTER_MAINTENANCE_TASK = "HostSystem.enterMaintenanceMode"


@dataclass(frozen=True)
class VSphereTimeouts:
    """Waits of the vSphere client, in seconds. `compressed(f)` divides all of them for
    time-scaled labs."""

    connect: float = 30.0  # TCP/TLS connect and each SOAP round trip
    task: float = 600.0  # an ordinary task (reconfigure, power, relocate)
    stall: float = 300.0  # a task whose state and progress do not change this long is stuck
    host_reconnect: float = 1800.0  # ESXi back after a reboot (POST of a PowerEdge takes minutes)
    poll: float = 1.0  # between two reads of a task or host state

    def compressed(self, factor: float) -> VSphereTimeouts:
        return replace(self, **{f.name: getattr(self, f.name) / factor for f in fields(self)})


# -- inventory data ----------------------------------------------------------------------
@dataclass(frozen=True)
class Datastore:
    moid: str
    name: str
    type: str
    shared: bool  # multipleHostAccess and mounted on more than one host
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class VMDevice:
    """A device fact: kind is usb, usb_controller, cdrom, floppy, vgpu, pci_passthrough or
    disk; backing is host_device, client_device, iso, image, file, passthrough or ''."""

    kind: str
    label: str
    connected: bool
    backing: str
    path: str = ""  # file name of ISO/image/disk ("[datastore] folder/file")
    datastore: str = ""  # datastore moid of that file, when known
    detail: str = ""  # vGPU profile, PCI id, USB device name


@dataclass(frozen=True)
class VM:
    moid: str
    name: str
    host: str | None
    power_state: str
    connection_state: str
    memory_mb: int
    num_cpu: int
    ft_state: str
    template: bool
    instance_uuid: str
    datastores: tuple[str, ...]
    devices: tuple[VMDevice, ...]

    @property
    def powered_on(self) -> bool:
        return self.power_state == "poweredOn"


@dataclass(frozen=True)
class Host:
    moid: str
    name: str
    cluster: str | None
    connection_state: str
    in_maintenance: bool
    power_state: str
    version: str
    build: str
    full_name: str
    memory_bytes: int
    cpu_cores: int
    vendor: str
    model: str
    uuid: str
    service_tag: str
    bmc_address: str
    boot_time: str  # ISO 8601 or ''
    vms: tuple[str, ...]
    datastores: tuple[str, ...]

    @property
    def active(self) -> bool:
        """Connected and serving VMs (not in maintenance)."""
        return self.connection_state == "connected" and not self.in_maintenance


@dataclass(frozen=True)
class AffinityRule:
    name: str
    enabled: bool
    mandatory: bool
    vms: tuple[str, ...]
    affine_hosts: tuple[str, ...]
    anti_affine_hosts: tuple[str, ...]


@dataclass(frozen=True)
class Cluster:
    moid: str
    name: str
    datacenter: str
    hosts: tuple[str, ...]
    ha: dict[str, Any]  # see ha_settings()
    drs: dict[str, Any]  # see drs_settings()
    rules: tuple[AffinityRule, ...]
    drs_vm_overrides: dict[str, str]  # vm moid -> behaviour (or "disabled")
    vsan_enabled: bool = False  # configurationEx.vsanConfigInfo.enabled

    @property
    def ha_enabled(self) -> bool:
        return bool(self.ha.get("enabled"))

    @property
    def drs_fully_automated(self) -> bool:
        return bool(self.drs.get("enabled")) and self.drs.get("default_vm_behavior") in (
            "fullyAutomated",
            "",
            None,
        )


@dataclass
class Inventory:
    vcenter: dict[str, str]
    clusters: dict[str, Cluster] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    vms: dict[str, VM] = field(default_factory=dict)
    datastores: dict[str, Datastore] = field(default_factory=dict)

    def cluster_by_name(self, name: str) -> Cluster:
        for c in self.clusters.values():
            if c.name == name:
                return c
        raise KeyError(name)

    def host_by_name(self, name: str) -> Host:
        for h in self.hosts.values():
            if h.name == name:
                return h
        raise KeyError(name)

    def vm_by_name(self, name: str) -> VM:
        for v in self.vms.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vcenter": dict(self.vcenter),
            "clusters": [asdict(c) for c in self.clusters.values()],
            "hosts": [asdict(h) for h in self.hosts.values()],
            "vms": [asdict(v) for v in self.vms.values()],
            "datastores": [asdict(d) for d in self.datastores.values()],
        }


# -- settings as plain data ----------------------------------------------------------------
def _policy_to_dict(policy: Any) -> dict[str, Any] | None:
    if policy is None:
        return None
    if isinstance(policy, vim.cluster.FailoverLevelAdmissionControlPolicy):
        return {"type": "failover_level", "failover_level": policy.failoverLevel}
    if isinstance(policy, vim.cluster.FailoverResourcesAdmissionControlPolicy):
        return {
            "type": "resources_percent",
            "cpu_percent": policy.cpuFailoverResourcesPercent,
            "memory_percent": policy.memoryFailoverResourcesPercent,
            "failover_level": policy.failoverLevel,
            "auto_compute": policy.autoComputePercentages,
        }
    if isinstance(policy, vim.cluster.FailoverHostAdmissionControlPolicy):
        return {
            "type": "failover_hosts",
            "hosts": sorted(h._moId for h in policy.failoverHosts or []),
            "failover_level": policy.failoverLevel,
        }
    # An unknown policy could not be put back exactly: refuse rather than lose it.
    raise UnsupportedTarget(
        f"HA admission control policy {type(policy).__name__} cannot be recorded exactly",
        operation="read cluster settings",
    )


def _policy_from_dict(d: dict[str, Any] | None, stub: Any) -> Any:
    if d is None:
        return None
    t = d.get("type")
    if t == "failover_level":
        return vim.cluster.FailoverLevelAdmissionControlPolicy(failoverLevel=d["failover_level"])
    if t == "resources_percent":
        return vim.cluster.FailoverResourcesAdmissionControlPolicy(
            cpuFailoverResourcesPercent=d["cpu_percent"],
            memoryFailoverResourcesPercent=d["memory_percent"],
            failoverLevel=d.get("failover_level"),
            autoComputePercentages=d.get("auto_compute"),
        )
    if t == "failover_hosts":
        return vim.cluster.FailoverHostAdmissionControlPolicy(
            failoverHosts=[vim.HostSystem(m, stub) for m in d["hosts"]],
            failoverLevel=d.get("failover_level"),
        )
    raise ValueError(f"unknown admission control policy type {t!r}")


def ha_settings(das: Any) -> dict[str, Any]:
    return {
        "enabled": bool(das.enabled),
        "admission_control_enabled": bool(das.admissionControlEnabled),
        "failover_level": int(das.failoverLevel or 0),
        "host_monitoring": das.hostMonitoring or "",
        "vm_monitoring": das.vmMonitoring or "",
        "admission_control_policy": _policy_to_dict(das.admissionControlPolicy),
    }


def drs_settings(drs: Any) -> dict[str, Any]:
    return {
        "enabled": bool(drs.enabled),
        "default_vm_behavior": drs.defaultVmBehavior or "",
        "vmotion_rate": int(drs.vmotionRate or 0),
        "enable_vm_behavior_overrides": bool(drs.enableVmBehaviorOverrides),
    }


DRS_KEYS = frozenset({"enabled", "default_vm_behavior", "vmotion_rate", "enable_vm_behavior_overrides"})
_HA_FIELDS = {
    "enabled",
    "admission_control_enabled",
    "failover_level",
    "host_monitoring",
    "vm_monitoring",
    "admission_control_policy",
}


def _das_spec(ha: dict[str, Any], stub: Any) -> Any:
    unknown = set(ha) - _HA_FIELDS
    if unknown:
        raise ValueError(f"unknown HA setting(s): {', '.join(sorted(unknown))}")
    spec = vim.cluster.DasConfigInfo()
    if "enabled" in ha:
        spec.enabled = bool(ha["enabled"])
    if "admission_control_enabled" in ha:
        spec.admissionControlEnabled = bool(ha["admission_control_enabled"])
    if ha.get("failover_level"):
        spec.failoverLevel = int(ha["failover_level"])
    if ha.get("host_monitoring"):
        spec.hostMonitoring = ha["host_monitoring"]
    if ha.get("vm_monitoring"):
        spec.vmMonitoring = ha["vm_monitoring"]
    if ha.get("admission_control_policy") is not None:
        spec.admissionControlPolicy = _policy_from_dict(ha["admission_control_policy"], stub)
    return spec


def _drs_spec(drs: dict[str, Any]) -> Any:
    unknown = set(drs) - DRS_KEYS
    if unknown:
        raise ValueError(f"unknown DRS setting(s): {', '.join(sorted(unknown))}")
    spec = vim.cluster.DrsConfigInfo()
    if "enabled" in drs:
        spec.enabled = bool(drs["enabled"])
    if drs.get("default_vm_behavior"):
        if drs["default_vm_behavior"] not in ("fullyAutomated", "partiallyAutomated", "manual"):
            raise ValueError(f"unknown DRS behaviour {drs['default_vm_behavior']!r}")
        spec.defaultVmBehavior = drs["default_vm_behavior"]
    if drs.get("vmotion_rate"):
        spec.vmotionRate = int(drs["vmotion_rate"])
    if "enable_vm_behavior_overrides" in drs:
        spec.enableVmBehaviorOverrides = bool(drs["enable_vm_behavior_overrides"])
    return spec


def _differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    diffs = []
    for key, value in want.items():
        # vSphere cannot unset a policy or a failover level; an unset recorded value is not
        # something a restore can (or needs to) reproduce.
        if value is None or (key == "failover_level" and value == 0):
            continue
        if got.get(key) != value:
            diffs.append(f"{key}: expected {value!r}, found {got.get(key)!r}")
    return diffs


# -- device facts --------------------------------------------------------------------------
# Device facts are computed from a flat record per device ("raw"), built either from
# pyvmomi objects or straight from the SOAP stream by `_DeviceStream` (the fast path of
# the inventory: deserialising 3,000+ device lists into pyvmomi objects costs seconds).
_DS_PATH = re.compile(r"^\[([^\]]+)\]\s*(.*)$")
_USB_CONTROLLERS = ("VirtualUSBController", "VirtualUSBXHCIController")
_CD_HOST = ("VirtualCdromAtapiBackingInfo", "VirtualCdromPassthroughBackingInfo")


def _raw_device(dev: Any) -> dict[str, Any]:
    """The flat record of a pyvmomi virtual device."""
    b = dev.backing
    c = getattr(dev, "connectable", None)
    ds = getattr(b, "datastore", None)
    return {
        "type": GetWsdlName(type(dev)),
        "key": dev.key,
        "label": dev.deviceInfo.label if dev.deviceInfo else "",
        "backing": GetWsdlName(type(b)) if b is not None else "",
        "fileName": getattr(b, "fileName", "") or "",
        "datastore": ds._moId if ds is not None else "",
        "deviceName": getattr(b, "deviceName", "") or "",
        "vgpu": getattr(b, "vgpu", "") or "",
        "id": getattr(b, "id", "") or "",
        "connectable": bool(c and c.connected),
        "connected": bool(getattr(dev, "connected", False)),
        "devices": len(getattr(dev, "device", None) or []),
    }


def _fact(raw: dict[str, Any], ds_by_name: dict[str, str]) -> VMDevice | None:
    """The blocker-relevant fact of one device record, or None for devices that never
    affect mobility (controllers other than USB, NICs, video, ...)."""
    t, b = raw["type"], raw["backing"]
    label = raw["label"] or f"device {raw['key']}"
    connected = raw["connectable"]

    def file_fact(kind: str, connected: bool) -> VMDevice:
        path, ds = raw["fileName"], raw["datastore"]
        if not ds:
            m = _DS_PATH.match(path)
            ds = ds_by_name.get(m.group(1), "") if m else ""
        backing = {"cdrom": "iso", "floppy": "image"}.get(kind, "file")
        return VMDevice(kind, label, connected, backing, path=path, datastore=ds)

    if t == "VirtualUSB":
        backing = {
            "VirtualUSBUSBBackingInfo": "host_device",
            "VirtualUSBRemoteClientBackingInfo": "client_device",
        }
        return VMDevice("usb", label, raw["connected"] or connected, backing.get(b, "passthrough"),
                        detail=raw["deviceName"])  # fmt: skip
    if t in _USB_CONTROLLERS:
        return VMDevice("usb_controller", label, True, "", detail=f"devices={raw['devices']}")
    if t in ("VirtualCdrom", "VirtualFloppy"):
        kind = "cdrom" if t == "VirtualCdrom" else "floppy"
        if b in ("VirtualCdromIsoBackingInfo", "VirtualFloppyImageBackingInfo"):
            return file_fact(kind, connected)
        if b in _CD_HOST or b == "VirtualFloppyDeviceBackingInfo":
            return VMDevice(kind, label, connected, "host_device", detail=raw["deviceName"])
        return VMDevice(kind, label, connected, "client_device")
    if t == "VirtualPCIPassthrough":
        if b == "VirtualPCIPassthroughVmiopBackingInfo":
            return VMDevice("vgpu", label, True, "passthrough", detail=raw["vgpu"])
        return VMDevice("pci_passthrough", label, True, "passthrough", detail=raw["id"] or raw["deviceName"])
    if t == "VirtualDisk":
        return file_fact("disk", True)
    return None


def device_fact(dev: Any, ds_by_name: dict[str, str]) -> VMDevice | None:
    """The blocker-relevant fact of one pyvmomi virtual device (see `_fact`)."""
    return _fact(_raw_device(dev), ds_by_name)


_XSI_TYPE = "http://www.w3.org/2001/XMLSchema-instance type"
# Leaves copied into the device record: children of the device element, and grandchildren
# by (child, grandchild).
_DEV_LEAVES = {"key": "key", "connected": "connected"}
_SUB_LEAVES = {
    ("deviceInfo", "label"): "label",
    ("backing", "fileName"): "fileName",
    ("backing", "datastore"): "datastore",
    ("backing", "deviceName"): "deviceName",
    ("backing", "vgpu"): "vgpu",
    ("backing", "id"): "id",
    ("connectable", "connected"): "connectable",
}


class _DeviceStream:
    """Streams a RetrievePropertiesEx response for `config.hardware.device` into device
    records per VM, without building pyvmomi objects. Some 140 elements per VM reach these
    handlers (450,000 for 3,200 VMs), so they do the least they can per element."""

    def __init__(self) -> None:
        self.devices: dict[str, list[dict[str, Any]]] = {}
        self.token = ""
        self.fault = False
        self._path: list[str] = []
        self._text: list[str] = []
        self._vm = ""
        self._dev: dict[str, Any] | None = None
        self._dev_depth = 0
        self._local: dict[str, str] = {}  # expat name ("ns local") -> local name

    def parse(self, stream: Any) -> None:
        p = expat.ParserCreate(namespace_separator=" ")
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text.append
        p.ParseFile(stream)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        local = self._local.get(name)
        if local is None:
            local = self._local[name] = name.rsplit(" ", 1)[-1]
        path = self._path
        path.append(local)
        self._text.clear()
        dev = self._dev
        if dev is None:
            if local == "VirtualDevice" and len(path) > 1 and path[-2] == "val":
                self._dev = {"type": attrs.get(_XSI_TYPE, "").rsplit(":", 1)[-1], "key": 0, "label": "",
                             "backing": "", "fileName": "", "datastore": "", "deviceName": "", "vgpu": "", "id": "",
                             "connectable": False, "connected": False, "devices": 0}  # fmt: skip
                self._dev_depth = len(path)
            elif local == "Fault":
                self.fault = True
        elif local == "backing" and len(path) == self._dev_depth + 1:
            dev["backing"] = attrs.get(_XSI_TYPE, "").rsplit(":", 1)[-1]

    def _end(self, name: str) -> None:
        path = self._path
        local = path.pop()
        dev = self._dev
        if dev is not None:
            rel = len(path) + 1 - self._dev_depth  # 0: the device element, 1: its child, ...
            if rel == 1:
                field_name = _DEV_LEAVES.get(local)
                if field_name == "key":
                    dev["key"] = int("".join(self._text) or 0)
                elif field_name:
                    dev[field_name] = "".join(self._text).strip() == "true"
                elif local == "device":
                    dev["devices"] += 1
            elif rel == 2:
                field_name = _SUB_LEAVES.get((path[-1], local))
                if field_name == "connectable":
                    dev[field_name] = "".join(self._text).strip() == "true"
                elif field_name:
                    dev[field_name] = "".join(self._text)
            elif rel == 0:
                self.devices.setdefault(self._vm, []).append(dev)
                self._dev = None
        elif local == "obj" and path and path[-1] == "objects":
            self._vm = text = "".join(self._text)
            self.devices.setdefault(text, [])
        elif local == "token" and path and path[-1] == "returnval":
            self.token = "".join(self._text)
        self._text.clear()


# -- the client ----------------------------------------------------------------------------
_HOST_PROPS = [
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "runtime.powerState",
    "runtime.bootTime",
    "summary.config.product",
    "summary.hardware",
    "customValue",
    "vm",
    "datastore",
]
_VM_PROPS = [
    "name",
    "runtime.host",
    "runtime.powerState",
    "runtime.connectionState",
    "runtime.faultToleranceState",
    "config.hardware.memoryMB",
    "config.hardware.numCPU",
    "config.hardware.device",
    "config.template",
    "config.instanceUuid",
    "datastore",
]
_VM_PROPS_LIGHT = [p for p in _VM_PROPS if p != "config.hardware.device"]
_CLUSTER_PROPS = ["name", "parent", "host", "configurationEx"]
_DS_PROPS = ["name", "summary.type", "summary.multipleHostAccess", "host"]


def _moid(obj: Any) -> str:
    return obj._moId if obj is not None else ""


class VSphereClient:
    """One session to one vCenter. Use as a context manager, or `connect()`/`close()`."""

    def __init__(
        self,
        endpoint: Endpoint,
        timeouts: VSphereTimeouts | None = None,
        *,
        bmc_attributes: tuple[str, ...] = BMC_ATTRIBUTES,
        page_size: int = 1000,
        fast_devices: bool = True,
    ):
        self.endpoint = endpoint
        self.timeouts = timeouts or VSphereTimeouts()
        self.bmc_attributes = bmc_attributes
        self.page_size = page_size
        # Read VM device lists from the SOAP stream (False: through pyvmomi objects).
        self.fast_devices = fast_devices
        self._si: Any = None

    # connection ------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        if self.endpoint.url.startswith("http://"):
            raise TLSConfigurationError("vCenter is only reachable over HTTPS", target=self.endpoint.display)
        if self.endpoint.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.endpoint.ca_bundle)

    def connect(self) -> VSphereClient:
        from urllib.parse import urlsplit

        parts = urlsplit(self.endpoint.url)
        self.endpoint.announce(log)
        target = self.endpoint.display
        try:
            self._si = SmartConnect(
                host=parts.hostname,
                port=parts.port or 443,
                user=self.endpoint.username,
                pwd=self.endpoint.password,
                sslContext=self._ssl_context(),
                httpConnectionTimeout=self.timeouts.connect,
                connectionPoolTimeout=-1,
            )
        except vim.fault.InvalidLogin:
            raise AuthenticationFailed(
                "vCenter refused the credentials", target=target, operation="login"
            ) from None
        except ssl.SSLError as e:
            raise TLSConfigurationError(
                f"TLS handshake failed: {e.reason or e}", target=target, operation="login"
            ) from None
        except OSError as e:
            raise TargetUnreachable(f"cannot reach vCenter: {e}", target=target, operation="login") from None
        return self

    def close(self) -> None:
        si, self._si = self._si, None
        if si is not None:
            try:
                Disconnect(si)
            except Exception:  # noqa: BLE001 - logging out of a dead session must not mask the real error
                log.debug("vCenter logout failed", exc_info=True)

    def __enter__(self) -> VSphereClient:
        return self.connect() if self._si is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def content(self) -> Any:
        if self._si is None:
            raise TargetError("not connected", target=self.endpoint.display)
        return self._si.RetrieveContent()

    def _stub(self) -> Any:
        return self._si._stub

    @staticmethod
    def _task_state_reader(task: Any) -> Callable[[], Any]:
        """A call that reads ``task``'s state now (for ``_call`` in a polling loop)."""
        return lambda: task.info.state

    def _obj(self, kind: Any, moid: str) -> Any:
        return kind(moid, self._stub())

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        """Run one SOAP call, turning transport and well-known faults into TargetErrors."""
        target = self.endpoint.display
        try:
            return fn()
        except vmodl.fault.ManagedObjectNotFound as e:
            raise ObjectNotFound(
                f"object {_moid(e.obj)} does not exist", target=target, operation=operation
            ) from None
        except vim.fault.NotAuthenticated:
            raise AuthenticationFailed(
                "the vCenter session expired", target=target, operation=operation
            ) from None
        except ssl.SSLError as e:
            raise TLSConfigurationError(f"TLS error: {e}", target=target, operation=operation) from None
        except OSError as e:
            raise TargetUnreachable(
                f"vCenter did not answer: {e}", target=target, operation=operation
            ) from None

    # property collector -------------------------------------------------------------------
    def _retrieve(
        self, props: dict[Any, list[str]], objects: list[Any] | None = None, view: Any = None
    ) -> list[Any]:
        """Read properties of every object of the given types (through a ContainerView,
        created here unless given) or of the given objects, in pages."""
        pc = vmodl.query.PropertyCollector
        content = self.content
        own_view = None
        if objects is None:
            if view is None:
                view = own_view = self._container_view(list(props))
            traversal = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            object_set = [pc.ObjectSpec(obj=view, skip=True, selectSet=[traversal])]
        else:
            object_set = [pc.ObjectSpec(obj=o, skip=False) for o in objects]
        spec = pc.FilterSpec(
            objectSet=object_set,
            propSet=[pc.PropertySpec(type=t, pathSet=paths, all=False) for t, paths in props.items()],
        )
        out: list[Any] = []
        try:
            collector = content.propertyCollector
            result = self._call(
                "inventory",
                lambda: collector.RetrievePropertiesEx([spec], pc.RetrieveOptions(maxObjects=self.page_size)),
            )
            while result is not None:
                out.extend(result.objects or [])
                if not result.token:
                    break
                token = result.token
                result = self._call(
                    "inventory", functools.partial(collector.ContinueRetrievePropertiesEx, token)
                )
        finally:
            if own_view is not None:
                self._call("inventory", own_view.Destroy)
        return out

    def _container_view(self, types: list[Any]) -> Any:
        content = self.content
        return self._call(
            "inventory", lambda: content.viewManager.CreateContainerView(content.rootFolder, types, True)
        )

    def _soap(self, body: str) -> _DeviceStream:
        """POST one SOAP call on the session's connection pool and stream the answer into
        device records. Raises TargetError when vCenter answers with a fault."""
        stub = self._stub()
        envelope = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        ).encode()
        headers = {
            "Cookie": stub.cookie,
            "SOAPAction": stub.versionId,
            "Content-Type": "text/xml; charset=UTF-8",
        }
        conn = stub.GetConnection()
        stream = _DeviceStream()
        try:
            conn.request("POST", stub.path, envelope, headers)
            resp = conn.getresponse()
            stream.parse(resp)
            resp.read()
        except (OSError, expat.ExpatError) as e:
            conn.close()
            stub.DropConnections()
            raise TargetUnreachable(f"reading VM devices failed: {e}", target=self.endpoint.display,
                                    operation="inventory") from None  # fmt: skip
        stub.ReturnConnection(conn)
        if resp.status != 200 or stream.fault:
            raise TargetError(f"vCenter answered HTTP {resp.status} to the device query",
                              target=self.endpoint.display, operation="inventory")  # fmt: skip
        return stream

    def _device_records(self, view: Any) -> dict[str, list[dict[str, Any]]]:
        """`config.hardware.device` of every VM in the view, as device records, read from
        the SOAP stream directly (pyvmomi objects for 3,000+ device lists cost seconds)."""
        pc = escape(self.content.propertyCollector._moId)
        body = (
            f'<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">{pc}</_this>'
            "<specSet><propSet><type>VirtualMachine</type><all>false</all>"
            "<pathSet>config.hardware.device</pathSet></propSet>"
            f'<objectSet><obj type="ContainerView">{escape(view._moId)}</obj><skip>true</skip>'
            '<selectSet xsi:type="TraversalSpec"><name>view</name><type>ContainerView</type>'
            "<path>view</path><skip>false</skip></selectSet></objectSet></specSet>"
            f"<options><maxObjects>{self.page_size}</maxObjects></options></RetrievePropertiesEx>"
        )
        records: dict[str, list[dict[str, Any]]] = {}
        while True:
            stream = self._soap(body)
            records.update(stream.devices)
            if not stream.token:
                return records
            body = (
                f'<ContinueRetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">{pc}</_this>'
                f"<token>{escape(stream.token)}</token></ContinueRetrievePropertiesEx>"
            )

    @staticmethod
    def _props(oc: Any) -> dict[str, Any]:
        return {p.name: p.val for p in oc.propSet or []}

    def _field_names(self) -> dict[int, str]:
        cfm = self.content.customFieldsManager
        if cfm is None:  # a standalone ESXi host has no custom attributes
            return {}
        return {f.key: f.name for f in self._call("inventory", lambda: cfm.field) or []}

    def inventory(self) -> Inventory:
        """Clusters, hosts, VMs and datastores of the whole vCenter in one pass."""
        about = self.content.about
        inv = Inventory(
            vcenter={
                "instance_uuid": about.instanceUuid or "",
                "version": about.version or "",
                "build": about.build or "",
                "api_version": about.apiVersion or "",
                "name": about.fullName or "",
            }
        )
        props = {
            vim.Datacenter: ["name", "parent"],
            vim.Folder: ["name", "parent"],
            vim.ClusterComputeResource: _CLUSTER_PROPS,
            vim.HostSystem: _HOST_PROPS,
            vim.VirtualMachine: _VM_PROPS if not self.fast_devices else _VM_PROPS_LIGHT,
            vim.Datastore: _DS_PROPS,
        }
        view = self._container_view(list(props))
        try:
            objs = self._retrieve(props, view=view)
            raw_devices = self._device_records(view) if self.fast_devices else {}
        finally:
            self._call("inventory", view.Destroy)
        fields_by_key = self._field_names()
        by_type, datacenter_of = self._by_type(objs)
        for moid, p in by_type.get(vim.Datastore, []):
            inv.datastores[moid] = self._datastore(moid, p)
        ds_by_name = {d.name: d.moid for d in inv.datastores.values()}

        host_cluster: dict[str, str] = {}
        for moid, p in by_type.get(vim.ClusterComputeResource, []):
            cluster = self._cluster(moid, p, datacenter_of(moid))
            inv.clusters[moid] = cluster
            for h in cluster.hosts:
                host_cluster[h] = moid

        for moid, p in by_type.get(vim.HostSystem, []):
            inv.hosts[moid] = self._host(moid, p, host_cluster.get(moid), fields_by_key)

        for moid, p in by_type.get(vim.VirtualMachine, []):
            if self.fast_devices:
                facts = (_fact(r, ds_by_name) for r in raw_devices.get(moid, []))
            else:
                facts = (device_fact(d, ds_by_name) for d in p.get("config.hardware.device") or [])
            inv.vms[moid] = self._vm(moid, p, tuple(f for f in facts if f))
        return inv

    def _by_type(
        self, objs: list[Any]
    ) -> tuple[dict[type, list[tuple[str, dict[str, Any]]]], Callable[[str], str]]:
        """The retrieved objects' (moid, properties) by managed type, and the name of the
        datacenter an object lies in (by its chain of parents; "" outside one)."""
        parents: dict[str, tuple[str, str]] = {}  # moid -> (parent moid, type)
        names: dict[str, str] = {}
        by_type: dict[type, list[tuple[str, dict[str, Any]]]] = {}
        for oc in objs:
            p = self._props(oc)
            moid = oc.obj._moId
            names[moid] = p.get("name", "")
            parent = p.get("parent")
            if parent is not None:
                parents[moid] = (parent._moId, type(parent).__name__)
            by_type.setdefault(type(oc.obj), []).append((moid, p))
        datacenters = {m for m, _ in by_type.get(vim.Datacenter, [])}

        def datacenter_of(moid: str) -> str:
            seen = 0
            while moid in parents and seen < 64:
                moid = parents[moid][0]
                seen += 1
                if moid in datacenters:
                    return names.get(moid, "")
            return ""

        return by_type, datacenter_of

    @staticmethod
    def _datastore(moid: str, p: dict[str, Any]) -> Datastore:
        mounts = tuple(
            m.key._moId
            for m in p.get("host") or []
            if m.mountInfo is None or m.mountInfo.mounted is not False
        )
        shared = bool(p.get("summary.multipleHostAccess")) and len(mounts) > 1
        return Datastore(moid, p.get("name", ""), p.get("summary.type") or "", shared, mounts)

    @staticmethod
    def _vm(moid: str, p: dict[str, Any], devices: tuple[Any, ...]) -> VM:
        host = p.get("runtime.host")
        return VM(
            moid=moid,
            name=p.get("name", ""),
            host=host._moId if host is not None else None,
            power_state=str(p.get("runtime.powerState") or ""),
            connection_state=str(p.get("runtime.connectionState") or ""),
            memory_mb=int(p.get("config.hardware.memoryMB") or 0),
            num_cpu=int(p.get("config.hardware.numCPU") or 0),
            ft_state=str(p.get("runtime.faultToleranceState") or "notConfigured"),
            template=bool(p.get("config.template")),
            instance_uuid=p.get("config.instanceUuid") or "",
            datastores=tuple(d._moId for d in p.get("datastore") or []),
            devices=devices,
        )

    def _cluster(self, moid: str, p: dict[str, Any], datacenter: str) -> Cluster:
        cfg = p.get("configurationEx")
        groups: dict[str, tuple[str, ...]] = {}
        rules: list[AffinityRule] = []
        overrides: dict[str, str] = {}
        ha: dict[str, Any] = {}
        drs: dict[str, Any] = {}
        if cfg is not None:
            ha = ha_settings(cfg.dasConfig) if cfg.dasConfig else {}
            drs = drs_settings(cfg.drsConfig) if cfg.drsConfig else {}
            for g in cfg.group or []:
                if isinstance(g, vim.cluster.VmGroup):
                    groups[g.name] = tuple(v._moId for v in g.vm or [])
                elif isinstance(g, vim.cluster.HostGroup):
                    groups[g.name] = tuple(h._moId for h in g.host or [])
            for r in cfg.rule or []:
                if isinstance(r, vim.cluster.VmHostRuleInfo):
                    rules.append(
                        AffinityRule(
                            name=r.name or "",
                            enabled=bool(r.enabled),
                            mandatory=bool(r.mandatory),
                            vms=groups.get(r.vmGroupName or "", ()),
                            affine_hosts=groups.get(r.affineHostGroupName, ())
                            if r.affineHostGroupName
                            else (),
                            anti_affine_hosts=groups.get(r.antiAffineHostGroupName, ())
                            if r.antiAffineHostGroupName
                            else (),
                        )
                    )
            for o in cfg.drsVmConfig or []:
                overrides[o.key._moId] = "disabled" if o.enabled is False else (o.behavior or "")
        return Cluster(
            moid=moid,
            name=p.get("name", ""),
            datacenter=datacenter,
            hosts=tuple(h._moId for h in p.get("host") or []),
            ha=ha,
            drs=drs,
            rules=tuple(rules),
            drs_vm_overrides=overrides,
            vsan_enabled=bool(cfg is not None and cfg.vsanConfigInfo and cfg.vsanConfigInfo.enabled),
        )

    def _host(self, moid: str, p: dict[str, Any], cluster: str | None, fields_by_key: dict[int, str]) -> Host:
        product = p.get("summary.config.product")
        hw = p.get("summary.hardware")
        ids: dict[str, str] = {}
        for info in getattr(hw, "otherIdentifyingInfo", None) or []:
            key = info.identifierType.key if info.identifierType else ""
            ids.setdefault(key, info.identifierValue or "")
        service_tag = next((ids[t] for t in SERVICE_TAG_TYPES if ids.get(t)), "")
        attrs = {fields_by_key.get(cv.key, ""): getattr(cv, "value", "") for cv in p.get("customValue") or []}
        bmc = next((attrs[a] for a in self.bmc_attributes if attrs.get(a)), "")
        boot = p.get("runtime.bootTime")
        return Host(
            moid=moid,
            name=p.get("name", ""),
            cluster=cluster,
            connection_state=str(p.get("runtime.connectionState") or ""),
            in_maintenance=bool(p.get("runtime.inMaintenanceMode")),
            power_state=str(p.get("runtime.powerState") or ""),
            version=getattr(product, "version", "") or "",
            build=getattr(product, "build", "") or "",
            full_name=getattr(product, "fullName", "") or "",
            memory_bytes=int(getattr(hw, "memorySize", 0) or 0),
            cpu_cores=int(getattr(hw, "numCpuCores", 0) or 0),
            vendor=getattr(hw, "vendor", "") or "",
            model=getattr(hw, "model", "") or "",
            uuid=getattr(hw, "uuid", "") or "",
            service_tag=service_tag,
            bmc_address=bmc,
            boot_time=boot.isoformat() if boot else "",
            vms=tuple(v._moId for v in p.get("vm") or []),
            datastores=tuple(d._moId for d in p.get("datastore") or []),
        )

    def host(self, moid: str) -> Host:
        """Current state of one host (a single property read, for waits)."""
        objs = self._retrieve({vim.HostSystem: _HOST_PROPS}, [self._obj(vim.HostSystem, moid)])
        if not objs:
            raise ObjectNotFound(f"host {moid} does not exist", target=self.endpoint.display)
        parent = self._props(objs[0]).get("parent")
        cluster = parent._moId if isinstance(parent, vim.ClusterComputeResource) else None
        return self._host(moid, self._props(objs[0]), cluster, self._field_names())

    def vm_power_state(self, moid: str) -> str:
        objs = self._retrieve(
            {vim.VirtualMachine: ["runtime.powerState"]}, [self._obj(vim.VirtualMachine, moid)]
        )
        return str(self._props(objs[0]).get("runtime.powerState") or "") if objs else ""

    # tasks ----------------------------------------------------------------------------------
    def wait_for_task(
        self,
        task: Any,
        *,
        operation: str,
        timeout: float | None = None,
        stall: float | None = None,
        on_progress: Callable[[int | None, str], None] | None = None,
    ) -> Any:
        """Wait for a task, telling "stalled" from "slow": the stall clock restarts whenever
        the task's state or progress changes; `timeout` bounds the whole wait. On either
        limit the task is cancelled (when vCenter allows) and JobStuck/OperationTimedOut
        is raised. A task error raises TaskFailed (InvalidTargetState for state faults)."""
        timeout = self.timeouts.task if timeout is None else timeout
        stall = self.timeouts.stall if stall is None else stall
        target = self.endpoint.display
        start = last_change = time.monotonic()
        seen: tuple[str, int | None] | None = None
        while True:
            info = self._call(operation, lambda: task.info)
            state, progress = str(info.state), info.progress
            now = time.monotonic()
            if (state, progress) != seen:
                seen, last_change = (state, progress), now
                if on_progress is not None:
                    on_progress(progress, state)
            if state == "success":
                return info.result
            if state == "error":
                raise self._task_error(info.error, operation)
            if now - start > timeout:
                self._cancel(task)
                raise OperationTimedOut(
                    f"task {task._moId} did not finish within {timeout:g}s",
                    target=target,
                    operation=operation,
                )
            if now - last_change > stall:
                self._cancel(task)
                raise JobStuck(
                    f"task {task._moId} made no progress for {stall:g}s",
                    job_id=task._moId,
                    state=state,
                    percent=progress,
                    target=target,
                    operation=operation,
                )
            time.sleep(self.timeouts.poll)

    def _cancel(self, task: Any) -> None:
        try:
            task.CancelTask()
        except (vmodl.MethodFault, OSError):
            log.warning("vCenter refused to cancel task %s", task._moId)

    def _task_error(self, fault: Any, operation: str) -> TaskFailed:
        name = type(fault).__name__.rsplit(".", 1)[-1] if fault is not None else "unknown"
        msg = getattr(fault, "msg", "") or name
        target = self.endpoint.display
        if isinstance(
            fault, vim.fault.InvalidState | vmodl.fault.HostNotConnected | vim.fault.InvalidPowerState
        ):
            return InvalidTargetState(
                f"vCenter refused: {msg}", fault=name, target=target, operation=operation
            )
        return TaskFailed(f"task failed: {msg}", fault=name, target=target, operation=operation)

    # maintenance ----------------------------------------------------------------------------
    def enter_maintenance(
        self,
        host: str,
        timeout: float,
        *,
        evacuate_powered_off: bool = False,
        on_progress: Callable[[int | None, str], None] | None = None,
        vsan_mode: str | None = None,
        on_task: Callable[[str], None] | None = None,
    ) -> None:
        """Put a host into maintenance mode, letting DRS evacuate it for up to `timeout`
        seconds (vCenter enforces it and fails the task with Timedout). Idempotent.
        ``vsan_mode``: the vSAN object action of a vSAN host (ensureObjectAccessibility,
        evacuateAllData or noAction; None: vCenter's default). ``on_task`` gets the task's
        id as soon as vCenter has created it, before the wait (see end_maintenance_tasks)."""
        if timeout <= 0:
            raise ValueError("the evacuation timeout must be positive")
        current = self.host(host)
        if current.in_maintenance:
            return
        h = self._obj(vim.HostSystem, host)
        spec = (
            vim.host.MaintenanceSpec(vsanMode=vim.vsan.host.DecommissionMode(objectAction=vsan_mode))
            if vsan_mode
            else None
        )
        task = self._call(
            "enter maintenance",
            lambda: h.EnterMaintenanceMode_Task(
                timeout=max(1, int(round(timeout))),
                evacuatePoweredOffVms=evacuate_powered_off,
                maintenanceSpec=spec,
            ),
        )
        if on_task is not None:
            # before the wait: whoever cleans up after this process can find the task
            on_task(task._moId)
        try:
            # vCenter owns the evacuation timeout; the client waits a little longer so the
            # server's verdict (Timedout, with VMs left) is what the caller sees.
            self.wait_for_task(
                task,
                operation="enter maintenance",
                timeout=timeout + max(5.0, 10 * self.timeouts.poll),
                stall=timeout + max(5.0, 10 * self.timeouts.poll),
                on_progress=on_progress,
            )
        except TaskFailed as e:
            if e.fault == "Timedout":
                stuck = [v.name for v in self._vms_on(host) if v.powered_on or evacuate_powered_off]
                raise MaintenanceTimeout(
                    f"host {current.name} did not enter maintenance within {timeout:g}s; "
                    f"still on it: {', '.join(stuck) or 'none'}",
                    stuck_vms=stuck,
                    target=self.endpoint.display,
                    operation="enter maintenance",
                ) from None
            raise

    # vSAN (the vSAN Management SDK endpoint /vsanHealth, with this session's cookie) --------
    def _vsan_mo(self, kind: Any, moid: str) -> Any:
        from urllib.parse import urlsplit

        from pyVmomi import SoapStubAdapter

        parts = urlsplit(self.endpoint.url)
        stub = SoapStubAdapter(
            host=parts.hostname,
            port=parts.port or 443,
            path="/vsanHealth",
            version="vsan.version.version18",
            sslContext=self._ssl_context(),
            connectionPoolTimeout=-1,
        )
        stub.cookie = self._stub().cookie
        return kind(moid, stub)

    def _vsan_call(self, operation: str, fn: Callable[[], Any]) -> Any:
        try:
            return self._call(operation, fn)
        except vmodl.MethodFault as e:
            raise RequestRejected(
                f"vSAN service refused: {getattr(e, 'msg', '') or type(e).__name__}",
                target=self.endpoint.display,
                operation=operation,
            ) from None

    def vsan_health(self, cluster: str) -> dict[str, Any]:
        """vSAN health of a cluster: ``{"overall": green|yellow|red, "failing": [test names]}``."""
        hs = self._vsan_mo(vim.cluster.VsanVcClusterHealthSystem, "vsan-cluster-health-system")
        c = self._obj(vim.ClusterComputeResource, cluster)
        s = self._vsan_call(
            "vSAN health", lambda: hs.VsanQueryVcClusterHealthSummary(cluster=c, fetchFromCache=True)
        )
        failing = [
            f"{g.groupName}: {t.testName} {t.testHealth}"
            for g in s.groups or []
            for t in g.groupTests or []
            if t.testHealth not in ("green", "info", "skipped")
        ]
        return {"overall": str(s.overallHealth or ""), "failing": failing}

    def vsan_resync(self, cluster: str) -> dict[str, int]:
        """Objects still resyncing in a vSAN cluster: objects, bytes and vSAN's ETA (s)."""
        os_ = self._vsan_mo(vim.cluster.VsanObjectSystem, "vsan-cluster-object-system")
        c = self._obj(vim.ClusterComputeResource, cluster)
        r = self._vsan_call("vSAN resync", lambda: os_.QuerySyncingVsanObjectsSummary(cluster=c))
        return {
            "objects": int(r.totalObjectsToSync or 0),
            "bytes": int(r.totalBytesToSync or 0),
            "eta_s": int(r.totalRecoveryETA or 0),
        }

    def _vms_on(self, host: str) -> list[VM]:
        refs = [self._obj(vim.VirtualMachine, m) for m in self.host(host).vms]
        if not refs:
            return []
        out = []
        for oc in self._retrieve({vim.VirtualMachine: ["name", "runtime.powerState"]}, refs):
            p = self._props(oc)
            out.append(
                VM(
                    oc.obj._moId,
                    p.get("name", ""),
                    host,
                    str(p.get("runtime.powerState")),
                    "",
                    0,
                    0,
                    "",
                    False,
                    "",
                    (),
                    (),
                )  # fmt: skip
            )
        return out

    def maintenance_tasks(self, host: str, task_ids: Iterable[str] = ()) -> list[str]:
        """Enter-maintenance tasks of ``host`` that are still queued or running: among the
        given task ids (saved by whoever started them) and the recent tasks vCenter lists
        for the host and for the task manager."""
        candidates = {str(t) for t in task_ids if t}
        h = self._obj(vim.HostSystem, host)
        for refs in (
            self._call("recent tasks", lambda: h.recentTask),
            self._call("recent tasks", lambda: self.content.taskManager.recentTask),
        ):
            candidates.update(t._moId for t in refs or [])
        if not candidates:
            return []
        paths = ["info.entity", "info.descriptionId", "info.state"]
        try:
            objs = self._retrieve({vim.Task: paths}, [self._obj(vim.Task, t) for t in sorted(candidates)])
        except ObjectNotFound:  # a saved task vCenter has since forgotten: read one by one
            objs = []
            for t in sorted(candidates):
                try:
                    objs += self._retrieve({vim.Task: paths}, [self._obj(vim.Task, t)])
                except ObjectNotFound:
                    continue
        out = []
        for oc in objs:
            p = self._props(oc)
            entity = p.get("info.entity")
            if (
                entity is not None
                and entity._moId == host
                and p.get("info.descriptionId") == ENTER_MAINTENANCE_TASK
                and str(p.get("info.state")) in ("queued", "running")
            ):
                out.append(oc.obj._moId)
        return sorted(out)

    def end_maintenance_tasks(
        self, host: str, task_ids: Iterable[str] = (), timeout: float | None = None
    ) -> list[dict[str, str]]:
        """Cancel every enter-maintenance task of ``host`` still running (maintenance_tasks)
        and wait until each has ended, so that a host brought back afterwards cannot be put
        into maintenance by an evacuation that was still under way (its starter died, say).
        A task vCenter will not cancel is awaited. Returns ``[{task, outcome}]`` with
        outcome cancelled (ended in error after the cancel), failed or succeeded (the host
        went into maintenance after all: the caller takes it out)."""
        timeout = self.timeouts.task if timeout is None else timeout
        out = []
        for moid in self.maintenance_tasks(host, task_ids):
            task = self._obj(vim.Task, moid)
            asked = True
            try:
                self._call("cancel task", task.CancelTask)
            except vmodl.MethodFault as e:  # finished meanwhile, or not cancelable: wait for it
                asked = False
                log.info("task %s not cancelled (%s); waiting for it", moid, type(e).__name__)
            deadline = time.monotonic() + timeout
            while (state := str(self._call("cancel task", self._task_state_reader(task)))) not in (
                "success",
                "error",
            ):
                if time.monotonic() > deadline:
                    raise OperationTimedOut(
                        f"maintenance task {moid} of host {host} still {state} {timeout:g}s after "
                        "it was asked to cancel",
                        target=self.endpoint.display,
                        operation="cancel task",
                    )
                time.sleep(self.timeouts.poll)
            outcome = "succeeded" if state == "success" else "cancelled" if asked else "failed"
            out.append({"task": moid, "outcome": outcome})
        return out

    def exit_maintenance(self, host: str, timeout: float | None = None) -> None:
        """Take a host out of maintenance mode. Idempotent."""
        if not self.host(host).in_maintenance:
            return
        h = self._obj(vim.HostSystem, host)
        secs = int(timeout or self.timeouts.task)
        task = self._call("exit maintenance", lambda: h.ExitMaintenanceMode_Task(timeout=secs))
        self.wait_for_task(task, operation="exit maintenance", timeout=timeout)

    def wait_for_host(
        self, host: str, *, connection_state: str = "connected", timeout: float | None = None,
        booted_after: str | None = None,
    ) -> Host:  # fmt: skip
        """Wait until a host reaches a connection state (and, with `booted_after`, has a
        later boot time than that ISO timestamp: proof that a reboot really happened)."""
        timeout = self.timeouts.host_reconnect if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            h = self.host(host)
            if h.connection_state == connection_state and (
                booted_after is None or h.boot_time > booted_after
            ):
                return h
            if time.monotonic() > deadline:
                raise OperationTimedOut(
                    f"host {h.name} is {h.connection_state}, not {connection_state}, after {timeout:g}s",
                    target=self.endpoint.display,
                    operation="wait for host",
                )
            time.sleep(self.timeouts.poll)

    # cluster settings -----------------------------------------------------------------------
    def read_cluster_settings(self, cluster: str) -> dict[str, Any]:
        """HA and DRS settings as plain data (JSON-safe), to record before a change."""
        objs = self._retrieve(
            {vim.ClusterComputeResource: ["configurationEx"]},
            [self._obj(vim.ClusterComputeResource, cluster)],
        )
        if not objs:
            raise ObjectNotFound(f"cluster {cluster} does not exist", target=self.endpoint.display)
        cfg = self._props(objs[0])["configurationEx"]
        return {"ha": ha_settings(cfg.dasConfig), "drs": drs_settings(cfg.drsConfig)}

    def apply_cluster_settings(
        self, cluster: str, *, ha: dict[str, Any] | None = None, drs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Change only the given HA/DRS settings; return the settings read back."""
        if not ha and not drs:
            raise ValueError("nothing to change")
        stub = self._stub()
        spec = vim.cluster.ConfigSpecEx()
        if ha:
            spec.dasConfig = _das_spec(ha, stub)
        if drs:
            spec.drsConfig = _drs_spec(drs)
        c = self._obj(vim.ClusterComputeResource, cluster)
        task = self._call("reconfigure cluster", lambda: c.ReconfigureComputeResource_Task(spec, True))
        self.wait_for_task(task, operation="reconfigure cluster")
        after = self.read_cluster_settings(cluster)
        diffs = _differences(ha or {}, after["ha"]) + _differences(drs or {}, after["drs"])
        if diffs:
            raise SettingsMismatch(
                "cluster settings differ after reconfiguration: " + "; ".join(diffs),
                target=self.endpoint.display,
                operation="reconfigure cluster",
            )
        return after

    def restore_cluster_settings(self, cluster: str, recorded: dict[str, Any]) -> dict[str, Any]:
        """Put back settings recorded by `read_cluster_settings`, exactly; a no-op when they
        already match. Raises SettingsMismatch if vCenter ends up different."""
        current = self.read_cluster_settings(cluster)
        if not _differences(recorded["ha"], current["ha"]) and not _differences(
            recorded["drs"], current["drs"]
        ):
            return current
        return self.apply_cluster_settings(cluster, ha=recorded["ha"], drs=recorded["drs"])

    def migrate_vm(self, vm: str, host: str, timeout: float | None = None) -> None:
        """vMotion a VM to another host of its cluster; nothing to do when it is there."""
        objs = self._retrieve({vim.VirtualMachine: ["runtime.host"]}, [self._obj(vim.VirtualMachine, vm)])
        if not objs:
            raise ObjectNotFound(f"VM {vm} does not exist", target=self.endpoint.display)
        current = self._props(objs[0]).get("runtime.host")
        if current is not None and current._moId == host:
            return
        v = self._obj(vim.VirtualMachine, vm)
        spec = vim.vm.RelocateSpec(host=self._obj(vim.HostSystem, host))
        task = self._call("migrate VM", lambda: v.RelocateVM_Task(spec))
        self.wait_for_task(task, operation="migrate VM", timeout=timeout)

    # VM power ---------------------------------------------------------------------------------
    def power_on_vm(self, vm: str, timeout: float | None = None) -> None:
        """Power a VM on; nothing to do when it already runs."""
        if self.vm_power_state(vm) == "poweredOn":
            return
        v = self._obj(vim.VirtualMachine, vm)
        task = self._call("power on VM", v.PowerOnVM_Task)
        self.wait_for_task(task, operation="power on VM", timeout=timeout)

    def power_off_vm(self, vm: str, timeout: float | None = None) -> None:
        """Power a VM off (hard); nothing to do when it is already off."""
        if self.vm_power_state(vm) == "poweredOff":
            return
        v = self._obj(vim.VirtualMachine, vm)
        task = self._call("power off VM", v.PowerOffVM_Task)
        self.wait_for_task(task, operation="power off VM", timeout=timeout)

    def shutdown_guest_vm(self, vm: str, timeout: float | None = None) -> bool:
        """Ask the guest OS to shut down (through VMware Tools) and wait until the VM is off;
        False when it already was. vCenter refuses a guest whose Tools are not running
        (ToolsUnavailable): InvalidTargetState, whose hint is the hard power-off. A guest that
        does not stop within ``timeout`` is OperationTimedOut, the VM left as it is."""
        operation = "shut down guest"
        target = self.endpoint.display
        if self.vm_power_state(vm) == "poweredOff":
            return False
        v = self._obj(vim.VirtualMachine, vm)
        try:
            self._call(operation, v.ShutdownGuest)
        except vim.fault.InvalidPowerState:
            if self.vm_power_state(vm) == "poweredOff":  # it stopped between the read and the call
                return False
            raise InvalidTargetState(
                "vCenter refused: the VM is not powered on", fault="InvalidPowerState", target=target,
                operation=operation,
            ) from None  # fmt: skip
        except (vim.fault.ToolsUnavailable, vim.fault.InvalidState) as e:
            raise InvalidTargetState(
                f"vCenter refused: {getattr(e, 'msg', '') or type(e).__name__}",
                fault=type(e).__name__.rsplit(".", 1)[-1],
                target=target,
                operation=operation,
                hint="VMware Tools must be running in the guest; power the VM off instead",
            ) from None
        budget = self.timeouts.task if timeout is None else timeout
        limit = time.monotonic() + budget
        while self.vm_power_state(vm) != "poweredOff":
            if time.monotonic() > limit:
                raise OperationTimedOut(
                    f"the guest of VM {vm} did not shut down within {budget:g}s",
                    target=target,
                    operation=operation,
                    hint="the guest may be ignoring the request; power the VM off instead",
                )
            time.sleep(self.timeouts.poll)
        return True

    # VM media ---------------------------------------------------------------------------------
    def disconnect_vm_media(self, vm: str, timeout: float | None = None) -> list[str]:
        """Disconnect every CD-ROM and floppy of a VM and clear their connect-at-power-on, in
        one reconfigure (the device stays, its ISO or image path too). Returns the labels of
        the devices changed: empty when none was connected (nothing is sent then)."""
        operation = "disconnect VM media"
        v = self._obj(vim.VirtualMachine, vm)
        objs = self._retrieve({vim.VirtualMachine: ["config.hardware.device"]}, [v])
        if not objs:
            raise ObjectNotFound(f"VM {vm} does not exist", target=self.endpoint.display, operation=operation)
        changes, labels = [], []
        for dev in self._props(objs[0]).get("config.hardware.device") or []:
            c = getattr(dev, "connectable", None)
            if not isinstance(dev, vim.vm.device.VirtualCdrom | vim.vm.device.VirtualFloppy) or c is None:
                continue
            if not (c.connected or c.startConnected):
                continue
            dev.connectable = vim.vm.device.VirtualDevice.ConnectInfo(
                connected=False, startConnected=False, allowGuestControl=c.allowGuestControl
            )
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
            labels.append(dev.deviceInfo.label if dev.deviceInfo else f"device {dev.key}")
        if not changes:
            return []
        spec = vim.vm.ConfigSpec(deviceChange=changes)
        task = self._call(operation, lambda: v.ReconfigVM_Task(spec))
        self._answer_cdrom_lock(v, task, operation, timeout)
        self.wait_for_task(task, operation=operation, timeout=timeout)
        return labels

    def _answer_cdrom_lock(self, v: Any, task: Any, operation: str, timeout: float | None) -> None:
        """vCenter quirk: disconnecting a CD-ROM whose tray the guest has locked (Linux
        guests do) does not fail, it leaves the reconfigure task running behind a VM
        question (``msg.cdromdisconnect.locked``) until someone answers it. Answer "Yes"
        (disconnect anyway) while the task runs; any other question is left to the operator
        and the task's own timeout."""
        limit = time.monotonic() + (self.timeouts.task if timeout is None else timeout)
        while time.monotonic() < limit:
            if str(self._call(operation, lambda: task.info.state)) not in ("queued", "running"):
                return
            q = self._call(operation, lambda: v.runtime.question)
            if q is not None:
                ids = " ".join(str(m.id) for m in (q.message or [])) + " " + str(q.text)
                yes = [ch.key for ch in q.choice.choiceInfo if str(ch.label).lower() in ("yes", "_yes")]
                if "cdromdisconnect" in ids and yes:
                    self._call(operation, functools.partial(v.AnswerVM, q.id, yes[0]))
                    log.info("answered the locked CD-ROM question of VM %s: disconnect anyway", v._moId)
                return
            time.sleep(self.timeouts.poll)


__all__ = [
    "VSphereClient", "VSphereTimeouts", "Inventory", "Cluster", "Host", "VM", "VMDevice", "Datastore",
    "AffinityRule", "TaskFailed", "InvalidTargetState", "MaintenanceTimeout", "ObjectNotFound",
    "SettingsMismatch", "ha_settings", "drs_settings", "device_fact",
]  # fmt: skip
