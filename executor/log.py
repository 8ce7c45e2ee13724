"""Structured JSON logging with redaction of every secret the process has opened.

Each line is one JSON object: ``ts``, ``level``, ``logger``, ``msg`` and, when known,
``job_id``, ``step`` and ``target`` (taken from context variables the step engine sets,
so handler code never passes them by hand), plus any ``extra=`` fields.

Redaction happens at the handler, not at the call site: :data:`SECRETS` collects every
value :mod:`executor.secrets` decrypts (and the configured keys), and
:class:`RedactingFilter` rewrites the fully formatted message, its arguments, extra
fields and exception text before any formatter sees the record. Whatever a caller logs,
``"%s" % password`` or ``repr(credentials)`` or a traceback quoting one, prints ``***``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REDACTED = "***"
# Shorter values are too likely to appear as ordinary text ("ok", "1"); the sealed
# credential format rejects such passwords anyway.
MIN_SECRET_LEN = 4

job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
step_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("step", default=None)
target_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class SecretRegistry:
    """Every secret value this process knows, longest first so overlaps redact fully."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()

    def add(self, value: str | bytes | None) -> None:
        if value is None:
            return
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return
        if len(value) < MIN_SECRET_LEN:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def add_all(self, values: Iterable[str]) -> None:
        for v in values:
            self.add(v)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._ordered = ()

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def redact_obj(self, obj: Any) -> Any:
        """Redact strings inside JSON-like data (details sent to the control plane)."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {k: self.redact_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.redact_obj(v) for v in obj]
        return obj


SECRETS = SecretRegistry()


def redact(text: str) -> str:
    return SECRETS.redact(text)


class RedactingFilter(logging.Filter):
    """Bakes the message with its args, then removes every known secret from it."""

    def __init__(self, registry: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the record
            msg = f"{record.msg!r} {record.args!r}"
        record.msg = self.registry.redact(msg)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        if record.exc_text:
            record.exc_text = self.registry.redact(record.exc_text)
        # The traceback now lives only in exc_text; formatters must not re-render raw frames.
        record.exc_info = None
        if record.stack_info:
            record.stack_info = self.registry.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(
                    record,
                    key,
                    self.registry.redact_obj(value) if isinstance(value, str | dict | list) else value,
                )
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (("job_id", job_id_var), ("step", step_var), ("target", target_var)):
            value = getattr(record, key, None) or var.get()
            if value is not None:
                out[key] = value
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and key not in out:
                out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        line = orjson.dumps(out, default=str).decode()
        # Second line of defence: a secret that arrived through an unusual attribute.
        return SECRETS.redact(line)


def setup_logging(level: str = "INFO", log_file: Path | None = None, stream: Any = None) -> None:
    """Route every logger through JSON lines with redaction (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_rackpilot", False):
            root.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.addFilter(RedactingFilter())
        h.setFormatter(JsonFormatter())
        h._rackpilot = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    # httpx logs every request line at INFO, including URLs with keys in query strings.
    for noisy in ("httpx", "httpcore", "websockets", "hpack", "realtime"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
