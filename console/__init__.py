"""rackpilot operator console: the Python behind the notebooks in ``notebooks/``.

Layers, so that everything but the drawing is testable without a browser:
- ``session``: sign-in with email/password through supabase-py, token refresh;
- ``api``: thin typed calls to the edge functions and REST reads;
- ``models``: state machines and view models (plain Python, no ipywidgets);
- ``widgets``: ipywidgets views over the models, one module per screen.

A notebook needs only ``import console`` and ``con = console.connect()``.
"""

from __future__ import annotations

from console.errors import (
    AccessDenied,
    ConfigError,
    Conflict,
    ConsoleError,
    InvalidRequest,
    NotFound,
    NotSignedIn,
    ServiceUnavailable,
    SignInError,
    ValidationFailed,
)
from console.session import ConsoleConfig, Session, sign_in, sign_in_from_env

__all__ = [
    "AccessDenied",
    "ConfigError",
    "Conflict",
    "ConsoleConfig",
    "ConsoleError",
    "InvalidRequest",
    "NotFound",
    "NotSignedIn",
    "ServiceUnavailable",
    "Session",
    "SignInError",
    "ValidationFailed",
    "app",
    "connect",
    "job",
    "sign_in",
    "sign_in_from_env",
]


def connect(**kwargs):
    """The notebook entry point: signs in from the environment when demo credentials are
    set, otherwise shows a sign-in form. See ``console.widgets.app.Console``."""
    from console.widgets.app import Console

    return Console.start(**kwargs)


def job(job_id: str | None = None):
    """The live monitor of a job (whole id or its 8-character short id; the newest job when
    None), on this kernel's console (``connect()`` first, or the shared sign-in is used)."""
    from console.widgets.app import current

    return current().job(job_id)


def app(start: str | None = None):
    """The whole console on one page (navigation, sign-in, every screen your role may open)."""
    from console.widgets.app import current

    return current().app(start)
