"""Admin screens: sealing target credentials, force-resuming stuck jobs, notifications."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import Observable, parse_ts, short_id, short_ts

CREDENTIAL_KINDS = ("idrac", "vcenter", "esxi", "ome", "ssh")
MIN_REASON = 10  # characters a force-resume reason must have: it goes to the audit log


def parse_endpoints(text: str) -> list[Row]:
    """Endpoints, one per line: a URL, then optionally ``ca_bundle=<path>``, ``insecure``
    (https without certificate checks), ``known_hosts=<path>`` or ``insecure_host_key``
    (ssh), e.g. ``https://10.1.2.7 ca_bundle=/etc/rackpilot/idrac-ca.pem``. Blank lines and
    ``#`` comments are skipped; the function validates the rest."""
    out: list[Row] = []
    for n, line in enumerate((text or "").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        tls: dict[str, Any] = {}
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key in ("ca_bundle", "known_hosts") and value:
                tls[key] = value
            elif key in ("insecure", "insecure_host_key") and not value:
                tls[key] = True
            else:
                raise ValidationFailed(
                    f"endpoints line {n}: unknown option {word!r}",
                    [
                        f"endpoints line {n}: use ca_bundle=<path>, insecure, known_hosts=<path> "
                        "or insecure_host_key"
                    ],
                )
        out.append({"url": words[0], "tls": tls})
    return out


class CredentialForm:
    """Seal a credential to the site's executors through ``encrypt-credentials``, naming
    the endpoints it may be presented to. The secret is an argument of ``submit`` only: it
    is never an attribute, never returned and never part of an error message."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.last_result: Row | None = None

    @staticmethod
    def check(
        site_id: str, name: str, kind: str, username: str, secret: str, endpoints: list[Row] | None = None
    ) -> list[str]:
        problems = []
        if not site_id:
            problems.append("site: choose a site")
        if not (name or "").strip() or len(name) > 128:
            problems.append("name: 1 to 128 characters")
        if kind not in CREDENTIAL_KINDS:
            problems.append(f"kind: one of {', '.join(CREDENTIAL_KINDS)}")
        if not (username or "").strip() or len(username) > 256:
            problems.append("username: 1 to 256 characters")
        if not secret:
            problems.append("secret: enter the password or key")
        elif len(secret) > 4096:
            problems.append("secret: at most 4096 characters")
        if endpoints is not None and not endpoints:
            problems.append("endpoints: name at least one endpoint the secret may be presented to")
        return problems

    def submit(
        self, *, site_id: str, name: str, kind: str, username: str, secret: str, endpoints: list[Row] | str
    ) -> Row:
        eps = parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints or [])
        problems = self.check(site_id, name, kind, username, secret, eps)
        if problems:
            raise ValidationFailed("the credential form is not complete: " + "; ".join(problems), problems)
        res = self.api.seal_credential(
            site_id=site_id,
            name=name.strip(),
            kind=kind,
            username=username.strip(),
            secret=secret,
            endpoints=eps,
        )
        # keep only what the function answered: ids, never the input
        self.last_result = {k: res.get(k) for k in ("credential_set_id", "key_ids", "sealed_to")}
        return self.last_result

    def status(self, site_id: str) -> list[Row]:
        """The site's credential sets (names, kinds, usernames, key ids; never secrets), each
        marked ``stale`` when an active executor key has no envelope yet: re-enter and rotate."""
        return list(self.api.credential_status(site_id).get("credential_sets") or [])

    def rotate(
        self, *, credential_set_id: str, secret: str, endpoints: list[Row] | str, username: str | None = None
    ) -> Row:
        """Re-seal with a new secret (or to new executor keys), naming the endpoints again:
        the one way to move a target to another address or TLS trust."""
        eps = parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints or [])
        if not credential_set_id or not secret or not eps:
            raise ValidationFailed(
                "choose a credential set, enter the secret and its endpoints",
                ["credential_set_id, secret and endpoints are required"],
            )
        res = self.api.reseal_credential(
            credential_set_id=credential_set_id, secret=secret, endpoints=eps, username=username
        )
        self.last_result = {k: res.get(k) for k in ("credential_set_id", "key_ids", "sealed_to")}
        return self.last_result


class ForceResume(Observable):
    """Jobs an admin may force back to pending: paused for any reason, or running with a
    lease that expired (the executor is gone). A reason is required; it is audited."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.candidates: list[Row] = []

    def load(self, now: dt.datetime | None = None) -> list[Row]:
        now = now or dt.datetime.now(dt.UTC)
        rows = self.api.jobs(limit=200, statuses=["paused", "running"])
        self.candidates = [
            r for r in rows if r["status"] == "paused" or ((parse_ts(r.get("lease_expires_at")) or now) < now)
        ]
        self.changed()
        return self.candidates

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": r["id"],
                "job": short_id(r["id"]),
                "type": r["type"],
                "state": r["status"]
                + (f" ({r['pause_reason']})" if r.get("pause_reason") else " (lease expired)"),
                "since": short_ts(r.get("started_at")),
            }
            for r in self.candidates
        ]

    @staticmethod
    def check_reason(reason: str) -> str:
        r = re.sub(r"\s+", " ", reason or "").strip()
        if len(r) < MIN_REASON:
            raise ValidationFailed(
                f"give a reason of at least {MIN_REASON} characters: it is written to the audit log",
                ["reason too short"],
            )
        if len(r) > 2000:
            raise ValidationFailed("the reason has at most 2000 characters", ["reason too long"])
        return r

    def run(self, job_id: str, reason: str) -> Row:
        r = self.check_reason(reason)
        if not job_id:
            raise ValidationFailed("choose a job", ["no job chosen"])
        res = self.api.job_control("force_resume", job_id, reason=r)
        self.load()
        return res


NOTIFICATION_EVENTS = (
    "job_started",
    "job_completed",
    "job_failed",
    "job_cancelled",
    "job_paused",
    "job_slow",
    "window_requested",
    "window_decided",
    "cluster_safety_changed",
)
NOTIFICATION_CHANNELS = ("teams", "email", "webhook")


class NotificationSettings(Observable):
    """Where job and window events go (admin): Teams, e-mail or a webhook."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.settings: list[Row] = []

    def load(self) -> list[Row]:
        self.settings = list(self.api.notification_settings().get("settings") or [])
        self.changed()
        return self.settings

    @staticmethod
    def check(name: str, channel: str, target: str, events: list[str]) -> list[str]:
        problems = []
        if not (name or "").strip():
            problems.append("name: required")
        if channel not in NOTIFICATION_CHANNELS:
            problems.append(f"channel: one of {', '.join(NOTIFICATION_CHANNELS)}")
        elif channel == "email" and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", target or ""):
            problems.append("target: an e-mail address")
        elif channel != "email" and not (target or "").startswith("https://"):
            problems.append("target: an https URL (webhook URLs carry tokens; never plain http)")
        if not events:
            problems.append("events: choose at least one")
        problems += [f"events: unknown event {e!r}" for e in events if e not in NOTIFICATION_EVENTS]
        return problems

    def add(
        self, *, name: str, channel: str, target: str, events: list[str], site_id: str | None = None
    ) -> Row:
        problems = self.check(name, channel, target, list(events))
        if problems:
            raise ValidationFailed("the notification setting is not valid: " + "; ".join(problems), problems)
        setting: dict[str, Any] = {
            "name": name.strip(),
            "channel": channel,
            "target": target.strip(),
            "events": list(events),
        }
        if site_id:
            setting["site_id"] = site_id
        res = self.api.upsert_notification_settings([setting])
        self.load()
        return res

    def delete(self, ids: list[str]) -> Row:
        if not ids:
            raise ValidationFailed("choose at least one setting to delete", ["no setting chosen"])
        res = self.api.delete_notification_settings(list(ids))
        self.load()
        return res

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": s.get("id"),
                "name": s.get("name"),
                "channel": s.get("channel"),
                "target": s.get("target"),
                "events": ", ".join(s.get("events") or []),
                "enabled": s.get("enabled"),
            }
            for s in self.settings
        ]
