"""``directory_sync``: the site's directory group membership -> rackpilot roles.

A scheduled job (the site's default schedule "directory sync", hourly: the sync period) or
one an operator creates. The executor binds with the site's sealed ``ldap`` credential set,
reads the members of every mapped group (``directory_group_roles``; nested groups followed,
disabled accounts and deleted entries left out) and sends the complete member -> groups map
to ``idm_apply_sync``, which sets each directory user's role from the mapping and takes a
lost role away with the user's sessions and refresh tokens (docs/identity.md).

Where to connect, how to read the directory and which credential set to bind with are the
executor's own ``RACKPILOT_IDM_*`` settings (the identity agent's, from the same
environment or env file), never the job's params: nobody who can create a job can send the
bind password to another server. A read error fails the job and changes nothing (a partial
map would take roles away wrongly); the next occurrence tries again.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..jobparams import DirectorySyncParams, JobParamsError
from ..jobtypes import parse_params
from ..steps import JobHandler, StepContext, step
from ..vocabulary import JobType
from . import register


class DirectorySyncError(Exception):
    """The sync cannot run on this executor (no directory settings, wrong site)."""


def _params(job: dict[str, Any]) -> DirectorySyncParams:
    try:
        parsed = parse_params("directory_sync", job.get("params") or {})
    except JobParamsError as exc:
        raise DirectorySyncError(str(exc)) from None
    assert isinstance(parsed, DirectorySyncParams)
    return parsed


def _identity_settings(settings: Any) -> Any:
    from ..identity import IdentitySettings

    env_file = getattr(settings, "_env_file_path", None) if settings is not None else None
    try:
        if env_file is not None:
            return IdentitySettings(_env_file=str(env_file))  # type: ignore[call-arg]
        return IdentitySettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        names = ", ".join(
            "RACKPILOT_IDM_" + ".".join(str(x) for x in e["loc"]).upper() if e["loc"] else str(e["msg"])
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise DirectorySyncError(
            f"this executor has no usable directory settings ({names}): set RACKPILOT_IDM_URIS and "
            "the others of docs/identity.md in its environment or env file"
        ) from None


@register
class DirectorySyncHandler(JobHandler):
    job_type = JobType.DIRECTORY_SYNC

    def __init__(self, settings: Any = None):
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Any) -> DirectorySyncHandler:
        return cls(settings)

    @classmethod
    def unavailable(cls, settings: Any) -> str | None:
        """An executor without usable directory settings does not take these jobs (one that
        has them, at the same site, does)."""
        try:
            _identity_settings(settings)
        except DirectorySyncError as exc:
            return str(exc)
        return None

    def validate(self, job: dict[str, Any]) -> None:
        _params(job)

    @step(100, resumable=True)  # idempotent: a rerun reads and applies the whole map again
    async def sync(self, ctx: StepContext) -> dict[str, Any]:
        from ..identity import sync_directory

        p = _params(ctx.job)
        if str(p.site_id) != str(ctx.job.get("site_id")):
            raise DirectorySyncError(f"site {p.site_id} is not the job's site")
        idm = _identity_settings(self.settings)
        runner = getattr(ctx.session, "runner", None)
        if runner is None:
            raise DirectorySyncError("this job session has no control-plane client")
        counts = await sync_directory(runner.control, runner.keys, runner.executor_id, str(p.site_id), idm)
        ctx.checkpoint["sync"] = counts  # the job's result carries the counts
        return counts
