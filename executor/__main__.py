"""``python -m executor``: run the rackpilot executor, or check its configuration.

    python -m executor [--env-file PATH]                 run until SIGTERM/SIGINT
    python -m executor --check-config [--env-file PATH]  validate settings and the key file, then exit
    python -m executor --show-public-key                 print the registered public key and key id
    python -m executor --verify-audit                    check the audit chain against this executor's anchors

Exit codes: 0 success, 2 invalid configuration or key file, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from pydantic import ValidationError

from . import ExecutorError
from .config import ExecutorSettings, load_settings
from .log import SECRETS, setup_logging
from .secrets import SecretsError, check_key_permissions, load_or_create

log = logging.getLogger("rackpilot.executor")


def _settings_error(exc: ValidationError) -> str:
    lines = ["invalid executor configuration:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        env = f"RACKPILOT_{loc.upper()}" if err["loc"] else ""
        # Never echo the offending value: it may be a key.
        lines.append(f"  {env or loc}: {err['msg']}")
    return "\n".join(lines)


def check_config(settings: ExecutorSettings) -> list[str]:
    """Problems that would stop the executor, without touching the network or the key."""
    problems = []
    path = settings.key_path
    if path.exists():
        try:
            check_key_permissions(path)
        except SecretsError as exc:
            problems.append(str(exc))
    elif not path.parent.exists() and not settings.state_dir.exists():
        problems.append(f"neither {path.parent} nor state_dir {settings.state_dir} exists; "
                        "create it (writable by the executor's user)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m executor", description="rackpilot executor")
    ap.add_argument("--env-file", help="read settings from this file too (environment wins)")
    ap.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    ap.add_argument("--show-public-key", action="store_true", help="print public key and key id, then exit")
    ap.add_argument("--verify-audit", action="store_true",
                    help="check the audit chain against this executor's signed anchors; exit 1 if it was altered")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return 2
    SECRETS.add(settings.supabase_key.get_secret_value())
    if args.check_config:
        problems = check_config(settings)
        if problems:
            print("configuration problems:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        summary = settings.model_dump(mode="json", exclude={"supabase_key", "smtp_password"})
        warnings = []
        if not settings.policy_path.exists():
            warnings.append(f"safety policy {settings.policy_path} not found: built-in step timeouts apply "
                            "(RACKPILOT_POLICY_PATH)")
        print(json.dumps({"ok": True, "settings": summary, "warnings": warnings}, sort_keys=True))
        return 0
    setup_logging(settings.log_level, settings.log_file)
    try:
        keys, created = load_or_create(settings.key_path)
    except (SecretsError, OSError) as exc:
        log.error("cannot use the private key: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.show_public_key:
        print(json.dumps({"public_key": keys.public_b64, "key_id": keys.kid}))
        return 0
    if args.verify_audit:
        return verify_audit(settings)
    if created:
        log.info("generated a new key pair", extra={"kid": keys.kid, "path": str(settings.key_path)})

    from .runner import Executor

    try:
        asyncio.run(Executor(settings, keys).run())
    except ExecutorError as exc:
        log.error("executor stopped: %s", exc)
        return 1
    return 0


def verify_audit(settings: ExecutorSettings) -> int:
    """Exit 0 when the chain is intact and matches every anchor, 1 when it does not."""
    from .audit_anchor import AnchorError, AnchorStore, verify
    from .control import ControlPlane

    async def run() -> dict:
        control = ControlPlane(settings)
        try:
            return await verify(control, AnchorStore(settings.state_dir, settings.executor_name))
        finally:
            await control.close()

    try:
        report = asyncio.run(run())
    except (AnchorError, ExecutorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
