"""`python -m devstack.lab.ome --devices N --port P --time-scale S`: serve a simulated OME
with N lab devices until interrupted; prints one JSON line once listening."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from .server import OMESim


async def _main(args: argparse.Namespace) -> None:
    sim = OMESim(
        devices=OMESim.lab_devices(args.devices),
        page_size=args.page_size,
        time_scale=args.time_scale,
        username=args.username,
        password=args.password,
    )
    await sim.start(args.port)
    print(json.dumps({"ready": True, "url": sim.url, "devices": args.devices}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.lab.ome")
    ap.add_argument("--devices", type=int, default=20, help="number of managed servers (default 20)")
    ap.add_argument("--port", type=int, default=18443, help="listen port on 127.0.0.1 (default 18443)")
    ap.add_argument("--page-size", type=int, default=50, help="OData page size (default 50)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    ap.add_argument("--username", default="admin")
    ap.add_argument("--password", default="ome-lab-pw")
    args = ap.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
