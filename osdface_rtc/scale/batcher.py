"""Deadline-aware batching of restore requests from many clients, with back-pressure.

One :class:`DeadlineBatcher` per pool replica. Requests (each a few aligned crops of one frame
of one call) queue on an asyncio loop; one batch at a time runs in a worker thread. A batch is
closed when it holds ``max_batch_faces`` faces, or when waiting longer would cost more than it
saves: the wait after the first request is at most ``max_wait_ms`` and never runs past the
earliest request's budget minus the expected compute time (a frame whose budget is nearly spent
is not held back for company). Requests that pile up while a batch computes join the next batch
without any extra wait.

Back-pressure: a request that would push the queue past ``max_queued_faces`` is refused at once
(:class:`PoolBusy`), and a request that waited longer than ``max_age_ms`` is answered "expired"
instead of computed (its caller has long since fallen back). Either way the media server gets a
fast answer and falls back (re-warp / pass-through); nothing queues without bound.

This module has no Ray dependency, so it is unit-tested on its own.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..pipeline.live import LiveConfig
from ..restore.protocol import PoolBusy


@dataclass
class BatcherConfig:
    max_batch_faces: int = 16  # faces per forward pass
    max_wait_ms: float = 4.0  # longest wait for company after the first request of a batch
    max_queued_faces: int = 48  # more queued faces: refuse new requests at once
    max_age_ms: float = 1000.0  # a request older than this when its batch starts is expired
    default_budget_ms: float = LiveConfig().budget_ms  # when a request carries no budget (the live default)


@dataclass
class _Request:
    crops: np.ndarray
    client: str
    t_arrival: float
    deadline: float  # monotonic; the caller stops waiting at this time
    future: asyncio.Future


@dataclass
class BatcherStats:
    requests: int = 0
    faces: int = 0
    batches: int = 0
    refused_full: int = 0
    expired: int = 0
    errors: int = 0
    batch_faces: Counter = field(default_factory=Counter)  # faces per batch -> count
    batch_requests: Counter = field(default_factory=Counter)  # requests per batch -> count
    mixed_batches: int = 0  # batches holding crops of more than one client
    clients: Counter = field(default_factory=Counter)  # client -> requests
    compute_ms_ema: float | None = None
    wait_ms_sum: float = 0.0  # queueing + batching wait, summed over requests

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "faces": self.faces, "batches": self.batches,
            "refused_full": self.refused_full, "expired": self.expired, "errors": self.errors,
            "batch_faces": {str(k): v for k, v in sorted(self.batch_faces.items())},
            "batch_requests": {str(k): v for k, v in sorted(self.batch_requests.items())},
            "mixed_batches": self.mixed_batches,
            "clients": dict(self.clients),
            "compute_ms_ema": None if self.compute_ms_ema is None else round(self.compute_ms_ema, 2),
            "mean_wait_ms": round(self.wait_ms_sum / max(1, self.requests - self.refused_full), 2),
        }


class DeadlineBatcher:
    """Batch ``restore_fn(N x S x S x 3 uint8) -> same`` calls across concurrent requests.

    ``await batcher.submit(crops, budget_ms, client)`` returns the restored crops, or raises
    :class:`PoolBusy` (refused / expired) or whatever ``restore_fn`` raised. Must be used from
    one event loop; ``restore_fn`` runs in a single worker thread (one batch at a time).
    """

    def __init__(self, restore_fn: Callable[[np.ndarray], np.ndarray], config: BatcherConfig | None = None):
        self.restore_fn = restore_fn
        self.config = config or BatcherConfig()
        self.stats = BatcherStats()
        self._queue: list[_Request] = []
        self._queued_faces = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="osdface-pool")

    # -- public --------------------------------------------------------------------------------
    async def submit(self, crops: np.ndarray, budget_ms: float | None = None, client: str = "?") -> np.ndarray:
        c = self.config
        n = len(crops)
        self.stats.requests += 1
        self.stats.clients[client] += 1
        if n == 0:
            return crops.copy()
        if self._queued_faces + n > c.max_queued_faces:
            self.stats.refused_full += 1
            raise PoolBusy(f"queue full ({self._queued_faces} faces queued, limit {c.max_queued_faces})")
        self._ensure_loop()
        now = time.monotonic()
        budget = c.default_budget_ms if budget_ms is None else max(0.0, float(budget_ms))
        req = _Request(crops, client, now, now + budget / 1e3, asyncio.get_running_loop().create_future())
        self._queue.append(req)
        self._queued_faces += n
        self._wakeup.set()
        return await req.future

    @property
    def queued_faces(self) -> int:
        return self._queued_faces

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False)

    # -- internals -----------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())

    def _close_time(self) -> float:
        """When the batch being formed must start: first arrival + max wait, but never later
        than the earliest deadline minus the expected compute time."""
        c = self.config
        first = self._queue[0]
        t = first.t_arrival + c.max_wait_ms / 1e3
        compute_s = (self.stats.compute_ms_ema or 0.0) / 1e3
        earliest = min(r.deadline for r in self._queue)
        return min(t, earliest - compute_s)

    async def _run(self) -> None:
        c = self.config
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # wait for company, bounded by the wait limit and the earliest deadline
            while self._queued_faces < c.max_batch_faces:
                left = self._close_time() - time.monotonic()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch, n = self._take()
            if batch:
                await self._execute(batch, n)

    def _take(self) -> tuple[list[_Request], int]:
        c = self.config
        now = time.monotonic()
        batch: list[_Request] = []
        n = 0
        rest: list[_Request] = []
        for r in self._queue:
            k = len(r.crops)
            if r.future.done():  # the caller went away (request cancelled): don't compute it
                self._queued_faces -= k
            elif (now - r.t_arrival) * 1e3 > c.max_age_ms:
                self.stats.expired += 1
                if not r.future.done():
                    r.future.set_exception(PoolBusy(f"expired after {(now - r.t_arrival) * 1e3:.0f} ms in queue"))
                self._queued_faces -= k
            elif not batch or n + k <= c.max_batch_faces:
                batch.append(r)
                n += k
                self._queued_faces -= k
            else:
                rest.append(r)
        self._queue = rest
        return batch, n

    async def _execute(self, batch: list[_Request], n: int) -> None:
        s = self.stats
        t0 = time.monotonic()
        for r in batch:
            s.wait_ms_sum += (t0 - r.t_arrival) * 1e3
        crops = batch[0].crops if len(batch) == 1 else np.concatenate([r.crops for r in batch])
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self._executor, self.restore_fn, crops)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            s.errors += 1
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        ms = (time.monotonic() - t0) * 1e3
        s.compute_ms_ema = ms if s.compute_ms_ema is None else 0.8 * s.compute_ms_ema + 0.2 * ms
        s.batches += 1
        s.faces += n
        s.batch_faces[n] += 1
        s.batch_requests[len(batch)] += 1
        if len({r.client for r in batch}) > 1:
            s.mixed_batches += 1
        i = 0
        for r in batch:
            k = len(r.crops)
            if not r.future.done():
                r.future.set_result(out[i:i + k])
            i += k
