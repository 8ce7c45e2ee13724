"""`python -m devstack.lab.idrac --count N --base-port P --time-scale S [--latency-ms L]
[--personality idrac9|idrac10|mixed] [--tls-dir DIR]`

Serves N simulated iDRACs on 127.0.0.1:P .. P+N-1 until interrupted (HTTPS with a
self-signed certificate written to DIR when --tls-dir is given; `mixed` alternates
iDRAC9 and iDRAC10). Prints one JSON
line `{"ready": true, "count": N, "ports": [first, last]}` once every port listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from .server import Lab


async def _main(args: argparse.Namespace) -> None:
    ssl_context = None
    if args.tls_dir:
        import ssl
        from pathlib import Path

        from .testing import self_signed_cert

        cert, key = self_signed_cert(Path(args.tls_dir), args.host)
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cert, key)
    personality = ["idrac9", "idrac10"] if args.personality == "mixed" else args.personality
    lab = Lab(
        args.count,
        base_port=args.base_port,
        time_scale=args.time_scale,
        host=args.host,
        username=args.username,
        password=args.password,
        latency=args.latency_ms / 1000.0,
        ssl_context=ssl_context,
        personality=personality,
    )
    await lab.start()
    print(
        json.dumps({"ready": True, "count": args.count, "ports": [lab.bmcs[0].port, lab.bmcs[-1].port]}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await lab.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.lab.idrac", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=4, help="number of BMCs (default 4)")
    ap.add_argument("--base-port", type=int, default=18000, help="port of the first BMC (default 18000)")
    ap.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (default 1 = real time)",
    )
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="milliseconds added to every answer, as a real BMC's service time (default 0)",
    )
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument(
        "--personality",
        choices=["idrac9", "idrac10", "mixed"],
        default="idrac9",
        help="iDRAC generation every BMC plays; mixed alternates them (default idrac9)",
    )
    ap.add_argument("--tls-dir", default="", help="serve HTTPS with a self-signed certificate written here")
    ap.add_argument("--username", default="root")
    ap.add_argument("--password", default="calvin")
    args = ap.parse_args(argv)
    if args.count < 1 or args.time_scale <= 0:
        ap.error("--count must be >= 1 and --time-scale > 0")
    # one listening socket per BMC: lift the open-files soft limit to the hard limit
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, installed with uvicorn[standard]

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_main(args))
    except OSError as exc:
        print(json.dumps({"ready": False, "error": f"cannot listen: {exc.strerror} ({exc})"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
