"""Wakes long polls held by this API replica when a node's desired state changes.

One Redis subscription per replica fans out to the asyncio events of the polls it holds, so a
replica holding thousands of polls uses one connection, and a change committed by any process
(scheduler, worker, another replica) reaches the agent in milliseconds.

When the API is asked to stop, ``close_soon`` (called from the server's signal handler) wakes
every held poll and makes new ones answer at once: the polls end with the current desired state
while the server still waits for open requests, instead of being cancelled mid-request when its
graceful-shutdown timeout runs out (see ``controlplane.api.server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class Waker:
    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def closing(self) -> bool:
        """The API is stopping: a long poll answers with what it has instead of waiting."""
        return self._closing

    def register(self, node_id: str) -> asyncio.Event:
        event = asyncio.Event()
        if self._closing:
            event.set()  # nothing will wake it any more: never wait on it
        self._waiters[node_id].add(event)
        return event

    def unregister(self, node_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(node_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[node_id]

    def _wake(self, node_id: str) -> None:
        for event in self._waiters.get(node_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def wait_past(
        self, node_id: str, after: int, *, timeout_s: float, read: Callable[[], Awaitable[int]]
    ) -> None:
        """Return once ``read()`` (the node's generation) passes ``after``, after ``timeout_s``, or
        at once when the API is closing (the poll then answers with what it has, not cut off)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            event = self.register(node_id)  # before reading, so a wake between the two is not lost
            try:
                if await read() > after:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing:
                    return
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except TimeoutError:
                    return
            finally:
                self.unregister(node_id, event)

    def close_soon(self) -> None:
        """Wake every held poll and keep new ones from waiting; safe from a signal handler or thread.

        The events belong to the event loop, so they are set there (``call_soon_threadsafe``),
        never from the caller's frame, which may have interrupted the loop mid-step.
        """
        self._closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="node-waker")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def stop(self) -> None:
        # Held long polls answer now with the current state instead of being cut off mid-request.
        self._closing = True
        self._wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        lost = False
        while True:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._ready.set()
                    if lost:
                        log.info("node wake-up subscription back")
                        lost = False
                    # Wakes missed while (re)connecting: every poll re-reads its generation.
                    self._wake_all()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                # Held polls still answer: each times out and re-reads its generation from SQL.
                if not lost:
                    log.warning("node wake-up subscription lost (%s); reconnecting every second", exc)
                    lost = True
                await asyncio.sleep(1)
            finally:
                await client.aclose()
