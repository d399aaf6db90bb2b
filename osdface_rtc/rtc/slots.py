"""The newest-frame slot between a track's stages, and an events-per-second meter.

:class:`LatestSlot` holds at most one item: a producer never waits and never queues (a newer
item replaces an unread one), a consumer waits for the next item. :class:`RateMeter` counts
events in a sliding window (frames in/out, restorations).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item: ``put`` replaces an unread item, ``get`` waits for one."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._filled = asyncio.Event()
        self._emptied = asyncio.Event()
        self._emptied.set()

    def put(self, item: T) -> bool:
        """Store ``item``; True when an unread item was dropped."""
        dropped = self._full
        self._item, self._full = item, True
        self._emptied.clear()
        self._filled.set()
        return dropped

    def close(self) -> None:
        self._closed = True
        self._filled.set()
        self._emptied.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> T | None:
        """The item, or None once closed and empty."""
        while not self._full:
            if self._closed:
                return None
            self._filled.clear()
            await self._filled.wait()
        item, self._item, self._full = self._item, None, False
        self._emptied.set()
        return item

    async def wait_empty(self) -> None:
        """Until the item is taken (or the slot closed): a producer that should not overwrite."""
        while self._full and not self._closed:
            await self._emptied.wait()


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-6)
        return len(self._times) / span if span >= self.window_s / 2 else (len(self._times) - 1) / max(
            self._times[-1] - self._times[0], 1e-6)
