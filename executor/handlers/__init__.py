"""Job handlers by job type.

A handler module registers its class with :func:`register`; the runner advertises the
registered types as the executor's capabilities and looks handlers up by ``jobs.type``.
"""

from __future__ import annotations

import importlib

from .. import ExecutorError
from ..steps import JobHandler

_REGISTRY: dict[str, type[JobHandler]] = {}

#: modules imported by :func:`load_builtin`; a missing optional module is skipped
BUILTIN_MODULES = ("executor.handlers.selftest", "executor.handlers.vcenter_sync",
                   "executor.handlers.rolling_update", "executor.handlers.esxi_upgrade",
                   "executor.handlers.power", "executor.handlers.virtual_media", "executor.handlers.scp_backup",
                   "executor.handlers.firmware", "executor.handlers.ome", "executor.handlers.inventory")


class UnknownJobType(ExecutorError):
    """No handler is registered for the job's type."""


def register(cls: type[JobHandler]) -> type[JobHandler]:
    if not cls.job_type:
        raise ExecutorError(f"{cls.__name__} has no job_type")
    existing = _REGISTRY.get(cls.job_type)
    if existing is not None and existing is not cls:
        raise ExecutorError(f"job type {cls.job_type} already handled by {existing.__name__}")
    _REGISTRY[cls.job_type] = cls
    return cls


def get(job_type: str) -> type[JobHandler]:
    try:
        return _REGISTRY[job_type]
    except KeyError:
        raise UnknownJobType(f"this executor has no handler for job type {job_type!r}") from None


def job_types() -> list[str]:
    return sorted(_REGISTRY)


def load_builtin(modules: tuple[str, ...] = BUILTIN_MODULES) -> list[str]:
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise ExecutorError(f"handler module {name} cannot be imported: {exc}") from exc
        except ImportError as exc:
            raise ExecutorError(f"handler module {name} cannot be imported: {exc}") from exc
    return job_types()
