"""Simulated Dell iDRAC9 fleet: standard Redfish plus the Dell OEM surface rackpilot uses,
time-compressed, with per-BMC fault injection. See `server.py` for the control API."""

from .bmc import BMC, MODELS, Faults, Timing, make_dup, parse_dup
from .server import Lab, LabThread

__all__ = ["BMC", "MODELS", "Faults", "Lab", "LabThread", "Timing", "make_dup", "parse_dup"]
