"""Helpers shared by the identity tests (test_identity.py, test_identity_shapes.py)."""

from __future__ import annotations

import asyncio
import threading

from executor.identity import IdentityAgent


class AgentThread:
    """An identity agent on its own event loop, as `python -m executor.identity` runs it."""

    def __init__(self, agent: IdentityAgent):
        self.agent = agent
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            await self.agent.identify()
            self.ready.set()
            await self.agent.run()

        self.loop.run_until_complete(go())

    def start(self) -> AgentThread:
        self.thread.start()
        assert self.ready.wait(20), "the identity agent did not start"
        return self

    def sync_once(self) -> dict:
        return asyncio.run_coroutine_threadsafe(self.agent.sync_once(), self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.agent.stop.set)
        self.thread.join(10)
