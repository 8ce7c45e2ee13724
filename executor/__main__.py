"""``python -m executor``: run the rackpilot executor, or check its configuration.

    python -m executor [--env-file PATH]                 run until SIGTERM/SIGINT
    python -m executor --check-config [--online] [--env-file PATH]
                                                         check what start needs, print a JSON report, exit
    python -m executor --show-public-key                 print THIS HOST's public key and key id (the key pair
                                                         is created when absent); registers nothing
    python -m executor --verify-audit                    check the audit chain against this executor's anchors

Exit codes (systemd's ``RestartPreventExitStatus=2`` relies on them):

* 0 - a clean stop (SIGTERM/SIGINT, also during start-up retries);
* 2 - a configuration or identity error a restart cannot fix: invalid settings, a missing
  ``--env-file``, an unusable key file or state folder, a state folder another process
  holds, and the control plane's refusals (unknown site, a key of another project, the
  anon key, a URL with a path, an identity bound to another key, this process replaced
  by an admin's re-key);
* 1 - anything else.
"""

from __future__ import annotations

import warnings

# asyncssh (ESXi/ZFS SSH) imports cryptography's DSA types at import time, and cryptography
# warns about each (CryptographyDeprecationWarning): ten plain-text lines in a journal of JSON
# lines. rackpilot never offers DSA, so these import-time warnings are dropped; every other
# warning goes through the JSON logger (logging.captureWarnings in main()).
warnings.filterwarnings("ignore", message=r"DSA is deprecated", module=r"asyncssh\.")

import argparse  # noqa: E402 - the warning filter must come first
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from . import ExecutorError  # noqa: E402
from .config import ExecutorSettings, load_settings  # noqa: E402
from .log import SECRETS, setup_logging  # noqa: E402
from .preflight import CheckReport, ConfigurationError, StateLock, check_local, check_online  # noqa: E402
from .secrets import SecretsError, load_or_create  # noqa: E402

log = logging.getLogger("rackpilot.executor")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _settings_error(exc: ValidationError, env_file: str | None) -> str:
    where = f"the environment or {env_file}" if env_file else "the environment (or an --env-file)"
    lines = ["invalid executor configuration:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env = f"RACKPILOT_{loc.upper()}" if loc else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = f"is not set in {where}"
        # Never echo the offending value: it may be a key.
        lines.append(f"  {env} {msg}")
    return "\n".join(lines)


def _load(env_file: str | None) -> ExecutorSettings:
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigurationError(
            f"--env-file {env_file}: no such file (the settings would silently be missing)"
        )
    try:
        return load_settings(env_file)
    except ValidationError as exc:
        raise ConfigurationError(_settings_error(exc, env_file)) from None
    except OSError as exc:
        raise ConfigurationError(f"--env-file {env_file}: cannot read it ({exc.strerror})") from None


def check_config(
    settings: ExecutorSettings, env_file: str | None = None, *, online: bool = False
) -> CheckReport:
    """What start needs: local checks, and with ``online`` the control plane (read only)."""
    report = CheckReport()
    report.add("settings", True, "every setting valid")
    check_local(settings, report, Path(env_file) if env_file else None)
    if online:
        kid = None
        if settings.key_path.exists():
            try:
                kid = load_or_create(settings.key_path)[0].kid
            except (SecretsError, OSError):
                kid = None
        asyncio.run(check_online(settings, report, kid))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m executor", description="rackpilot executor")
    ap.add_argument("--env-file", help="read settings from this file too (environment wins); must exist")
    ap.add_argument(
        "--check-config", action="store_true", help="check what start needs and exit (JSON report)"
    )
    ap.add_argument(
        "--online",
        action="store_true",
        help="with --check-config: also the control plane, the key's role, the site and the identity",
    )
    ap.add_argument(
        "--show-public-key",
        action="store_true",
        help="print this host's public key and key id (created when absent); registers nothing",
    )
    ap.add_argument(
        "--verify-audit",
        action="store_true",
        help="check the audit chain against this executor's signed anchors; exit 1 if it was altered",
    )
    args = ap.parse_args(argv)
    if args.online and not args.check_config:
        ap.error("--online goes with --check-config")
    try:
        settings = _load(args.env_file)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    SECRETS.add(settings.supabase_key.get_secret_value())
    if args.check_config:
        report = check_config(settings, args.env_file, online=args.online)
        summary = settings.model_dump(mode="json", exclude={"supabase_key", "smtp_password"})
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "online": args.online,
                    "checks": report.checks,
                    "warnings": report.warnings,
                    "settings": summary,
                },
                sort_keys=True,
            )
        )
        if not report.ok:
            print("configuration problems:\n  " + "\n  ".join(report.problems), file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK
    setup_logging(settings.log_level, settings.log_file)
    logging.captureWarnings(True)  # any other warning becomes a JSON line (logger py.warnings)
    if args.show_public_key or args.verify_audit:
        try:
            keys, _ = load_or_create(settings.key_path)
        except (SecretsError, OSError) as exc:
            print(f"error: RACKPILOT_PRIVATE_KEY_PATH: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if args.show_public_key:
            print(
                json.dumps(
                    {
                        "public_key": keys.public_b64,
                        "key_id": keys.kid,
                        "path": str(settings.key_path),
                        "registered": "not by this command: the executor registers it at start",
                    }
                )
            )
            return EXIT_OK
        return verify_audit(settings)
    return run(settings)


class _StopBeforeLoop(BaseException):
    """SIGTERM/SIGINT before the run loop installed its own handlers."""


def _stop_before_loop(signum: int, frame: object) -> None:
    raise _StopBeforeLoop(signum)


def run(settings: ExecutorSettings) -> int:
    # until the run loop takes over the signals (asyncio handlers), a stop request ends start-up cleanly
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_loop)
    try:
        return _run(settings)
    except _StopBeforeLoop:
        log.info("stopped before start-up finished")
        return EXIT_OK


def _run(settings: ExecutorSettings) -> int:
    try:
        lock = StateLock(settings.state_dir).acquire()
    except ConfigurationError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        try:
            keys, created = load_or_create(settings.key_path)
        except (SecretsError, OSError) as exc:
            log.error("cannot use the private key (RACKPILOT_PRIVATE_KEY_PATH): %s", exc)
            print(f"error: RACKPILOT_PRIVATE_KEY_PATH: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if created:
            log.info(
                "generated a new key pair (an identity bound to another key will refuse it)",
                extra={"kid": keys.kid, "path": str(settings.key_path)},
            )

        from .runner import Executor

        executor = Executor(settings, keys)
        try:
            asyncio.run(executor.run())
        except ConfigurationError as exc:
            log.error("executor cannot start: %s", exc, extra={"exit_code": EXIT_CONFIG})
            return EXIT_CONFIG
        except ExecutorError as exc:
            log.error("executor stopped: %s", exc, extra={"exit_code": EXIT_FAILURE})
            return EXIT_FAILURE
        return executor.exit_code
    finally:
        lock.release()


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
