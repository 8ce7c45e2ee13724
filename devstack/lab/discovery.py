"""A data centre for discovery scans: simulated iDRACs each on its own loopback address,
all on one port, the way a scan of an IP range sees a rack.

Linux routes all of 127.0.0.0/8 to the loopback interface, so ``127.0.<n>.<i>`` addresses
need no set-up. Besides iDRACs the range can hold listeners that are not Redfish (an HTTP
server answering HTML), addresses with nothing listening, and iDRACs that take another
password or report the service tag of another one (a duplicate tag).

    lab = AddressLab("127.0.9", port=0)
    lab.add_idrac(1)                       # 127.0.9.1, root/calvin
    lab.add_idrac(2, password="other")     # wrong credentials for the scan's set
    lab.add_idrac(3, service_tag="SIM0001")  # duplicate of .1
    lab.add_web(4)                         # not Redfish
    with LabThread(lab): ...               # .5 and up: no answer
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from .idrac.bmc import BMC
from .idrac.http import Request, Response, start_server
from .idrac.server import BMCApp, Lab, LabThread

__all__ = ["AddressLab", "LabThread", "free_port"]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def _web(req: Request) -> Response:
    return Response(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})


class AddressLab(Lab):
    """BMCs (and other listeners) on ``<prefix>.<i>`` addresses, one shared port."""

    def __init__(self, prefix: str, *, port: int = 0, time_scale: float = 1.0, latency: float = 0.0):
        super().__init__(0, time_scale=time_scale, latency=latency)
        self.prefix = prefix
        self.port = port or free_port(f"{prefix}.1")
        self.at: dict[str, BMC] = {}
        self.web: list[str] = []

    def address(self, i: int) -> str:
        return f"{self.prefix}.{i}"

    def add_idrac(
        self,
        i: int,
        *,
        username: str = "root",
        password: str = "calvin",
        service_tag: str | None = None,
        **kw: Any,
    ) -> BMC:
        bmc = BMC(i, time_scale=self.time_scale, username=username, password=password, **kw)
        if service_tag:
            bmc.service_tag = service_tag
        self.bmcs.append(bmc)
        self.at[self.address(i)] = bmc
        return bmc

    def add_web(self, i: int) -> None:
        self.web.append(self.address(i))

    async def start(self) -> AddressLab:
        import httpx

        self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        for addr, bmc in self.at.items():
            srv = await start_server(addr, self.port, BMCApp(bmc, self))
            bmc.host, bmc.port = addr, self.port
            self._servers.append(srv)
        for addr in self.web:
            self._servers.append(await start_server(addr, self.port, _web))
        await asyncio.sleep(0)
        return self

    def url_of(self, address: str) -> str:
        return f"http://{address}:{self.port}"

    def sessions_open(self) -> int:
        """Sessions this lab's BMCs hold right now (a scan that leaks none leaves 0)."""
        total = 0
        for b in self.bmcs:
            with b.lock:
                total += b.own_sessions()
        return total
