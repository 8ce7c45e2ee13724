"""State of one simulated iDRAC (iDRAC9 or iDRAC10, see `PERSONALITIES`) and its host: power, POST, Lifecycle Controller, sessions,
the Dell job queue, firmware, virtual media, and the faults a test can inject.

Time is virtual: every duration below is in *simulated* seconds and runs `time_scale`
times faster in real time. State advances lazily: each request first runs the events
that have come due (`tick`), so a thousand idle BMCs cost nothing.
"""

from __future__ import annotations

import heapq
import itertools
import json
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MANAGER_ID = "iDRAC.Embedded.1"
SYSTEM_ID = "System.Embedded.1"
MSG_PREFIX = "IDRAC.2.8."

# Models the lab can play: (model name, Dell SystemID as 4 hex digits, BIOS family).
MODELS: dict[str, str] = {
    "PowerEdge R640": "0716",
    "PowerEdge R740": "0715",
    "PowerEdge R650": "0A6B",
    "PowerEdge R750": "0A6C",
}


# The two iDRAC generations the lab plays, chosen per BMC. iDRAC9 runs current 7.x firmware
# on 14G-16G PowerEdge; iDRAC10 runs 1.x firmware on 17G, where Basic authentication is off
# by default (1.30.10.50 on), the SCP actions are `OemManager.*` tracked through TaskService,
# the boot override is PATCHed to `Systems/.../Settings`, virtual media hangs off the system,
# and PLDM devices are updated only with SimpleUpdate `Targets`.
PERSONALITIES: dict[str, int] = {"idrac9": 9, "idrac10": 10}
MODELS_17G: dict[str, str] = {
    "PowerEdge R670": "0C5A",
    "PowerEdge R770": "0C5B",
}


@dataclass
class Timing:
    """Simulated durations in seconds (real time = value / time_scale). Defaults follow
    the field notes: power-on starts within seconds, POST plus Lifecycle Controller
    start-up take about two minutes, an iDRAC reset leaves it unreachable for ~2.5 min,
    SCP export takes minutes, leaked sessions expire after 30 min idle."""

    power_on: float = 8.0
    force_off: float = 2.0
    graceful_off: float = 25.0
    post: float = 90.0  # host in POST: ServerStatus InPOST, LC not ready
    lc_after_post: float = 30.0  # Lifecycle Controller still starting after POST
    idrac_reset_delay: float = 2.0  # the reset request is answered before it goes down
    idrac_down: float = 150.0
    lc_after_idrac_reset: float = 60.0
    lc_restart: float = 45.0  # after JID_CLEARALL_FORCE the LC service restarts
    session_idle: float = 1800.0
    scp_export: float = 300.0
    scp_import: float = 120.0
    fw_download: float = 30.0
    fw_downloaded: float = 2.0
    fw_apply: float = 150.0  # for components applied without a host reboot (iDRAC)


@dataclass
class Faults:
    """Per-BMC fault switches; tests flip them through `BMC.inject` or the control API."""

    unreachable: bool = False  # connections dropped without an answer
    slow_seconds: float = 0.0  # real seconds added before every answer
    server_errors: int = 0  # next N requests answer HTTP 500; -1 = every request
    lc_stuck_busy: bool = False  # Lifecycle Controller never reports Ready
    job_outcome: str = ""  # "" | "stuck" (never leaves Running) | "fail" (ends Failed)
    config_error: str = ""  # "" | "LC068" | "RAC0679" on SCP import/export and SimpleUpdate
    wrong_firmware_version: bool = False  # update job Completed, version unchanged
    graceful_ignored: bool = False  # host OS ignores ACPI shutdown requests
    queue_stuck: bool = False  # JID_CLEARALL reports success but stale jobs stay
    reset_types: tuple[str, ...] = ()  # non-empty: the only ComputerSystem.Reset types offered
    basic_auth: bool | None = None  # None = the personality's default (iDRAC10: off)
    broken_paths: tuple[str, ...] = ()  # paths still linked but answering 404 (a half-broken BMC)
    # real seconds the answer to a firmware update request (SimpleUpdate, multipart push) is
    # held AFTER its job is queued, or until the fault is cleared: a client killed meanwhile
    # never learns the job's id
    hold_update_answer: float = 0.0

    FIELDS = (
        "unreachable",
        "slow_seconds",
        "server_errors",
        "lc_stuck_busy",
        "job_outcome",
        "config_error",
        "wrong_firmware_version",
        "graceful_ignored",
        "queue_stuck",
        "reset_types",
        "basic_auth",
        "broken_paths",
        "hold_update_answer",
    )


@dataclass
class Component:
    component_id: str
    name: str
    version: str
    device: str  # BIOS | iDRAC | NIC | RAID | CPLD
    reboot_required: bool


@dataclass
class Session:
    id: str
    token: str
    user: str
    created: float
    last_used: float
    foreign: bool = False  # opened by "another tool" (fault injection), never deleted by us


@dataclass
class Job:
    id: str
    name: str
    job_type: str
    state: str = "New"
    percent: int = 0
    message: str = "Job created."
    message_id: str = "JCP000"
    start_time: str = "TIME_NOW"
    completion_time: str | None = None
    waits_for_reboot: bool = False
    stuck: bool = False
    result: Any = None  # SCP export profile
    component: Component | None = None
    new_version: str = ""
    is_task: bool = False  # answers at /TaskService/Tasks/<id> too
    on_done: Callable[[], None] | None = None  # effect applied when the job completes
    targets: list[str] = field(default_factory=list)  # SimpleUpdate Targets
    run_window: tuple[float, float] | None = None  # real (start, end) while Running, for PercentComplete
    apply_time: str = ""  # a pushed package's @Redfish.OperationApplyTime (Immediate | OnReset)

    @property
    def finished(self) -> bool:
        return self.state in ("Completed", "Failed", "CompletedWithErrors")


class Rejected(Exception):
    """A request the BMC refuses with a Dell error body."""

    def __init__(self, status: int, message_id: str, message: str, resolution: str = ""):
        super().__init__(message)
        self.status = status
        self.message_id = message_id
        self.message = message
        self.resolution = resolution


def message_info(
    message_id: str,
    message: str,
    resolution: str = "",
    severity: str = "Warning",
    args: list[str] | None = None,
    related: list[str] | None = None,
) -> dict[str, Any]:
    """One `@Message.ExtendedInfo` entry as iDRAC writes it."""
    mid = message_id if "." in message_id else MSG_PREFIX + message_id
    return {
        "Message": message,
        # Quirk reproduced (Dell's own samples): iDRAC9 writes an empty MessageArgs of its
        # own registry as the string "[]"; Base registry entries carry a real array.
        "MessageArgs": list(args or []) if args or mid.startswith("Base.") else "[]",
        "MessageArgs@odata.count": len(args or []),
        "MessageId": mid,
        "RelatedProperties": list(related or []),
        "RelatedProperties@odata.count": len(related or []),
        "Resolution": resolution,
        "Severity": severity,
    }


def dell_error(message_id: str, message: str, resolution: str = "", severity: str = "Warning") -> dict:
    info = message_info(message_id, message, resolution, severity)
    return {"error": {"@Message.ExtendedInfo": [info], "code": info["MessageId"], "message": message}}


def base_error(infos: list[dict[str, Any]]) -> dict:
    """Several ExtendedInfo entries under Base.GeneralError, as iDRAC answers a PATCH whose
    properties fail for different reasons."""
    return {
        "error": {
            "@Message.ExtendedInfo": infos,
            "code": "Base.1.12.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information",
        }
    }


def default_components(model: str, idx: int, generation: int = 9) -> list[Component]:
    """Installed firmware of a lab server; versions vary a little across the fleet so
    compliance reports have something to say."""
    old = idx % 2 == 0
    bios = {
        "PowerEdge R640": ("2.10.2", "2.17.1"),
        "PowerEdge R740": ("2.10.2", "2.17.1"),
        "PowerEdge R650": ("1.6.5", "1.10.2"),
        "PowerEdge R750": ("1.6.5", "1.10.2"),
        "PowerEdge R670": ("1.1.3", "1.3.2"),
        "PowerEdge R770": ("1.1.3", "1.3.2"),
    }[model]
    idrac = ("5.00.10.20", "6.10.30.00") if generation == 9 else ("1.20.25.00", "1.30.10.50")
    return [
        Component("159", "BIOS", bios[0] if old else bios[1], "BIOS", True),
        Component(
            "25227", "Integrated Dell Remote Access Controller", idrac[0] if old else idrac[1], "iDRAC", False
        ),
        Component("104298", "PERC H740P Mini", "51.13.0-3485" if old else "51.16.0-4076", "RAID", True),
        Component(
            "105848", "Broadcom Gigabit Ethernet BCM5720", "21.60.16" if old else "22.31.6", "NIC", True
        ),
    ]


PLDM_DEVICES = {"NIC", "RAID"}  # updated over PLDM on iDRAC10


def parse_profile(buf: Any) -> list[tuple[str, str, Any]] | None:
    """(FQDD, attribute, value) triples of an SCP profile given as JSON (text or object) or
    XML, or None when it is neither. Commented-out XML attributes are not applied."""
    try:
        if isinstance(buf, str) and buf.lstrip().startswith("<"):
            root = ET.fromstring(buf)
            if root.tag != "SystemConfiguration":
                return None
            return [
                (c.attrib["FQDD"], a.attrib["Name"], (a.text or "").strip())
                for c in root.iter("Component")
                for a in c.findall("Attribute")
            ]
        doc = json.loads(buf) if isinstance(buf, str) else buf
        return [
            (c["FQDD"], a["Name"], a["Value"])
            for c in doc["SystemConfiguration"]["Components"]
            for a in c.get("Attributes", [])
        ]
    except (ET.ParseError, KeyError, TypeError, ValueError, AttributeError):
        return None


def parse_dup(data: bytes) -> dict[str, str] | None:
    """Read the header of a lab update package: `RACKPILOT-DUP componentID=.. version=..`.
    Real Dell update packages carry the same facts in their embedded package XML."""
    first = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    if not first.startswith("RACKPILOT-DUP "):
        return None
    fields = dict(p.split("=", 1) for p in first.split()[1:] if "=" in p)
    if "componentID" not in fields or "version" not in fields:
        return None
    return fields


def make_dup(component_id: str, version: str, size: int = 4096) -> bytes:
    """Bytes of a lab update package for `component_id` at `version`."""
    head = f"RACKPILOT-DUP componentID={component_id} version={version}\n".encode()
    return head + b"\0" * max(0, size - len(head))


class BMC:
    """One iDRAC with its host. All mutation happens under `lock`: the simulator's event
    loop and a test thread injecting faults may touch it at the same time."""

    SESSION_CAP = 8  # iDRAC9: the 9th concurrent Redfish session gets 503 RAC0218

    def __init__(
        self,
        index: int,
        *,
        time_scale: float = 1.0,
        model: str | None = None,
        username: str = "root",
        password: str = "calvin",
        timing: Timing | None = None,
        personality: str = "idrac9",
    ):
        if personality not in PERSONALITIES:
            raise ValueError(f"unknown personality {personality!r}; known: {', '.join(PERSONALITIES)}")
        self.personality = personality
        self.generation = PERSONALITIES[personality]
        self.index = index
        self.time_scale = float(time_scale)
        models = MODELS if self.generation == 9 else MODELS_17G
        self.model = model or list(models)[index % len(models)]
        self.system_id = {**MODELS, **MODELS_17G}[self.model]
        self.service_tag = f"SIM{index:04d}"[:7].upper()
        # iDRAC's 16 fixed account slots: slot 1 is reserved, slot 2 the factory root user
        self.accounts: list[dict[str, Any]] = [
            {
                "Id": str(i),
                "UserName": "",
                "Password": "",
                "RoleId": "None",
                "Enabled": False,
                "Locked": False,
            }
            for i in range(1, 17)
        ]
        self.accounts[1].update(UserName=username, Password=password, RoleId="Administrator", Enabled=True)
        self.timing = timing or Timing()
        self.faults = Faults()
        self.lock = threading.RLock()
        self.port = 0
        self.host = "127.0.0.1"
        # host power
        self.power_state = "On"
        self.server_status = "OutOfPOST"
        self.boot_count = 0
        self.boot_override = {
            "BootSourceOverrideEnabled": "Disabled",
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideMode": "UEFI",
        }
        self._power_epoch = 0  # invalidates scheduled power steps superseded by a newer action
        # iDRAC
        self.idrac_down = False
        self.lc_ready_at = 0.0  # real monotonic time; 0 = ready
        self.components = default_components(self.model, index, self.generation)
        # Multipart HTTP push (`MultipartHttpPushUri`): iDRAC9 from firmware 4.40 and iDRAC10
        # take a package pushed with its UpdateParameters; a test turns it off to play older
        # firmware. The size limit is the lab's setting, not a figure Dell publishes.
        self.multipart_push = True
        self.upload_limit = 2 * 1024**3
        self.uploads: list[dict[str, Any]] = []  # what was pushed: name, size, sha256, params
        # iDRAC9 names its slots CD and RemovableDisk under the manager; iDRAC10 numbers
        # them under the system (1 = the one a one-time Cd boot uses).
        cd, usb = ("CD", "RemovableDisk") if self.generation == 9 else ("1", "2")
        self.virtual_media: dict[str, dict[str, Any]] = {
            cd: {"Image": None, "Inserted": False, "WriteProtected": True, "MediaTypes": ["CD", "DVD"]},
            usb: {"Image": None, "Inserted": False, "WriteProtected": True, "MediaTypes": ["USBStick"]},
        }
        self.attributes = {
            "BIOS.Setup.1-1": {"BootMode": "Uefi", "SysProfile": "PerfOptimized", "LogicalProc": "Enabled"},
            "iDRAC.Embedded.1": {
                "IPv4.1#DHCPEnable": "Disabled",
                "NTPConfigGroup.1#NTPEnable": "Enabled",
                "ServerBoot.1#BootOnce": "Disabled",
                "ServerBoot.1#FirstBootDevice": "Normal",
            },
        }
        self.location_indicator = False
        self.subscriptions: dict[str, dict[str, Any]] = {}  # event subscriptions (never sent to)
        self.boot_log: list[
            str
        ] = []  # what each boot of the host started from (Hdd, VirtualCD, Optical, ...)
        self.etag_gen = 0  # bumped on every change a PATCH makes
        self.sessions: dict[str, Session] = {}
        self.jobs: dict[str, Job] = {}
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._jid = itertools.count(int(time.time()) % 10**6 * 1000 + index * 7)
        # statistics the tests and the benchmark read
        self.peak_sessions = 0
        self.sessions_created = 0
        self.sessions_deleted = 0
        self.requests = 0
        self.dropped = 0  # requests dropped unanswered while unreachable or rebooting

    # the factory account (slot 2): tests change its password to play a changed credential
    @property
    def username(self) -> str:
        return str(self.accounts[1]["UserName"])

    @username.setter
    def username(self, value: str) -> None:
        self.accounts[1]["UserName"] = value

    @property
    def password(self) -> str:
        return str(self.accounts[1]["Password"])

    @password.setter
    def password(self, value: str) -> None:
        self.accounts[1]["Password"] = value

    @property
    def read_only_attributes(self) -> dict[str, dict[str, str]]:
        """Attributes an export lists but an import never sets ("Set On Import": "False")."""
        return {
            "BIOS.Setup.1-1": {"SystemServiceTag": self.service_tag},
            "iDRAC.Embedded.1": {"Info.1#Version": self.idrac_version()},
        }

    def reset_types(self) -> list[str]:
        types = [
            "On",
            "ForceOff",
            "ForceRestart",
            "GracefulRestart",
            "GracefulShutdown",
            "PushPowerButton",
            "Nmi",
            "PowerCycle",
        ]
        return [t for t in types if t in self.faults.reset_types] if self.faults.reset_types else types

    def idrac_version(self) -> str:
        return next((c.version for c in self.components if c.device == "iDRAC"), "")

    @property
    def basic_auth_enabled(self) -> bool:
        # Quirk reproduced: iDRAC10 firmware 1.30.10.50 and later ship with Basic
        # authentication disabled; only session tokens work until an admin enables it.
        if self.faults.basic_auth is not None:
            return bool(self.faults.basic_auth)
        return self.generation == 9

    # ---- time -------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic()

    def real(self, sim_seconds: float) -> float:
        return sim_seconds / self.time_scale

    def schedule(self, sim_seconds: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (self.now() + self.real(sim_seconds), next(self._seq), fn))

    def tick(self) -> None:
        with self.lock:
            now = self.now()
            while self._events and self._events[0][0] <= now:
                _, _, fn = heapq.heappop(self._events)
                fn()
            for job in self.jobs.values():
                if job.state == "Running" and job.run_window and not job.stuck:
                    a, b = job.run_window
                    job.percent = max(job.percent, min(95, 10 + int(85 * (now - a) / max(b - a, 1e-9))))
            idle = self.real(self.timing.session_idle)
            for sid in [s.id for s in self.sessions.values() if now - s.last_used > idle]:
                del self.sessions[sid]

    # ---- faults -------------------------------------------------------------------------
    def inject(self, **faults: Any) -> None:
        with self.lock:
            for k, v in faults.items():
                if k not in Faults.FIELDS:
                    raise ValueError(f"unknown fault {k!r}; known: {', '.join(Faults.FIELDS)}")
                setattr(self.faults, k, v)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = Faults()

    def exhaust_sessions(self) -> None:
        """Fill the session table the way a tool that never logs out does."""
        with self.lock:
            while len(self.sessions) < self.SESSION_CAP:
                self._new_session("othertool", foreign=True)

    def add_stale_jobs(self, count: int = 2, state: str = "Scheduled", message: str = "") -> list[str]:
        """Queue entries left behind by an earlier run (or another tool) that never progress:
        Scheduled (pending), Running (stuck at 34 %) or Failed with ``message``."""
        with self.lock:
            ids = []
            for _ in range(count):
                job = self._new_job("Configure: BIOS.Setup.1-1", "BIOSConfiguration")
                job.state, job.stuck, job.message = state, True, message or "Task successfully scheduled."
                job.message_id = "JCP001"
                if state == "Running":
                    job.percent = 34
                ids.append(job.id)
            return ids

    def set_version(self, component_id: str, version: str) -> None:
        with self.lock:
            for c in self.components:
                if c.component_id == component_id:
                    c.version = version

    # ---- sessions -----------------------------------------------------------------------
    def _new_session(self, user: str, foreign: bool = False) -> Session:
        sid = str(len(self.sessions) + self.sessions_created + 1)
        while sid in self.sessions:
            sid = str(int(sid) + 1)
        s = Session(sid, secrets.token_hex(16), user, self.now(), self.now(), foreign)
        self.sessions[sid] = s
        if not foreign:
            self.sessions_created += 1
        self.peak_sessions = max(self.peak_sessions, sum(1 for x in self.sessions.values() if not x.foreign))
        return s

    def _account(self, user: str, password: str) -> dict[str, Any] | None:
        return next(
            (
                a
                for a in self.accounts
                if a["Enabled"] and a["UserName"] and a["UserName"] == user and a["Password"] == password
            ),
            None,
        )

    def create_session(self, user: str, password: str) -> Session:
        with self.lock:
            if self._account(user, password) is None:
                raise Rejected(
                    401,
                    "RAC0508",
                    "Unable to log in because the username or password is incorrect.",
                    "Enter valid credentials and retry the operation.",
                )
            if len(self.sessions) >= self.SESSION_CAP:
                # Quirk reproduced: iDRAC answers 503, not 429, when the session table is full.
                raise Rejected(
                    503,
                    "RAC0218",
                    "The maximum number of user sessions is reached.",
                    "Close one or more sessions and retry the operation.",
                )
            return self._new_session(user)

    def delete_session(self, sid: str) -> bool:
        with self.lock:
            if self.sessions.pop(sid, None) is None:
                return False
            self.sessions_deleted += 1
            return True

    def authenticate(self, token: str | None, basic: tuple[str, str] | None) -> bool:
        with self.lock:
            if token:
                for s in self.sessions.values():
                    if s.token == token:
                        s.last_used = self.now()
                        return True
                return False
            if basic:
                return self.basic_auth_enabled and self._account(*basic) is not None
            return False

    def own_sessions(self) -> int:
        with self.lock:
            return sum(1 for s in self.sessions.values() if not s.foreign)

    # ---- lifecycle controller ------------------------------------------------------------
    def lc_status(self) -> dict[str, str]:
        with self.lock:
            if self.faults.lc_stuck_busy:
                lc = "InUse"
            elif self.now() < self.lc_ready_at:
                lc = "NotInitialized"
            elif any(
                j.state == "Running" and j.job_type in ("ImportConfiguration", "FirmwareUpdate")
                for j in self.jobs.values()
            ):
                lc = "InUse"
            else:
                lc = "Ready"
            rt = "Ready" if self.now() >= self.lc_ready_at else "NotReady"
            ready = lc == "Ready" and rt == "Ready"
            return {
                "LCStatus": lc,
                "RTStatus": rt,
                "ServerStatus": self.server_status,
                "Status": "Ready" if ready else "NotReady",
            }

    def require_lc_ready(self) -> None:
        if self.lc_status()["Status"] != "Ready":
            # Quirk reproduced: configuration requests are refused while the Lifecycle
            # Controller is busy or still starting (after boots, resets, queue force-clear).
            raise Rejected(
                503,
                "SYS518",
                "iDRAC is not ready. The configuration values cannot be "
                "accessed. Please retry after a few minutes.",
                "Retry the operation after the Lifecycle Controller reports Ready.",
            )

    # ---- power ---------------------------------------------------------------------------
    def reset(self, reset_type: str) -> None:
        with self.lock:
            if reset_type not in self.reset_types():
                raise Rejected(
                    400,
                    "Base.1.12.ActionParameterValueNotInList",
                    f"The value {reset_type} for the parameter ResetType is not in the list "
                    "of acceptable values.",
                    "Choose a value from the allowable values.",
                )
            ps = self.power_state
            on = ps in ("On", "PoweringOn")
            off = ps in ("Off", "PoweringOff")
            if reset_type == "PushPowerButton":
                reset_type = "GracefulShutdown" if on else "On"
            if reset_type == "On":
                if on:
                    raise Rejected(
                        409, "PSU501", "The server is already powered on.", "No response action is required."
                    )
                self._power_up()
            elif reset_type in ("ForceOff", "GracefulShutdown"):
                if off:
                    raise Rejected(
                        409, "PSU502", "The server is already powered off.", "No response action is required."
                    )
                if reset_type == "GracefulShutdown" and self.faults.graceful_ignored:
                    return  # the OS never acts on the ACPI request; the host stays on
                self._power_down(
                    self.timing.force_off if reset_type == "ForceOff" else self.timing.graceful_off
                )
            elif reset_type in ("ForceRestart", "GracefulRestart", "PowerCycle"):
                if off:
                    raise Rejected(
                        409,
                        "PSU502",
                        "The server is powered off; the restart request cannot be performed.",
                        "Power on the server.",
                    )
                if reset_type == "GracefulRestart" and self.faults.graceful_ignored:
                    return
                delay = self.timing.graceful_off if reset_type == "GracefulRestart" else self.timing.force_off
                self._power_down(delay, then_on=True)
            elif reset_type == "Nmi":
                return
            else:
                raise Rejected(
                    400,
                    "Base.1.12.ActionParameterValueNotInList",
                    f"The value {reset_type} for the parameter ResetType is not in the list "
                    "of acceptable values.",
                    "Choose a value from the allowable values.",
                )

    def _power_down(self, delay: float, then_on: bool = False) -> None:
        self._power_epoch += 1
        epoch = self._power_epoch
        self.power_state = "PoweringOff"

        def off() -> None:
            if epoch != self._power_epoch:
                return
            self.power_state = "Off"
            self.server_status = "PoweredOff"
            if then_on:
                self._power_up()

        self.schedule(delay, off)

    def _power_up(self) -> None:
        self._power_epoch += 1
        epoch = self._power_epoch
        self.power_state = "PoweringOn"

        def on() -> None:
            if epoch != self._power_epoch:
                return
            self.power_state = "On"
            self._boot()

        self.schedule(self.timing.power_on, on)

    def _boot(self) -> None:
        """Host starts POST: one-time boot overrides are consumed, jobs waiting for a
        reboot run, and the Lifecycle Controller is unavailable until POST is over."""
        self.boot_count += 1
        self.boot_log.append(self.boot_source())
        self.server_status = "InPOST"
        self.lc_ready_at = max(
            self.lc_ready_at, self.now() + self.real(self.timing.post + self.timing.lc_after_post)
        )
        if self.boot_override["BootSourceOverrideEnabled"] == "Once":
            self.boot_override["BootSourceOverrideEnabled"] = "Disabled"
            self.boot_override["BootSourceOverrideTarget"] = "None"
        for job in list(self.jobs.values()):
            if job.waits_for_reboot and job.state == "Scheduled" and not job.stuck:
                job.waits_for_reboot = False
                self._run_job(job, self.timing.post * 0.8)

        epoch = self._power_epoch

        def out_of_post() -> None:
            # only this boot's POST ends here: after a restart in mid-POST the next boot's
            # POST runs its full length (it ended early, and a restart went unseen)
            if self.power_state == "On" and epoch == self._power_epoch:
                self.server_status = "OutOfPOST"

        self.schedule(self.timing.post, out_of_post)

    # ---- iDRAC reset ---------------------------------------------------------------------
    def reset_idrac(self) -> None:
        with self.lock:

            def down() -> None:
                self.idrac_down = True
                self.sessions.clear()  # a rebooted iDRAC forgets every session

            def up() -> None:
                self.idrac_down = False
                self.lc_ready_at = self.now() + self.real(self.timing.lc_after_idrac_reset)

            self.schedule(self.timing.idrac_reset_delay, down)
            self.schedule(self.timing.idrac_reset_delay + self.timing.idrac_down, up)

    # ---- jobs ----------------------------------------------------------------------------
    def _new_job(self, name: str, job_type: str, is_task: bool = False) -> Job:
        jid = f"JID_{next(self._jid):012d}"
        job = Job(jid, name, job_type, is_task=is_task)
        self.jobs[jid] = job
        return job

    def _check_config_fault(self) -> None:
        if self.faults.config_error == "LC068":
            raise Rejected(
                400,
                "LC068",
                "Unable to perform the import or export operation because there "
                "are pending attribute changes or a configuration job is in progress.",
                "Apply or cancel any pending attribute changes, or wait until the "
                "configuration job is completed, and retry.",
            )
        if self.faults.config_error == "RAC0679":
            raise Rejected(
                400,
                "RAC0679",
                "A job operation is already running. Retry the operation "
                "after the existing job is completed.",
                "Wait until the running job is completed or delete the scheduled job and retry.",
            )

    def _run_job(self, job: Job, duration: float, on_done: Callable[[], None] | None = None) -> None:
        job.state, job.percent, job.message, job.message_id = "Running", 10, "Job in progress.", "PR20"
        on_done = on_done or job.on_done
        if self.faults.job_outcome == "stuck":
            job.stuck = True
            job.percent = 34
            return

        job.run_window = (self.now(), self.now() + self.real(duration))

        def done() -> None:
            job.run_window = None
            if job.id not in self.jobs:
                return
            if self.faults.job_outcome == "fail":
                job.state, job.percent = "Failed", 100
                job.message, job.message_id = "Unable to complete the operation.", "SUP0518"
            else:
                if on_done:
                    on_done()
                job.state, job.percent = "Completed", 100
                if job.message_id in ("PR20", "JCP001"):
                    job.message, job.message_id = "Job completed successfully.", "PR19"
            job.completion_time = time.strftime("%Y-%m-%dT%H:%M:%S")

        self.schedule(duration, done)

    def scp_export(self, body: dict) -> Job:
        with self.lock:
            self.require_lc_ready()
            self._check_config_fault()
            target = (body.get("ShareParameters") or {}).get("Target", "ALL")
            targets = target if isinstance(target, list) else [target]
            job = self._new_job("Export: Server Configuration Profile", "ExportConfiguration", is_task=True)
            job.message, job.message_id = "Exporting Server Configuration Profile.", "SYS057"

            def finish() -> None:
                job.result = self.profile(targets)
                job.message, job.message_id = "Successfully exported Server Configuration Profile", "SYS043"

            self._run_job(job, self.timing.scp_export, finish)
            return job

    def profile(self, targets: list[str]) -> dict:
        comps = []
        want = {t.upper() for t in targets}
        for fqdd, attrs in self.attributes.items():
            kind = "BIOS" if fqdd.startswith("BIOS") else "IDRAC"
            if "ALL" in want or kind in want:
                rows = [
                    {"Name": k, "Value": v, "Set On Import": "True", "Comment": "Read and Write"}
                    for k, v in sorted(attrs.items())
                ]
                # read-only facts are exported for reference, never applied on import
                rows += [
                    {"Name": k, "Value": v, "Set On Import": "False", "Comment": "Read only"}
                    for k, v in sorted(self.read_only_attributes.get(fqdd, {}).items())
                ]
                comps.append({"FQDD": fqdd, "Attributes": rows})
        return {
            "SystemConfiguration": {
                "Comments": [{"Comment": "Export type is Normal,JSON,Selective"}],
                "Model": self.model,
                "ServiceTag": self.service_tag,
                "TimeStamp": time.strftime("%a %b %d %H:%M:%S %Y"),
                "Components": comps,
            }
        }

    def scp_import(self, body: dict) -> Job:
        with self.lock:
            self.require_lc_ready()
            self._check_config_fault()
            if any(j.job_type == "ImportConfiguration" and not j.finished for j in self.jobs.values()):
                raise Rejected(
                    400,
                    "RAC0679",
                    "A job operation is already running. Retry the operation "
                    "after the existing job is completed.",
                    "Wait until the running job is completed or delete the scheduled job.",
                )
            buf = body.get("ImportBuffer")
            if not buf:
                raise Rejected(
                    400,
                    "Base.1.12.PropertyMissing",
                    "The property ImportBuffer is a required property and must be included in the request.",
                    "Include ImportBuffer.",
                )
            comps = parse_profile(buf)
            if comps is None:
                raise Rejected(
                    400,
                    "SYS405",
                    "Unable to import the Server Configuration Profile because the file content is invalid.",
                    "Check the profile and retry.",
                )
            shutdown = body.get("ShutdownType", "Graceful")
            job = self._new_job("Import Configuration", "ImportConfiguration", is_task=True)
            job.message, job.message_id = "Import of Server Configuration Profile scheduled.", "JCP001"

            def apply() -> None:
                for fqdd, name, value in comps:
                    if name in self.read_only_attributes.get(fqdd, {}):
                        continue  # exported with "Set On Import": "False": never applied
                    self.attributes.setdefault(fqdd, {})[name] = value
                job.message, job.message_id = (
                    "Successfully imported and applied Server Configuration Profile.",
                    "SYS053",
                )

            if comps and all(fqdd.startswith("iDRAC.") for fqdd, _, _ in comps):
                # iDRAC attributes (one-time boot device, network, users) apply at once,
                # without a host reboot, whatever ShutdownType says.
                job.on_done = apply
                self._run_job(job, 2.0)
                return job
            job.state = "Scheduled"
            job.waits_for_reboot = True
            job.on_done = apply
            if shutdown != "NoReboot" and self.power_state == "On":
                self._power_down(
                    self.timing.force_off if shutdown == "Forced" else self.timing.graceful_off, then_on=True
                )
            # Quirk reproduced: with NoReboot the job waits for a reboot that may never come.
            return job

    def simple_update(self, body: dict) -> Job:
        with self.lock:
            self.require_lc_ready()
            self._check_config_fault()
            uri = body.get("ImageURI")
            if not uri:
                raise Rejected(
                    400,
                    "Base.1.12.PropertyMissing",
                    "The property ImageURI is a required property and must be included in the request.",
                    "Include ImageURI.",
                )
            job = self._new_job("Firmware Update", "FirmwareUpdate", is_task=True)
            job.state, job.message, job.message_id = (
                "Downloading",
                "Downloading the update package.",
                "RED003",
            )
            job.targets = [str(t) for t in body.get("Targets") or []]
            return job

    def push_update(self, params: dict[str, Any], package_head: bytes, info: dict[str, Any]) -> Job:
        """A package pushed to the MultipartHttpPushUri with its (already checked)
        UpdateParameters; `package_head` is the start of the package (its header names the
        component and version). Same job as SimpleUpdate, without the download."""
        with self.lock:
            self.require_lc_ready()
            self._check_config_fault()
            self.uploads.append({**info, "params": params})
            job = self._new_job("Firmware Update", "FirmwareUpdate", is_task=True)
            job.state, job.message, job.message_id = (
                "Downloaded",
                "Package successfully downloaded.",
                "RED002",
            )
            job.targets = [str(t) for t in params.get("Targets") or []]
            job.apply_time = str(params.get("@Redfish.OperationApplyTime") or "OnReset")
        self.download_finished(job, package_head)
        return job

    def download_finished(self, job: Job, data: bytes | None, error: str = "") -> None:
        """Called by the server once it has fetched the package behind ImageURI."""
        with self.lock:
            if job.id not in self.jobs:
                return
            info = parse_dup(data) if data is not None else None
            comp = next((c for c in self.components if info and c.component_id == info["componentID"]), None)
            if info is None or comp is None:
                job.state, job.percent = "Failed", 100
                job.message_id = "RED004" if data is not None else "RED002"
                job.message = (
                    (error or "Unable to download the update package.")
                    if data is None
                    else "Unable to verify the update package signature or the package does not apply to this system."
                )
                return
            job.component, job.new_version = comp, info["version"]
            job.name = f"Firmware Update: {comp.name}"
            if (
                self.generation >= 10
                and comp.device in PLDM_DEVICES
                and not any(
                    t.rstrip("/").endswith(f"/{comp.component_id}") or f"-{comp.component_id}-" in t
                    for t in job.targets
                )
            ):
                # Quirk reproduced: iDRAC10 updates PLDM devices (NICs, storage controllers) only
                # when SimpleUpdate names the device in Targets.
                job.state, job.percent = "Failed", 100
                job.message_id = "SUP0538"
                job.message = (
                    f"Unable to update {comp.name} because the package applies to a PLDM "
                    "device that was not named in Targets."
                )
                return

            def downloaded() -> None:
                job.state, job.message, job.message_id = (
                    "Downloaded",
                    "Package successfully downloaded.",
                    "RED002",
                )

                def scheduled() -> None:
                    if job.id not in self.jobs:
                        return
                    job.state, job.message, job.message_id = (
                        "Scheduled",
                        "Task successfully scheduled.",
                        "JCP001",
                    )
                    if comp.reboot_required:
                        job.waits_for_reboot = True  # BIOS-type: applied during the next POST
                        if job.apply_time == "Immediate" and self.power_state == "On":
                            # a pushed package with ApplyTime Immediate: the iDRAC restarts
                            # the host at once to apply it
                            self._power_down(self.timing.graceful_off, then_on=True)
                    else:
                        self._run_job(job, self.timing.fw_apply, lambda: self._apply_fw(job, reset=True))

                self.schedule(self.timing.fw_downloaded, scheduled)

            self.schedule(self.timing.fw_download, downloaded)
            job.on_done = lambda: self._apply_fw(job, reset=False)

    def _apply_fw(self, job: Job, reset: bool) -> None:
        if job.component is None:
            return
        if not self.faults.wrong_firmware_version:
            job.component.version = job.new_version
        if reset:
            self.reset_idrac()  # new iDRAC firmware takes effect with an iDRAC restart

    def delete_job_queue(self, job_id: str) -> None:
        with self.lock:
            if job_id == "JID_CLEARALL_FORCE":
                self.jobs.clear()
                self.lc_ready_at = self.now() + self.real(self.timing.lc_restart)
                return
            if job_id == "JID_CLEARALL":
                for jid, job in list(self.jobs.items()):
                    if job.state == "Running" or (job.stuck and self.faults.queue_stuck):
                        continue  # running or wedged entries survive a plain clear
                    del self.jobs[jid]
                return
            job = self.jobs.get(job_id)
            if job is None:
                raise Rejected(400, "SUP011", f"Job ID {job_id} is invalid.", "Enter a valid job ID.")
            if job.state == "Running":
                raise Rejected(
                    400,
                    "SUP017",
                    f"Unable to delete job {job_id} because it is running.",
                    "Wait for the job to complete, or use JID_CLEARALL_FORCE.",
                )
            del self.jobs[job_id]

    # ---- virtual media & boot ------------------------------------------------------------
    def insert_media(self, slot: str, image: str) -> None:
        with self.lock:
            vm = self.virtual_media[slot]
            if vm["Inserted"]:
                raise Rejected(
                    400,
                    "VRM0012",
                    "Virtual Media is already connected.",
                    "Eject the connected media and retry.",
                )
            vm["Image"], vm["Inserted"] = image, True

    def eject_media(self, slot: str) -> None:
        with self.lock:
            vm = self.virtual_media[slot]
            if not vm["Inserted"]:
                raise Rejected(400, "VRM0009", "Virtual Media is not connected.", "No action is required.")
            vm["Image"], vm["Inserted"] = None, False

    def patch_boot(self, boot: dict) -> None:
        """Apply an already validated Boot object (see redfish.py for the checks)."""
        with self.lock:
            self.require_lc_ready()
            self.boot_override.update(boot)
            self.etag_gen += 1

    def boot_source(self) -> str:
        """What this boot of the host starts from, consuming one-time settings."""
        idrac = self.attributes["iDRAC.Embedded.1"]
        cd = next((v for v in self.virtual_media.values() if "CD" in v["MediaTypes"]), None)
        source = "Hdd"
        if idrac.get("ServerBoot.1#BootOnce") == "Enabled":
            # the Dell OEM one-time boot (iDRAC attributes, set through an SCP import)
            dev = idrac.get("ServerBoot.1#FirstBootDevice", "Normal")
            if dev == "VCD-DVD":
                source = "VirtualCD" if cd and cd["Inserted"] else "Hdd"
            elif dev != "Normal":
                source = dev
            idrac["ServerBoot.1#BootOnce"] = "Disabled"
            idrac["ServerBoot.1#FirstBootDevice"] = "Normal"
        elif self.boot_override["BootSourceOverrideEnabled"] in ("Once", "Continuous"):
            target = self.boot_override["BootSourceOverrideTarget"]
            if target == "Cd":
                if self.generation == 9:
                    # Quirk reproduced: on iDRAC9 the standard Cd target is the physical optical
                    # drive; a rack server without a disc falls through to its disk.
                    source = "Hdd"
                else:
                    source = "VirtualCD" if cd and cd["Inserted"] else "Hdd"
            elif target != "None":
                source = target
        return source

    def patch_account(self, slot: str, changes: dict[str, Any]) -> None:
        with self.lock:
            acct = next(a for a in self.accounts if a["Id"] == slot)
            acct.update(changes)
            self.etag_gen += 1

    def patch_attributes(self, fqdd: str, changes: dict[str, Any]) -> None:
        with self.lock:
            self.attributes[fqdd].update(changes)
            self.etag_gen += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "index": self.index,
                "port": self.port,
                "sessions": self.own_sessions(),
                "foreign_sessions": sum(1 for s in self.sessions.values() if s.foreign),
                "peak_sessions": self.peak_sessions,
                "sessions_created": self.sessions_created,
                "sessions_deleted": self.sessions_deleted,
                "requests": self.requests,
                "dropped": self.dropped,
                "power_state": self.power_state,
                "boot_count": self.boot_count,
                "jobs": len(self.jobs),
                "personality": self.personality,
                "boot_log": list(self.boot_log[-10:]),
            }
