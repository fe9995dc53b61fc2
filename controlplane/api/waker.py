"""Wakes long polls held by this API replica when a node's desired state changes.

One Redis subscription per replica fans out to the asyncio events of the polls it holds, so a
replica holding thousands of polls uses one connection, and a change committed by any process
(scheduler, worker, another replica) reaches the agent in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class Waker:
    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def register(self, node_id: str) -> asyncio.Event:
        event = asyncio.Event()
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

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-waker")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def stop(self) -> None:
        # Held long polls answer now with the current state instead of being cut off mid-request.
        self._wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._ready.set()
                    # Wakes missed while (re)connecting: every poll re-reads its generation.
                    self._wake_all()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                log.warning("node wake-up subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()
