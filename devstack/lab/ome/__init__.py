"""Simulated Dell OpenManage Enterprise REST surface (sessions, devices, firmware catalogs,
baselines with compliance reports, jobs, OData paging)."""

from .server import Device, OMESim

__all__ = ["Device", "OMESim"]
