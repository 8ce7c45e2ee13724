"""``rackpilot``: the command line of the local stack, the lab and the demo.

rackpilot dev up [--reset]      start Postgres + gateway; apply pending migrations (create on first run)
rackpilot dev down              stop everything (the data stays)
rackpilot dev status            what runs where; the schema against supabase/migrations
rackpilot dev reset             re-apply migrations and seed (supabase db reset)
rackpilot dev env               SUPABASE_URL, keys and DB URL in .env form
rackpilot dev user add EMAIL --role ROLE [--password PW]
rackpilot dev destroy           stop and delete the stack's state folder
rackpilot demo [--once]         the main job on the local stack
rackpilot lab up [--config F]   start the simulated data centre in the background
rackpilot lab down|status       stop it / show its URLs and ports
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets as pysecrets
import sys

from devstack.stack.users import add_user

APP_ROLES = ("viewer", "operator", "approver", "admin")


def _stack():
    from devstack.stack.stack import Stack

    return Stack()


def cmd_up(args: argparse.Namespace) -> int:
    st = _stack()
    applied = st.up(reset=args.reset)
    if len(applied) > 5:
        print(f"applied {len(applied)} migrations: {applied[0]} \u2026 {applied[-1]}", file=sys.stderr)
    elif applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}", file=sys.stderr)
    status = st.schema_status()
    print(
        f"schema at {status.version} ({len(status.applied)} migrations, as supabase/migrations)",
        file=sys.stderr,
    )
    print(f"rackpilot local stack is up: {st.cfg.api_url}", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _stack().down()
    print("rackpilot local stack is down", file=sys.stderr)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    import shutil

    st = _stack()
    st.destroy()
    shutil.rmtree(st.cfg.state_dir, ignore_errors=True)
    print(f"removed {st.cfg.state_dir}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_stack().status(), indent=2))
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    st = _stack()
    applied = st.reset()
    print(f"schema re-created: {len(applied)} migrations and the seed applied", file=sys.stderr)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    for k, v in _stack().env().items():
        print(f"{k}={v}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    if args.role not in APP_ROLES:
        print(f"error: --role must be one of {', '.join(APP_ROLES)}", file=sys.stderr)
        return 2
    password = args.password or os.environ.get("RACKPILOT_USER_PASSWORD")
    generated = False
    if not password:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.email}: ")
        else:
            password = pysecrets.token_urlsafe(12)
            generated = True
    if len(password) < 8:
        print("error: the password must be at least 8 characters", file=sys.stderr)
        return 2
    uid = add_user(_stack(), args.email, args.role, password)
    print(json.dumps({"id": uid, "email": args.email.lower(), "role": args.role}))
    if generated:
        print(f"generated password: {password}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    return run_demo(once=args.once)


def cmd_lab(args: argparse.Namespace) -> int:
    from devstack.lab import datacentre

    if args.lab_cmd == "up":
        print(json.dumps(datacentre.lab_up(args.config), indent=2))
    elif args.lab_cmd == "down":
        print("lab stopped" if datacentre.lab_down() else "no lab was running", file=sys.stderr)
    else:
        print(json.dumps(datacentre.lab_status(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rackpilot", description="rackpilot command line")
    sub = p.add_subparsers(dest="cmd", required=True)

    dev = sub.add_parser("dev", help="the Docker-free local Supabase stack")
    dsub = dev.add_subparsers(dest="dev_cmd", required=True)
    up = dsub.add_parser("up", help="start the stack")
    up.add_argument("--reset", action="store_true", help="re-apply migrations and seed")
    up.set_defaults(func=cmd_up)
    dsub.add_parser("down", help="stop the stack").set_defaults(func=cmd_down)
    dsub.add_parser("destroy", help="stop the stack and delete its state").set_defaults(func=cmd_destroy)
    dsub.add_parser("status", help="show what runs").set_defaults(func=cmd_status)
    dsub.add_parser("reset", help="re-apply migrations and seed").set_defaults(func=cmd_reset)
    dsub.add_parser("env", help="print the env in .env form").set_defaults(func=cmd_env)
    user = dsub.add_parser("user", help="manage users")
    usub = user.add_subparsers(dest="user_cmd", required=True)
    add = usub.add_parser("add", help="create a user")
    add.add_argument("email")
    add.add_argument("--role", required=True, help=f"one of {', '.join(APP_ROLES)}")
    add.add_argument("--password", help="default: prompt, or generate when not interactive")
    add.set_defaults(func=cmd_user_add)

    demo = sub.add_parser("demo", help="run rackpilot's main job on the local stack")
    demo.add_argument("--once", action="store_true", help="run once and exit 0 on success")
    demo.set_defaults(func=cmd_demo)

    lab = sub.add_parser("lab", help="the simulated data centre (iDRACs, vCenter, OME, ESXi SSH)")
    lsub = lab.add_subparsers(dest="lab_cmd", required=True)
    lab_up = lsub.add_parser("up", help="start it in the background")
    lab_up.add_argument("--config", help="JSON: clusters, time_scale, esxi_ssh, ome, timing")
    lab_up.set_defaults(func=cmd_lab)
    lsub.add_parser("down", help="stop it").set_defaults(func=cmd_lab)
    lsub.add_parser("status", help="show what runs where").set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - operators get one clear line, not a traceback
        from devstack.stack.stack import StackError

        if isinstance(exc, StackError) or os.environ.get("RACKPILOT_DEBUG") != "1":
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
