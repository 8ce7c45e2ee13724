"""The console's exceptions: one root, one class per failure an operator must tell apart.

Messages are written for the person at the notebook: they say what was refused and why,
in the words the control plane used, and never contain a password, token or secret.
"""

from __future__ import annotations

from typing import Any


class ConsoleError(Exception):
    """Root of every error the console raises."""

    def __init__(
        self, message: str, *, code: str = "error", status: int | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(ConsoleError):
    """SUPABASE_URL / SUPABASE_ANON_KEY (or demo credentials) are missing or malformed."""


class SignInError(ConsoleError):
    """Email/password refused, or the session could not be refreshed."""


class NotSignedIn(ConsoleError):
    """An action needs a signed-in session and there is none (or it was signed out)."""


class AccessDenied(ConsoleError):
    """The signed-in user's role may not do this (HTTP 401/403, RLS 42501)."""


class NotFound(ConsoleError):
    """The row does not exist or is not visible to this user."""


class Conflict(ConsoleError):
    """The request is valid but the current state forbids it (HTTP 409): e.g. a job not
    paused for blockers, an overlapping window, a second rolling update on a cluster."""


class InvalidRequest(ConsoleError):
    """The control plane rejected the request's content (HTTP 400/422)."""


class ValidationFailed(ConsoleError):
    """The console refused the input before sending anything (form validation)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, code="validation_failed", details={"problems": problems or []})
        self.problems = problems or []


class ServiceUnavailable(ConsoleError):
    """The control plane could not be reached or answered 5xx."""
