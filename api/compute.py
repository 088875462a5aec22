"""Estimates run off the event loop: in worker threads, at most `max_concurrent` at once, each within a time
budget, so that one slow request never holds /healthz or the other requests (issue: a 1,024-layer config once
held the single event loop for seconds)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool


class Busy(Exception):
    """No compute slot came free within the request's time budget (HTTP 503)."""


class OverBudget(Exception):
    """The computation ran past the request's time budget (HTTP 504); its thread finishes on its own."""


class Compute:
    def __init__(self, max_concurrent: int, timeout_s: float):
        self.timeout_s = timeout_s
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None  # made in the serving loop: waiters queue in arrival order

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in a worker thread. A slot is taken before the thread starts and given back when the thread
        ends (from the thread, through the loop), so an abandoned computation still counts against the bound
        until it stops."""
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        slots = self._slots
        deadline = loop.time() + self.timeout_s
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy() from None

        def held() -> Any:
            try:
                return fn(*args)
            finally:
                loop.call_soon_threadsafe(slots.release)

        task = asyncio.ensure_future(run_in_threadpool(held))
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the late result is dropped
            raise OverBudget() from None
