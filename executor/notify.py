"""Notification dispatcher: drains the transactional outbox to Teams and email.

The database writes ``notification_outbox`` rows in the same transaction as the job change
they announce (job started, completed, failed, paused for blockers, running longer than
usual, executor lost). Every executor runs this dispatcher; a row is sent by one of them
only, because rows are taken with a claim RPC that leases them (``FOR UPDATE SKIP LOCKED``
plus a claim token and expiry): another executor sees the row again only after the lease
ran out, i.e. after the first one died mid-send.

Each row names a channel and a destination:

* ``teams`` - ``destination`` is an incoming-webhook URL; the body is a message with one
  Adaptive Card attachment (title, facts, link), which both classic connectors and
  Workflows webhooks accept;
* ``email`` - ``destination`` is an address; sent through ``smtp_host`` (optional STARTTLS
  and login).

A failed send is retried with backoff (``notify_backoff_initial`` doubling up to
``notify_backoff_max``) and marked dead after ``notify_max_attempts`` attempts.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import httpx

from . import ExecutorError
from .config import ExecutorSettings
from .control import ControlPlane, ControlPlaneError
from .log import SECRETS

log = logging.getLogger("rackpilot.executor.notify")

TITLES = {
    "job_started": "Job started",
    "job_completed": "Job completed",
    "job_failed": "Job failed",
    "job_cancelled": "Job cancelled",
    "job_paused": "Job paused",
    "job_paused:executor_lost": "Executor lost: job paused",
    "job_blocked": "Job paused for blockers",
    "job_slow": "Job running longer than usual",
    "executor_lost": "Executor lost",
    "breakglass_used": "CRITICAL: break-glass access used",
}


class NotifyError(ExecutorError):
    """A message could not be delivered (the reason is recorded on the outbox row)."""


def _facts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    keys = (
        "job_type",
        "type",
        "job_id",
        "site",
        "status",
        "pause_reason",
        "step",
        "reason",
        "error",
        "elapsed_s",
        "expected_s",
        "attempts",
        # break-glass (breakglass_grant): who, with what role, from where, until when
        "severity",
        "account",
        "role",
        "client",
        "expires_at",
        "session_id",
    )
    return [(k, str(payload[k])) for k in keys if payload.get(k) not in (None, "", [])]


def render(event: str, payload: dict[str, Any]) -> tuple[str, str]:
    """Subject and plain-text body of a notification."""
    title = (
        TITLES.get(f"{event}:{payload.get('pause_reason')}")
        or TITLES.get(event)
        or event.replace("_", " ").capitalize()
    )
    what = payload.get("job_type") or payload.get("account") or payload.get("type") or "job"
    subject = f"[rackpilot] {title}: {what} {str(payload.get('job_id', ''))[:8]}".strip()
    lines = [title, ""] + [f"{k}: {v}" for k, v in _facts(payload)]
    return SECRETS.redact(subject), SECRETS.redact("\n".join(lines) + "\n")


def teams_card(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A Teams incoming-webhook message carrying one Adaptive Card."""
    subject, _ = render(event, payload)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": subject, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": k, "value": SECRETS.redact(v)} for k, v in _facts(payload)],
            },
        ],
    }
    if payload.get("url"):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": str(payload["url"])}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


class Dispatcher:
    def __init__(self, settings: ExecutorSettings, control: ControlPlane, executor_id: str):
        self.s = settings
        self.control = control
        self.executor_id = executor_id
        self.sent = 0
        self.failed = 0
        self._http = httpx.AsyncClient(timeout=settings.teams_timeout, follow_redirects=False)
        if settings.smtp_password is not None:
            SECRETS.add(settings.smtp_password.get_secret_value())

    async def close(self) -> None:
        await self._http.aclose()

    # --- channels ----------------------------------------------------------------------
    async def send_teams(self, url: str, event: str, payload: dict[str, Any]) -> None:
        if not url.startswith(("https://", "http://")):
            raise NotifyError("Teams destination is not an http(s) URL")
        try:
            resp = await self._http.post(url, json=teams_card(event, payload))
        except httpx.HTTPError as exc:
            raise NotifyError(f"Teams webhook unreachable: {type(exc).__name__}") from None
        # Teams answers 200 (classic) or 202 (Workflows); anything else is a failure.
        if resp.status_code not in (200, 202):
            raise NotifyError(f"Teams webhook answered HTTP {resp.status_code}")

    async def send_webhook(self, url: str, event: str, payload: dict[str, Any]) -> None:
        if not url.startswith(("https://", "http://")):
            raise NotifyError("webhook destination is not an http(s) URL")
        subject, _ = render(event, payload)
        try:
            resp = await self._http.post(
                url, json={"event": event, "title": subject, "payload": SECRETS.redact_obj(payload)}
            )
        except httpx.HTTPError as exc:
            raise NotifyError(f"webhook unreachable: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise NotifyError(f"webhook answered HTTP {resp.status_code}")

    def _send_mail_blocking(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        assert self.s.smtp_host is not None
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=self.s.smtp_timeout) as smtp:
            if self.s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.s.smtp_username and self.s.smtp_password is not None:
                smtp.login(self.s.smtp_username, self.s.smtp_password.get_secret_value())
            smtp.send_message(msg)

    async def send_email(self, to: str, event: str, payload: dict[str, Any]) -> None:
        if not self.s.smtp_host:
            raise NotifyError("email is not configured on this executor (RACKPILOT_SMTP_HOST)")
        if "@" not in to or "\n" in to or "\r" in to:
            raise NotifyError("email destination is not an address")
        subject, body = render(event, payload)
        try:
            await asyncio.to_thread(self._send_mail_blocking, to, subject, body)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"SMTP delivery failed: {type(exc).__name__}") from None

    async def deliver(self, row: dict[str, Any]) -> None:
        channel, dest = row.get("channel"), str(row.get("destination") or "")
        event, payload = str(row.get("event") or ""), dict(row.get("payload") or {})
        if channel == "teams":
            await self.send_teams(dest, event, payload)
        elif channel == "email":
            await self.send_email(dest, event, payload)
        elif channel == "webhook":
            await self.send_webhook(dest, event, payload)
        else:
            raise NotifyError(f"unknown channel {channel!r}")

    # --- outbox --------------------------------------------------------------------------
    def backoff(self, attempts: int) -> float:
        return min(self.s.notify_backoff_initial * (2 ** max(0, attempts - 1)), self.s.notify_backoff_max)

    async def drain_once(self) -> int:
        """Claim a batch, send it, record each outcome. Returns the number of rows handled."""
        rows = (
            await self.control.call(
                "executor_claim_notifications",
                {
                    "p_executor_id": self.executor_id,
                    "p_max": self.s.notify_batch,
                    "p_lease_seconds": self.s.notify_lease_seconds,
                },
            )
            or []
        )
        for row in rows:
            error: str | None = None
            try:
                await self.deliver(row)
                self.sent += 1
            except NotifyError as exc:
                error = SECRETS.redact(str(exc))
                self.failed += 1
                log.warning(
                    "notification %s (%s) failed: %s",
                    row.get("id"),
                    row.get("channel"),
                    error,
                    extra={"job_id": row.get("job_id")},
                )
            attempts = int(row.get("attempts") or 0)  # the claim already counted this attempt
            await self.control.call(
                "executor_complete_notification",
                {
                    "p_id": row["id"],
                    "p_claim_token": row["claim_token"],
                    "p_error": error,
                    "p_retry_in_seconds": self.backoff(attempts),
                    "p_max_attempts": self.s.notify_max_attempts,
                },
            )
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.drain_once()
            except ControlPlaneError as exc:
                log.warning("outbox drain failed: %s", exc)
                handled = 0
            if handled >= self.s.notify_batch:
                continue  # more are probably waiting
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.s.notify_interval)
            except TimeoutError:
                pass
