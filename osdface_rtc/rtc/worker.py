"""The restore worker: the one place calls into a restorer are serialised.

One :class:`RestoreWorker` (one thread) per restorer object, shared by every track that uses it
(:func:`restore_worker_for`). Jobs that queue while the restorer is busy -- faces of concurrent
calls -- go into one batched ``restorer.restore`` call (up to ``max_batch_faces``). Each track
keeps at most one job in flight, so the queue is bounded by the number of tracks. The thread
runs at a raised nice value (on a CPU-only box video gets the cycles first), and a failed call
(CUDA OOM included) frees the CUDA cache and fails the futures of that call only.
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pipeline.types import AlignedFaces

__all__ = ["RestoreWorker", "restore_worker_for"]


@dataclass
class _Job:
    aligned: AlignedFaces
    future: concurrent.futures.Future


class RestoreWorker:
    """One thread running every restore call for one restorer; concurrent jobs are batched."""

    def __init__(self, restorer: Any, max_batch_faces: int = 16, nice: int = 10):
        self.restorer = restorer
        self.max_batch_faces = max_batch_faces
        self.nice = nice  # the restorer thread yields the CPU to decode/detect/blend/encode
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.calls = 0
        self.batched_calls = 0

    def submit(self, aligned: AlignedFaces) -> concurrent.futures.Future:
        """Restore these crops; the future's result is an ``AlignedFaces`` with the same rows."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="osdface-restore", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(aligned, fut))
        return fut

    def close(self) -> None:
        """End the thread after the queued jobs."""
        self._queue.put(None)

    def _run(self) -> None:
        _lower_thread_priority(self.nice)
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, n = [job], len(job.aligned)
            while n < self.max_batch_faces:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                n += len(nxt.aligned)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if jobs:
                self._execute(jobs)
            # Don't keep the last jobs (crops, the future's callbacks into the track) alive
            # while blocked on the queue: a closed call would stay in memory.
            job = jobs = nxt = None  # noqa: F841

    def _execute(self, jobs: list[_Job]) -> None:
        self.calls += 1
        if len(jobs) > 1:
            self.batched_calls += 1
        try:
            crops = jobs[0].aligned.crops if len(jobs) == 1 else np.concatenate([j.aligned.crops for j in jobs])
            out = self.restorer.restore(crops)
        except BaseException as exc:  # noqa: BLE001 - reported per frame, the stream goes on
            _free_cuda_cache(exc)
            for j in jobs:
                j.future.set_exception(exc)
            return
        i = 0
        for j in jobs:
            k = len(j.aligned)
            j.future.set_result(AlignedFaces(crops=out[i:i + k], affines=j.aligned.affines,
                                             track_ids=list(j.aligned.track_ids)))
            i += k


def _lower_thread_priority(nice: int) -> None:
    """Raise this thread's nice value (Linux: per thread). On a CPU-only box the restorer then
    only gets the cycles video does not need, so a slow model cannot stall the stream."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted / not Linux
        pass


def _free_cuda_cache(exc: BaseException) -> None:
    torch = sys.modules.get("torch")  # never import torch here (slow): only if a model uses it
    if torch is not None and "out of memory" in str(exc).lower():
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


_workers: dict[int, tuple[weakref.ref | Any, RestoreWorker]] = {}
_workers_lock = threading.Lock()


def restore_worker_for(restorer: Any) -> RestoreWorker:
    """The shared :class:`RestoreWorker` of this restorer object (created on first use)."""
    with _workers_lock:
        entry = _workers.get(id(restorer))
        if entry is not None:
            ref, worker = entry
            alive = ref() if isinstance(ref, weakref.ref) else ref
            if alive is restorer:
                return worker
            worker.close()  # its restorer is gone: let the thread end
        worker = RestoreWorker(restorer)
        try:
            ref: Any = weakref.ref(restorer)
        except TypeError:
            ref = restorer
        _workers[id(restorer)] = (ref, worker)
        return worker
