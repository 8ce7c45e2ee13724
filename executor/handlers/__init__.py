"""Job handlers by job type.

A handler module registers its class with :func:`register`; the runner advertises the
registered types as the executor's capabilities and looks handlers up by ``jobs.type``.
Which module handles which type is declared with the type (``handler`` in
:mod:`executor.jobtypes`); :data:`BUILTIN_MODULES` is made from those declarations.

``selftest`` is a test-only handler (it writes files on the executor host). It is no part
of the product: the harness declares it (``devstack/testing/selftest.py``) under the
entry-point group :data:`TEST_HANDLER_GROUP` in ``pyproject.toml``, and it is loaded,
registered and advertised only when the executor is started with
``RACKPILOT_ENABLE_SELFTEST=true`` (``enable_selftest`` in :mod:`executor.config`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from .. import ExecutorError
from ..jobtypes import REGISTRY
from ..steps import JobHandler
from ..vocabulary import TEST_ONLY_JOB_TYPES

_REGISTRY: dict[str, type[JobHandler]] = {}

#: modules imported by :func:`load_builtin` (each job type's declared handler module); a
#: missing optional module is skipped
BUILTIN_MODULES = tuple(f"{__name__}.{s.handler}" for s in REGISTRY.values() if s.handler is not None)

#: job types only an executor started with ``enable_selftest`` takes
TEST_ONLY_TYPES = frozenset(t.value for t in TEST_ONLY_JOB_TYPES)

#: entry-point group of the test-only handlers; loaded only with ``enable_selftest``
TEST_HANDLER_GROUP = "rackpilot.test_handlers"


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


def unavailable(job_type: str, settings: Any = None) -> str | None:
    """Why this executor cannot run ``job_type`` (a handler's ``unavailable(settings)``
    classmethod names a missing prerequisite), or None when it can."""
    check = getattr(get(job_type), "unavailable", None)
    return check(settings) if check is not None else None


def create(job_type: str, settings: Any = None) -> JobHandler:
    """A handler instance for ``job_type``; a class with ``from_settings`` is built from the
    executor's settings (``selftest`` confines its files to the state folder that way)."""
    cls = get(job_type)
    factory = getattr(cls, "from_settings", None)
    return factory(settings) if factory is not None else cls()


def load_builtin(modules: tuple[str, ...] = BUILTIN_MODULES, *, enable_selftest: bool = False) -> list[str]:
    """Import the handler modules and return the job types this executor takes: every
    registered type, but the test-only ones only with ``enable_selftest``."""
    if enable_selftest:
        _load_test_handlers()
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise ExecutorError(f"handler module {name} cannot be imported: {exc}") from exc
        except ImportError as exc:
            raise ExecutorError(f"handler module {name} cannot be imported: {exc}") from exc
    return [t for t in job_types() if enable_selftest or t not in TEST_ONLY_TYPES]


def _load_test_handlers() -> None:
    """Register the handlers declared under :data:`TEST_HANDLER_GROUP` (the harness's
    ``selftest``). Each must handle a test-only type, so that no installed package can
    replace an operator job's handler this way."""
    found = entry_points(group=TEST_HANDLER_GROUP)
    if not found:
        raise ExecutorError(
            "RACKPILOT_ENABLE_SELFTEST is set, but no test handler is installed (the harness, "
            f"devstack, declares them under the entry-point group {TEST_HANDLER_GROUP}); "
            "unset it on a production executor"
        )
    for ep in found:
        try:
            cls = ep.load()
        except ImportError as exc:
            raise ExecutorError(f"test handler {ep.name} ({ep.value}) cannot be imported: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, JobHandler)) or cls.job_type not in TEST_ONLY_TYPES:
            raise ExecutorError(
                f"entry point {ep.name} ({ep.value}) is not a handler of a test-only job type "
                f"({', '.join(sorted(TEST_ONLY_TYPES))})"
            )
        register(cls)
