"""``rackpilot console``: the notebooks as a web app (Voilà) for operators who never edit code.

Voilà runs a notebook in a fresh kernel per page and shows only its widgets: no code, no
cells, no tracebacks (``show_tracebacks`` off). By default it serves ``00_console`` (the
whole console on one page: sign in once, then every screen the role may open);
``--all`` serves the notebooks folder as a list to pick from.

It listens on loopback with a random token unless told otherwise, and the kernels get only
what an operator's Jupyter would: ``SUPABASE_URL`` and ``SUPABASE_ANON_KEY``, never the
service key or the database URL, nor ``RACKPILOT_CONSOLE_EMAIL``/``_PASSWORD`` (which would
sign every visitor in as that user): they are dropped from the environment. The sign-in is the
console's own, shared with any JupyterLab of the same user on this machine
(``console.store``). The command replaces itself with Voilà (``exec``), so stopping it
(Ctrl-C, SIGTERM, the owner killed) stops the server and its kernels: there is no parent
to leave behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import sys
from pathlib import Path

from console.errors import ConfigError
from console.session import ConsoleConfig

DEFAULT_NOTEBOOK = "00_console.ipynb"
# never handed to the app's kernels: the service key and database URL bypass every role check,
# and demo credentials would sign every visitor of the page in as that user
DROPPED_ENV = (
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_DB_URL",
    "RACKPILOT_CONSOLE_EMAIL",
    "RACKPILOT_CONSOLE_PASSWORD",
)


def default_notebooks() -> Path:
    """The notebooks folder of this checkout (``notebooks/`` beside ``console/``)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="serve the operator console as a web app (Voilà): no code, sign in in the page",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--port", type=int, default=8866, help="TCP port (default 8866)")
    p.add_argument(
        "--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--notebooks", type=Path, default=None, help="the notebooks folder (default: this checkout's)"
    )
    p.add_argument(
        "--all", action="store_true", help="serve every notebook as a list (default: 00_console only)"
    )
    p.add_argument(
        "--token",
        default=None,
        help="the token the URL carries (default: a new random one; '' for none, loopback only)",
    )
    p.add_argument("--open", action="store_true", help="open a browser")


def voila_command(args: argparse.Namespace, env: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
    """The Voilà command line, its environment and the URL to open; raises ConfigError in
    words when something is missing (checked before anything starts)."""
    ConsoleConfig.from_env(env)  # SUPABASE_URL and SUPABASE_ANON_KEY, said in words when missing
    if importlib.util.find_spec("voila") is None:
        raise ConfigError(
            "Voilà is not installed: pip install 'rackpilot[console]' (or make setup)", code="no_voila"
        )
    folder = (args.notebooks or default_notebooks()).resolve()
    target = folder if args.all else folder / DEFAULT_NOTEBOOK
    if not target.exists():
        raise ConfigError(
            f"{target} does not exist: give the notebooks folder with --notebooks", code="no_notebooks"
        )
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: give a TCP port between 1 and 65535", code="bad_port")
    token = secrets.token_hex(16) if args.token is None else args.token
    if not token and args.ip not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"--token '' on {args.ip}: a console reachable from other machines needs a token", code="no_token"
        )
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(target),
        f"--port={args.port}",
        f"--Voila.ip={args.ip}",
        f"--token={token}",
        "--show_tracebacks=False",
        "--strip_sources=True",
        "--ServerApp.port_retries=0",
    ]
    if not args.open:
        cmd.append("--no-browser")
    child_env = {k: v for k, v in env.items() if k not in DROPPED_ENV}
    host = f"[{args.ip}]" if ":" in args.ip else args.ip
    url = f"http://{host}:{args.port}/" + (f"?token={token}" if token else "")
    return cmd, child_env, url


def cmd_console(args: argparse.Namespace) -> int:
    cmd, env, url = voila_command(args, dict(os.environ))
    print(f"rackpilot console: {url}", flush=True)
    print("(sign in in the page; Ctrl-C stops the console and its kernels)", flush=True)
    os.execve(sys.executable, cmd, env)  # Voilà takes this process over: nothing is left behind
    return 0  # not reached
