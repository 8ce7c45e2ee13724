"""``rackpilot``: the command line for admins and scripts (and, through ``dev``/``lab``/``demo``,
the local stack, the simulated lab and the demo of ``devstack/cli.py``).

    rackpilot site add NAME [--description TEXT] [--timezone TZ]         admin
    rackpilot site list
    rackpilot executor list [--site SITE]                                 heartbeat age, version, running jobs
    rackpilot executor status SITE/NAME                                   one executor: key, re-key, metrics
    rackpilot executor rekey SITE/NAME (--key-id KID | --any-key) --reason TEXT          admin, audited
    rackpilot credentials seal --site SITE --name NAME --kind KIND --username USER
                               --endpoint URL [--endpoint URL ...] [--ca-bundle PATH | --insecure-tls |
                               --allow-plain-http] [--known-hosts PATH|sealed | --insecure-host-key]
                               [--reseal]                                                   admin
    rackpilot credentials status --site SITE                                                admin
    rackpilot server add --site SITE --name NAME --idrac URL [--credential NAME] [--service-tag TAG]
                         [--model MODEL] [--ca-bundle PATH | --insecure-tls | --allow-plain-http]
    rackpilot job create TYPE --site SITE [--server NAME ...] [--param KEY=VALUE ...] [--params JSON]
                         [--window ID] [--description TEXT] [--dry-run] [--watch]
    rackpilot job watch JOB_ID [--timeout S] [--exit-on-pause]
    rackpilot console [--port P] [--ip ADDR] [--all] [--notebooks DIR] [--open]
                                                                          the notebooks as a web app (Voilà)
    rackpilot dev ... | lab ... | demo ...                                the local stack (devstack/cli.py,
                                                                          through an entry point)

It signs in as a user, exactly as the console does (``console.session``): the project URL
and its anon key from ``SUPABASE_URL`` and ``SUPABASE_ANON_KEY``, the user from
``RACKPILOT_CONSOLE_EMAIL``/``RACKPILOT_CONSOLE_PASSWORD`` or a prompt. It never uses the
service key (a service-role key in ``SUPABASE_ANON_KEY`` is refused): what a user may do is
the control plane's decision (RLS, the edge functions' role checks), and refusals are shown
in the console's words (``console.errors``). The secret of ``credentials seal`` comes from a
prompt or standard input, never from the command line, and goes only into the body of the
``encrypt-credentials`` call.

Exit codes: 0 done (``job watch``: the job completed); 1 refused by the control plane, or the
watched job failed; 2 usage, configuration or sign-in error; 3 the watched job was cancelled;
4 it paused (with ``--exit-on-pause``); 5 ``job watch`` timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from console.api import Api, Row
from console.errors import ConfigError, ConsoleError, NotFound, SignInError, ValidationFailed
from console.session import ConsoleConfig, sign_in

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CANCELLED, EXIT_PAUSED, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
#: entry-point group of the subcommands the harness adds (``dev``, ``lab`` and ``demo``:
#: devstack/cli.py, declared in pyproject.toml); the console never imports the harness itself
COMMAND_GROUP = "rackpilot.commands"
WATCH_REFRESH_S = 15.0  # REST re-read while watching, in case a Realtime change was missed (s)


# --- sign-in -------------------------------------------------------------------------------------
def _role_of_key(key: str) -> str | None:
    from executor.preflight import key_role

    return key_role(key)


def connect(env: dict[str, str] | None = None) -> Api:
    """Sign in as a user; never with the service key."""
    env = dict(os.environ) if env is None else env
    config = ConsoleConfig.from_env(env)
    if _role_of_key(config.anon_key) == "service_role":
        raise ConfigError(
            "SUPABASE_ANON_KEY holds the service-role key; rackpilot signs in as a user with the "
            "project's anon key and never uses the service key",
            code="service_key_refused",
        )
    email = env.get("RACKPILOT_CONSOLE_EMAIL", "")
    password = env.get("RACKPILOT_CONSOLE_PASSWORD", "")
    if not email or not password:
        if not sys.stdin.isatty():
            raise ConfigError(
                "sign in: set RACKPILOT_CONSOLE_EMAIL and RACKPILOT_CONSOLE_PASSWORD, or run in a "
                "terminal to be prompted",
                code="no_credentials",
            )
        if not email:
            print("email: ", end="", file=sys.stderr, flush=True)
            email = sys.stdin.readline().strip()
        if not password:
            password = getpass.getpass(f"password for {email}: ")
    session = sign_in(config, email, password)
    password = ""  # noqa: F841 -- used for the sign-in only
    return Api(session)


# --- output ----------------------------------------------------------------------------------------
def out(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(rows: list[Row], cols: list[str]) -> None:
    widths = {c: max([len(c)] + [len(_cell(r.get(c))) for r in rows]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(_cell(r.get(c)).ljust(widths[c]) for c in cols).rstrip())


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


# --- lookups -------------------------------------------------------------------------------------------
def site_of(api: Api, name: str) -> Row:
    for s in api.sites():
        if s["name"] == name or s["id"] == name:
            return s
    raise NotFound(
        f"site {name!r} does not exist or is not visible to you (rackpilot site list)", code="site_not_found"
    )


def executor_of(api: Api, ref: str) -> Row:
    site_name, sep, name = ref.partition("/")
    if not sep or not name:
        raise ValidationFailed(f"name the executor as SITE/NAME, not {ref!r}")
    site = site_of(api, site_name)
    rows = api._rest(
        "executors",
        lambda c: (
            c.table("executors")
            .select(
                "id,name,site_id,key_id,previous_key_id,rekeyed_at,rekey_requested_at,rekey_key_id,status,version,"
                "capabilities,metrics,metrics_at,registered_at,last_heartbeat_at"
            )
            .eq("site_id", site["id"])
            .eq("name", name)
        ),
    )
    if not rows:
        raise NotFound(
            f"executor {ref} has never registered (rackpilot executor list --site {site_name})",
            code="executor_not_found",
        )
    return {**rows[0], "site": site["name"]}


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [x for x in (args.ca_bundle, args.insecure_tls, args.allow_plain_http) if x]
    if len(chosen) > 1:
        raise ValidationFailed("choose one of --ca-bundle, --insecure-tls and --allow-plain-http")
    if args.ca_bundle:
        return {"ca_bundle": args.ca_bundle}
    if args.insecure_tls:
        return {"insecure": True}
    if args.allow_plain_http:
        return {"allow_plain_http": True}
    return {}


# --- commands ----------------------------------------------------------------------------------------
def cmd_site_add(api: Api, args: argparse.Namespace) -> int:
    row = {"name": args.name, "description": args.description or "", "timezone": args.timezone}
    out(api._rest("site", lambda c: c.table("sites").insert(row))[0])
    return EXIT_OK


def cmd_site_list(api: Api, args: argparse.Namespace) -> int:
    rows = api.sites()
    out(rows) if args.json else table(rows, ["name", "timezone", "description", "id"])
    return EXIT_OK


def cmd_executor_list(api: Api, args: argparse.Namespace) -> int:
    rows = api.executors()
    if args.site:
        site = site_of(api, args.site)
        rows = [r for r in rows if r["site_id"] == site["id"]]
    out(rows) if args.json else table(
        rows, ["site_name", "name", "health", "heartbeat_age_s", "version", "running_jobs", "status"]
    )
    return EXIT_OK


def cmd_executor_status(api: Api, args: argparse.Namespace) -> int:
    ex = executor_of(api, args.executor)
    health = [r for r in api.executors() if r["executor_id"] == ex["id"]]
    out(
        {**ex, **({k: health[0][k] for k in ("health", "heartbeat_age_s", "running_jobs")} if health else {})}
    )
    return EXIT_OK


def cmd_executor_rekey(api: Api, args: argparse.Namespace) -> int:
    if bool(args.key_id) == bool(args.any_key):
        raise ValidationFailed("give the new key id (--key-id, printed by the refused executor) or --any-key")
    ex = executor_of(api, args.executor)
    res = api._rest(
        "rekey",
        lambda c: c.rpc(
            "rekey_executor", {"p_executor_id": ex["id"], "p_key_id": args.key_id, "p_reason": args.reason}
        ),
    )
    out(res[0] if res else {})
    return EXIT_OK


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        secret = getpass.getpass(prompt)
    else:
        secret = sys.stdin.read()
        secret = secret[:-1] if secret.endswith("\n") else secret
        secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise ValidationFailed("the secret is empty (give it at the prompt or on standard input)")
    return secret


def seal_endpoints(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The endpoints of ``credentials seal``: https/http ones take the TLS flags, ssh:// ones
    the host-key trust (``--known-hosts PATH``, ``--known-hosts sealed`` when the secret pins
    the host keys itself, as a ZFS replication credential does, or ``--insecure-host-key``)."""
    tls = _tls(args)
    known_hosts, insecure_host_key = (
        getattr(args, "known_hosts", None),
        getattr(args, "insecure_host_key", False),
    )
    if known_hosts and insecure_host_key:
        raise ValidationFailed("choose one of --known-hosts and --insecure-host-key")
    out: list[dict[str, Any]] = []
    for u in args.endpoint or []:
        if u.lower().startswith("ssh://"):
            if not (known_hosts or insecure_host_key):
                raise ValidationFailed(
                    f"the ssh endpoint {u} needs --known-hosts PATH, --known-hosts sealed (the "
                    "secret pins the host keys) or --insecure-host-key"
                )
            out.append(
                {
                    "url": u,
                    "tls": {"known_hosts": known_hosts} if known_hosts else {"insecure_host_key": True},
                }
            )
        else:
            out.append({"url": u, **({"tls": tls} if tls else {})})
    return out


def _credential_set_id(api: Api, site: Row, name: str, missing: str) -> Any:
    """The id of the site's credential set ``name``; NotFound saying ``missing`` otherwise."""
    rows = api._rest(
        "credential sets",
        lambda c: c.table("credential_sets").select("id").eq("site_id", site["id"]).eq("name", name),
    )
    if not rows:
        raise NotFound(missing, code="credential_not_found")
    return rows[0]["id"]


def cmd_credentials_seal(api: Api, args: argparse.Namespace) -> int:
    site = site_of(api, args.site)
    endpoints = seal_endpoints(args)
    secret = _read_secret(f"secret for {args.username}@{args.name}: ")
    try:
        if args.reseal:
            cid = _credential_set_id(
                api, site, args.name, f"site {args.site} has no credential set {args.name!r} to reseal"
            )
            body: dict[str, Any] = {
                "action": "reseal",
                "credential_set_id": cid,
                "secret": secret,
                "username": args.username,
            }
        else:
            if not args.kind:
                raise ValidationFailed("--kind is required to seal a new credential set")
            body = {
                "action": "seal",
                "site_id": site["id"],
                "name": args.name,
                "kind": args.kind,
                "username": args.username,
                "secret": secret,
            }
        if endpoints:
            body["endpoints"] = endpoints
        res = api.invoke("encrypt-credentials", body)
    finally:
        secret = ""  # noqa: F841 -- the body above was its only use
    out(res)
    return EXIT_OK


def cmd_credentials_status(api: Api, args: argparse.Namespace) -> int:
    out(api.credential_status(site_of(api, args.site)["id"]))
    return EXIT_OK


def cmd_server_add(api: Api, args: argparse.Namespace) -> int:
    site = site_of(api, args.site)
    row: dict[str, Any] = {
        "site_id": site["id"],
        "name": args.name,
        "idrac_address": args.idrac,
        "model": args.model or "",
    }
    if args.service_tag:
        row["service_tag"] = args.service_tag
    tls = _tls(args)
    if tls:
        row["details"] = {"tls": tls}
    if args.credential:
        row["credential_set_id"] = _credential_set_id(
            api,
            site,
            args.credential,
            f"site {args.site} has no credential set {args.credential!r} (rackpilot credentials seal)",
        )
    out(api._rest("server", lambda c: c.table("servers").insert(row))[0])
    return EXIT_OK


def _param_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_job_create(api: Api, args: argparse.Namespace) -> int:
    site = site_of(api, args.site)
    params: dict[str, Any] = {}
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            raise ValidationFailed(f"--params is not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise ValidationFailed("--params must be a JSON object")
    for kv in args.param or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ValidationFailed(f"--param takes KEY=VALUE, not {kv!r}")
        params[key] = _param_value(value)
    if args.server:
        servers = {s["name"]: s["id"] for s in api.servers(site_id=site["id"])}
        missing = [n for n in args.server if n not in servers]
        if missing:
            raise NotFound(f"site {args.site} has no server {', '.join(missing)}", code="server_not_found")
        params["server_ids"] = [servers[n] for n in args.server]
    res = api.create_job(
        args.type,
        params,
        dry_run=args.dry_run,
        site_id=site["id"],
        maintenance_window_id=args.window,
        description=args.description,
    )
    out(res)
    if args.watch and not args.dry_run:
        return watch(api, str(res["job_id"]), timeout=args.timeout, exit_on_pause=args.exit_on_pause)
    return EXIT_OK


def cmd_job_watch(api: Api, args: argparse.Namespace) -> int:
    return watch(api, args.job_id, timeout=args.timeout, exit_on_pause=args.exit_on_pause)


# --- job watch over Realtime -----------------------------------------------------------------------------
class Watcher:
    """Prints a job's steps, task progress and status as Realtime delivers them."""

    def __init__(self, api: Api, job_id: str):
        from console.models.jobs import JobDetail

        self.detail = JobDetail(api, job_id)
        self.seen_steps: dict[str, str] = {}
        self.seen_tasks: dict[str, tuple[Any, Any]] = {}
        self.seen_status: tuple[str, Any] | None = None

    def show(self) -> None:
        d = self.detail
        done, total = d.progress()
        for step in d.timeline():
            key = f"{step['seq']}:{step['key']}"
            if self.seen_steps.get(key) != step["status"]:
                self.seen_steps[key] = step["status"]
                extra = (
                    f"  {step['duration_s']}s"
                    if step["duration_s"] is not None and step["status"] != "running"
                    else ""
                )
                err = f"  error: {step['error']}" if step["error"] else ""
                print(f"step {step['seq']:>3}  {step['status']:<10} {step['step']}{extra}{err}", flush=True)
        for task in sorted(d.tasks.values(), key=lambda t: t.get("seq") or 0):
            state = (task.get("status"), task.get("progress"))
            if self.seen_tasks.get(task["id"]) != state:
                self.seen_tasks[task["id"]] = state
                print(
                    f"task      {str(task.get('status')):<10} {task.get('target_name') or task.get('target_id')}"
                    f"  {task.get('progress') if task.get('progress') is not None else ''}".rstrip(),
                    flush=True,
                )
        status = (d.status, d.job.get("pause_reason"))
        if status != self.seen_status:
            self.seen_status = status
            reason = f" ({status[1]})" if status[1] else ""
            error = f"  error: {d.job.get('error')}" if d.job.get("error") else ""
            print(f"job       {d.status}{reason}  steps {done}/{total}{error}", flush=True)


def watch(api: Api, job_id: str, *, timeout: float | None = None, exit_on_pause: bool = False) -> int:
    from console.models.jobs import TERMINAL
    from console.models.live import LiveFeed

    async def run() -> int:
        w = Watcher(api, job_id)
        changed = asyncio.Event()
        feed = LiveFeed(api.session, job_id=job_id)

        def sink(change: dict[str, Any]) -> None:
            if w.detail.apply(change):
                changed.set()

        feed.add_sink(sink)
        await feed.start()  # subscribe first, then read: no change falls between the two
        try:
            w.detail.refresh()
            deadline = None if timeout is None else time.monotonic() + timeout
            last_read = time.monotonic()
            while True:
                w.show()
                status = w.detail.status
                if status in TERMINAL:
                    return {"completed": EXIT_OK, "failed": EXIT_REFUSED, "cancelled": EXIT_CANCELLED}[status]
                if status == "paused" and exit_on_pause:
                    return EXIT_PAUSED
                if deadline is not None and time.monotonic() > deadline:
                    print(f"job       still {status} after {timeout}s", flush=True)
                    return EXIT_TIMEOUT
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                if time.monotonic() - last_read > WATCH_REFRESH_S or feed.errors:
                    feed.errors.clear()
                    w.detail.refresh()  # a missed change (Realtime reconnecting) is caught up here
                    last_read = time.monotonic()
        finally:
            await feed.stop()

    return asyncio.run(run())


# --- the parser ------------------------------------------------------------------------------------------
def _tls_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--ca-bundle", help=f"{what}: trust this CA bundle (path on the executor host)")
    p.add_argument("--insecure-tls", action="store_true", help=f"{what}: do not verify the certificate")
    p.add_argument(
        "--allow-plain-http", action="store_true", help=f"{what}: plain HTTP (loopback only: the lab)"
    )


def harness_commands() -> dict[str, EntryPoint]:
    """The installed subcommands of :data:`COMMAND_GROUP`, by name (none without the harness)."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _site_commands(sub: Any) -> None:
    """rackpilot site add | list"""
    site = sub.add_parser("site", help="sites").add_subparsers(dest="site_cmd", required=True)
    add = site.add_parser("add", help="create a site (admin)")
    add.add_argument("name")
    add.add_argument("--description", default="")
    add.add_argument("--timezone", default="UTC")
    add.set_defaults(func=cmd_site_add)
    site.add_parser("list", help="list sites").set_defaults(func=cmd_site_list)


def _executor_commands(sub: Any) -> None:
    """rackpilot executor list | status | rekey"""
    ex = sub.add_parser("executor", help="executors").add_subparsers(dest="executor_cmd", required=True)
    lst = ex.add_parser("list", help="executors with health, heartbeat age, version, running jobs")
    lst.add_argument("--site")
    lst.set_defaults(func=cmd_executor_list)
    st = ex.add_parser("status", help="one executor: key, re-key, metrics")
    st.add_argument("executor", metavar="SITE/NAME")
    st.set_defaults(func=cmd_executor_status)
    rk = ex.add_parser("rekey", help="let a new key take an executor identity over (admin, audited)")
    rk.add_argument("executor", metavar="SITE/NAME")
    rk.add_argument(
        "--key-id", help="the new key id (the refused executor names it; --show-public-key prints it)"
    )
    rk.add_argument("--any-key", action="store_true", help="accept whichever new key registers first")
    rk.add_argument("--reason", required=True, help="why (kept in the audit log)")
    rk.set_defaults(func=cmd_executor_rekey)


def _credentials_commands(sub: Any) -> None:
    """rackpilot credentials seal | status"""
    cr = sub.add_parser("credentials", help="sealed credentials (admin)").add_subparsers(
        dest="cred_cmd", required=True
    )
    seal = cr.add_parser(
        "seal", help="seal a secret (read from a prompt or standard input) to the site's executors"
    )
    seal.add_argument("--site", required=True)
    seal.add_argument("--name", required=True)
    seal.add_argument("--kind", choices=["idrac", "vcenter", "esxi", "ome", "ssh"])
    seal.add_argument("--username", required=True)
    seal.add_argument(
        "--endpoint",
        action="append",
        metavar="URL",
        help="where the secret may be presented (repeat); sealed with it",
    )
    _tls_flags(seal, "the endpoints")
    seal.add_argument(
        "--known-hosts",
        metavar="PATH|sealed",
        help="ssh:// endpoints: a known_hosts file on the executor host, or 'sealed' when the secret "
        'is {"private_key": ..., "host_keys": ...} and pins the keys itself',
    )
    seal.add_argument("--insecure-host-key", action="store_true", help="ssh:// endpoints: trust any host key")
    seal.add_argument(
        "--reseal", action="store_true", help="re-seal an existing set (after a re-key or rotation)"
    )
    seal.set_defaults(func=cmd_credentials_seal)
    cst = cr.add_parser("status", help="which credential sets miss an envelope for a current executor key")
    cst.add_argument("--site", required=True)
    cst.set_defaults(func=cmd_credentials_status)


def _server_commands(sub: Any) -> None:
    """rackpilot server add"""
    srv = sub.add_parser("server", help="servers").add_subparsers(dest="server_cmd", required=True)
    sadd = srv.add_parser("add", help="register a Dell server by its iDRAC")
    sadd.add_argument("--site", required=True)
    sadd.add_argument("--name", required=True)
    sadd.add_argument(
        "--idrac", required=True, metavar="URL", help="the iDRAC's address, e.g. https://10.1.2.7"
    )
    sadd.add_argument("--credential", help="credential set to bind (admin)")
    sadd.add_argument("--service-tag")
    sadd.add_argument("--model")
    _tls_flags(sadd, "the iDRAC")
    sadd.set_defaults(func=cmd_server_add)


def _job_commands(sub: Any) -> None:
    """rackpilot job create | watch"""
    job = sub.add_parser("job", help="jobs").add_subparsers(dest="job_cmd", required=True)
    jc = job.add_parser("create", help="create a job through create-job (operator)")
    jc.add_argument("type")
    jc.add_argument("--site", required=True)
    jc.add_argument(
        "--server", action="append", metavar="NAME", help="target server by name (repeat): server_ids"
    )
    jc.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a parameter (VALUE read as JSON if it is)"
    )
    jc.add_argument("--params", help="all parameters as a JSON object")
    jc.add_argument("--window", help="maintenance window id")
    jc.add_argument("--description")
    jc.add_argument("--dry-run", action="store_true", help="plan only, write nothing")
    jc.add_argument("--watch", action="store_true", help="then follow it (as job watch)")
    jc.add_argument("--timeout", type=float)
    jc.add_argument("--exit-on-pause", action="store_true")
    jc.set_defaults(func=cmd_job_create)
    jw = job.add_parser("watch", help="follow a job live over Realtime until it ends")
    jw.add_argument("job_id")
    jw.add_argument("--timeout", type=float, help="give up after this many seconds (exit 5)")
    jw.add_argument("--exit-on-pause", action="store_true", help="exit 4 when the job pauses")
    jw.set_defaults(func=cmd_job_watch)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rackpilot", description="rackpilot command line (signs in as a user)")
    p.add_argument("--json", action="store_true", help="lists as JSON instead of tables")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, ep in harness_commands().items():
        sub.add_parser(name, help=f"rackpilot {name} ... (the local stack, lab and demo: {ep.module})")
    _site_commands(sub)
    _executor_commands(sub)
    _credentials_commands(sub)
    _server_commands(sub)
    _job_commands(sub)
    from console import app_mode

    app_mode.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = harness_commands()
    if argv and argv[0] in commands:
        return int(commands[argv[0]].load()(argv))
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "console":  # the web app signs in in the page, not here
            from console.app_mode import cmd_console

            return cmd_console(args)
        api = connect()
        return args.func(api, args)
    except KeyboardInterrupt:
        return 130
    except (ConfigError, SignInError, ValidationFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsoleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
