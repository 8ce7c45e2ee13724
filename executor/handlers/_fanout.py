"""Many synchronous target calls at once from one step: the fleet reads and probes.

sushy and the discovery probes are synchronous and wait on sockets, so each call runs in a
worker thread; the step follows them through ``ctx.wait_for`` with the number done as its
progress marker, so a fleet that stops answering is a stall, not a hang.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..steps import Progress, StepContext
from ..targets.errors import TargetError
from ._dell import wait

T = TypeVar("T")
R = TypeVar("R")


async def in_threads(
    ctx: StepContext,
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    max_workers: int,
    name: str,
    what: str,
    budget: float,
    on_stall: Callable[[str], TargetError],
) -> list[R]:
    """``fn(item)`` for each of ``items``, at most ``max_workers`` at once in threads named
    ``name``, each in a copy of this step's context (the BMC call log names the job and step);
    the results in the order of ``items``. ``what``, ``budget`` and ``on_stall`` go to
    :func:`wait`. On the way out (done, stalled or cancelled) calls already running finish,
    and so delete their sessions; queued ones are dropped."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
    futures = [loop.run_in_executor(pool, contextvars.copy_context().run, fn, item) for item in items]
    try:

        async def progress() -> Progress:
            done = sum(1 for f in futures if f.done())
            return Progress(done == len(futures), done, {"of": len(futures)})

        await wait(ctx, progress, what=what, budget=budget, on_stall=on_stall)
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
