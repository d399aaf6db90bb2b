"""EnhanceTrack: an aiortc video track that enhances faces under a latency budget.

Usage in any aiortc app (one ``FaceEnhancer`` per stream, one restorer shared by all)::

    from aiortc import RTCPeerConnection
    from osdface_rtc import EnhanceTrack, FaceEnhancer, load_restorer

    restorer = load_restorer(None, device="auto")        # shipped model, shared
    pc = RTCPeerConnection()

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            enhanced = EnhanceTrack(track, FaceEnhancer(restorer=restorer), budget_ms=25)
            pc.addTrack(enhanced)                        # send the enhanced video back

            @track.on("ended")
            async def on_ended():
                enhanced.stop()

    # ... then setRemoteDescription(offer), createAnswer(), setLocalDescription(answer)

How the budget works (per stream, all on the newest frame only):

1. A reader task drains ``source.recv()`` into a one-frame slot, so aiortc's unbounded
   incoming queue never grows; a frame not yet picked up is replaced by a newer one.
2. A processor task takes the newest frame: detect + align (a per-track worker thread), then
   hands the crops to the restorer's worker thread (shared by all tracks of one restorer,
   faces of concurrent tracks batched), and waits at most until ``arrival + budget_ms`` (not
   at all when recent restorations took more than twice the time left).
3. On time: paste the restored faces. Late: the restoration keeps running; this frame gets the
   last restoration re-warped to its own landmarks (``enh.blend(frame, cached, faces=current,
   original=cached_inputs)``: the restorer's *change* moves with the face, the current mouth
   and eyes stay), or passes through unchanged when nothing fresh (< 1 s) is cached. Each
   track has at most one restoration in flight, so no queue grows anywhere.
4. Pasting runs in a second thread: frame N+1 is detected while frame N is blended and frame
   N-1 encoded (one slot between stages, so nothing queues). ``recv()`` returns the processed
   frame with the input's ``pts``/``time_base``.

A restorer exception (CUDA OOM included) passes that frame through and counts an error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sys
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generic, TypeVar

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from .compare import check_position, compose_split
from .freshness import Freshness, RateMeter

__all__ = ["EnhanceTrack", "FrameReport", "RateMeter", "RestoreWorker", "TrackConfig", "TrackStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Outcomes of one frame (metrics label values).
OUTCOMES = ("enhanced", "cached", "original", "noface", "off", "error")


@dataclass
class TrackConfig:
    budget_ms: float = 25.0  # longest wait for the restorer, from the frame's arrival
    max_cache_age_ms: float = 1000.0  # older restored faces are not re-used
    #: late frames: "delta" re-warps the last restoration's *change* (restored - its input crop)
    #: to the current landmarks, so the current mouth/eyes stay; "face" re-warps the restored
    #: face itself (``enh.blend(frame, cached, faces=current)``): the old expression is shown
    #: over the current face (kept for comparison and for restorers that replace the face).
    rewarp: str = "delta"
    enabled: bool = True  # False: pass frames through (still newest-only)
    #: frame-exact before/after: left of this share of the width the frame as received, right
    #: of it the same frame enhanced (see :mod:`.compare`); None = the enhanced frame only
    compare: float | None = None

    def __post_init__(self) -> None:
        if self.rewarp not in ("delta", "face"):
            raise ValueError(f"rewarp must be 'delta' or 'face', got {self.rewarp!r}")


@dataclass
class FrameReport:
    """What happened to one sent frame (given to ``on_frame`` callbacks)."""

    outcome: str
    faces: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0  # arrival at the track -> handed to the encoder
    width: int = 0
    height: int = 0
    restores_ms: list[float] = field(default_factory=list)  # restorations finished since last frame
    restored_faces: int = 0  # faces shown with a restoration (on time or re-warped)
    age_ms: float | None = None  # their restoration's source frame -> this frame (0: on time)


@dataclass
class TrackStats:
    """Counters of one track (read by the server's stats messages)."""

    frames_in: int = 0
    frames_out: int = 0
    frames_skipped: int = 0  # stale inputs replaced by a newer frame
    enhanced: int = 0  # restored on time
    fallback_cached: int = 0  # late: last restored faces re-warped
    fallback_original: int = 0  # late, nothing fresh cached: original frame
    errors: int = 0
    faces: int = 0  # faces in the last sent frame
    last_error: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # last frame
    latency_ms: float = 0.0  # last frame, arrival -> encoder
    width: int = 0
    height: int = 0

    @property
    def fallbacks(self) -> int:
        return self.fallback_cached + self.fallback_original


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
        while self._full and not self._closed:
            await self._emptied.wait()


# -- the restorer's worker thread (shared by all tracks using one restorer) -------------------


@dataclass
class _Job:
    enhancer: Any
    aligned: Any
    future: concurrent.futures.Future


class RestoreWorker:
    """One thread running every restore call for one restorer; concurrent jobs are batched.

    Each track keeps at most one job in flight, so the queue is bounded by the number of tracks.
    """

    def __init__(self, restorer: Any, max_batch_faces: int = 16, nice: int = 10):
        self.restorer = restorer
        self.max_batch_faces = max_batch_faces
        self.nice = nice  # the restorer thread yields the CPU to decode/detect/blend/encode
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.calls = 0
        self.batched_calls = 0

    def submit(self, enhancer: Any, aligned: Any) -> concurrent.futures.Future:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="osdface-restore", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(enhancer, aligned, fut))
        return fut

    def close(self) -> None:
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
            # Don't keep the last jobs (enhancer, crops, the future's callbacks into the track)
            # alive while blocked on the queue: a closed call would stay in memory.
            job = jobs = nxt = None  # noqa: F841

    def _execute(self, jobs: list[_Job]) -> None:
        self.calls += 1
        try:
            if len(jobs) == 1:
                results = [jobs[0].enhancer.restore(jobs[0].aligned)]
            else:
                results = self._batched(jobs)
        except BaseException as exc:  # noqa: BLE001 - reported per frame, the stream goes on
            _free_cuda_cache(exc)
            for j in jobs:
                j.future.set_exception(exc)
            return
        for j, r in zip(jobs, results):
            j.future.set_result(r)

    def _batched(self, jobs: list[_Job]) -> list[Any]:
        from ..pipeline.enhancer import restorer_lock
        from ..pipeline.types import AlignedFaces

        self.batched_calls += 1
        crops = np.concatenate([j.aligned.crops for j in jobs])
        with restorer_lock(self.restorer):
            out = self.restorer.restore(crops)
        results, i = [], 0
        for j in jobs:
            k = len(j.aligned)
            results.append(AlignedFaces(crops=out[i:i + k], affines=j.aligned.affines,
                                        track_ids=list(j.aligned.track_ids)))
            i += k
        return results


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
        if entry is not None:
            entry[1].close()  # its restorer is gone: let the thread end
        worker = RestoreWorker(restorer)
        try:
            ref: Any = weakref.ref(restorer)
        except TypeError:
            ref = restorer
        _workers[id(restorer)] = (ref, worker)
        return worker


def _ema(old: float | None, value: float, alpha: float = 0.2) -> float:
    return value if old is None else (1 - alpha) * old + alpha * value


def _retrieve(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


# -- the track ----------------------------------------------------------------------------------


@dataclass
class _Analysis:
    rgb: np.ndarray
    faces: list
    aligned: Any
    generation: int
    stages_ms: dict[str, float]


@dataclass
class _Plan:
    """A frame on its way from stage 1 to stage 2 (``analysis`` None: send ``frame`` as is)."""

    frame: VideoFrame
    t_arrival: float
    report: FrameReport
    analysis: _Analysis | None = None
    restored: Any = None
    rewarp: bool = False


class EnhanceTrack(MediaStreamTrack):
    """Wrap a video track; ``recv()`` returns its newest frame with faces enhanced in budget.

    ``enhancer=None`` makes a pass-through track (same newest-frame plumbing; the benchmark's
    baseline). ``enabled``, ``strength`` and ``budget_ms`` can be changed while it runs.
    ``on_frame(report)`` is called on the event loop for every sent frame, ``on_skip()`` for
    every stale input frame dropped, ``on_error(exc)`` for every restorer failure.
    """

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        enhancer: Any | None,
        budget_ms: float = 25.0,
        *,
        config: TrackConfig | None = None,
        restore_worker: RestoreWorker | None = None,
        on_frame: Callable[[FrameReport], None] | None = None,
        on_skip: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        close_enhancer: bool = False,
    ):
        super().__init__()
        self.source = source
        self.enhancer = enhancer
        self.config = config or TrackConfig(budget_ms=budget_ms)
        self.stats = TrackStats()
        self.freshness = Freshness()
        self.fps_in = RateMeter()
        self.fps_out = RateMeter()
        self.on_frame, self.on_skip, self.on_error = on_frame, on_skip, on_error
        self._close_enhancer = close_enhancer
        self._worker = restore_worker or (restore_worker_for(enhancer.restorer) if enhancer is not None else None)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="osdface-detect")
        self._blend_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="osdface-blend")
        self._in: LatestSlot[tuple[VideoFrame, float]] = LatestSlot()
        self._mid: LatestSlot[_Plan] = LatestSlot()
        self._out: LatestSlot[tuple[VideoFrame, float, FrameReport]] = LatestSlot()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: concurrent.futures.Future | None = None
        self._cache: Any = None
        self._cache_time = 0.0
        self._generation = 0
        self._size: tuple[int, int] | None = None
        self._last_restore_ms = 0.0
        self._restore_ema_ms: float | None = None
        self._stage1_ema: float | None = None  # seconds
        self._blend_ema: float | None = None
        self._blend_started: float | None = None
        self._restores_ms: list[float] = []
        self.last_activity = time.monotonic()

    # -- live settings ----------------------------------------------------------------------
    @property
    def budget_ms(self) -> float:
        return self.config.budget_ms

    @budget_ms.setter
    def budget_ms(self, value: float) -> None:
        self.config.budget_ms = max(0.0, float(value))

    @property
    def enabled(self) -> bool:
        return self.config.enabled and self.enhancer is not None

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.config.enabled = bool(value)

    @property
    def compare(self) -> float | None:
        return self.config.compare

    @compare.setter
    def compare(self, value: float | None) -> None:
        self.config.compare = check_position(value)

    @property
    def strength(self) -> float:
        return float(self.enhancer.strength) if self.enhancer is not None else 0.0

    @strength.setter
    def strength(self, value: float) -> None:
        if self.enhancer is not None:
            self.enhancer.strength = float(value)

    # -- MediaStreamTrack ---------------------------------------------------------------------
    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._start()
        item = await self._out.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        frame, t_arrival, report = item
        now = time.monotonic()
        report.latency_ms = (now - t_arrival) * 1e3
        self._account(report, now)
        return frame

    def stop(self) -> None:
        if self.readyState == "ended":
            return
        super().stop()
        for t in self._tasks:
            t.cancel()
        self._in.close()
        self._mid.close()
        self._out.close()
        self._blend_executor.shutdown(wait=False)
        if self._close_enhancer and self.enhancer is not None and hasattr(self.enhancer, "close"):
            self._executor.submit(self.enhancer.close)  # after any running job (one thread)
        self._executor.shutdown(wait=False)
        # Drop what a stopped track would otherwise keep until the garbage collector runs
        # (frames, restored faces, callbacks into the owner): see Session.close.
        self._cache = self._inflight = None
        self.on_frame = self.on_skip = self.on_error = None

    async def wait_stopped(self) -> None:
        """After :meth:`stop`: wait until the track's tasks have ended (they hold frames)."""
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able stats (the DataChannel ``stats`` message body)."""
        now = time.monotonic()
        d = asdict(self.stats)
        d.update(
            fallbacks=self.stats.fallbacks,
            fps_in=round(self.fps_in.rate(now), 2),
            fps_out=round(self.fps_out.rate(now), 2),
            enabled=self.enabled,
            strength=round(self.strength, 3),
            budget_ms=self.budget_ms,
            compare=self.compare,
            stages_ms={k: round(v, 2) for k, v in self.stats.stages_ms.items()},
            latency_ms=round(self.stats.latency_ms, 2),
        )
        d.update(self.freshness.snapshot(now))
        return d

    # -- internals ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._process_loop()),
            asyncio.ensure_future(self._blend_loop()),
        ]

    def _account(self, report: FrameReport, now: float) -> None:
        s = self.stats
        report.restores_ms, self._restores_ms = self._restores_ms, []
        if report.outcome in ("enhanced", "cached", "original"):
            report.stages_ms["restore"] = self._last_restore_ms
        s.frames_out += 1
        s.faces = report.faces
        s.stages_ms = report.stages_ms
        s.latency_ms = report.latency_ms
        s.width, s.height = report.width, report.height
        if report.outcome == "enhanced":
            s.enhanced += 1
        elif report.outcome == "cached":
            s.fallback_cached += 1
        elif report.outcome == "original":
            s.fallback_original += 1
        if report.outcome != "off":
            self.freshness.shown(report.faces, report.restored_faces, report.age_ms)
        self.fps_out.tick(now)
        if self.on_frame is not None:
            try:
                self.on_frame(report)
            except Exception:  # noqa: BLE001
                log.exception("on_frame callback failed")

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                now = time.monotonic()
                self.last_activity = now
                self.stats.frames_in += 1
                self.fps_in.tick(now)
                if self._in.put((frame, now)):
                    self.stats.frames_skipped += 1
                    if self.on_skip is not None:
                        self.on_skip()
        except MediaStreamError:
            pass
        except Exception:  # noqa: BLE001 - a broken source ends this track, not the process
            log.exception("source track failed")
        finally:
            self._in.close()

    async def _process_loop(self) -> None:
        """Stage 1: newest input -> detect/align -> restoration (budgeted) -> plan for stage 2."""
        while True:
            await self._mid.wait_empty()
            await self._just_in_time()
            item = await self._in.get()
            if item is None:
                self._mid.close()
                return
            frame, t_arrival = item
            t0 = time.monotonic()
            try:
                plan = await self._plan(frame, t_arrival)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never break the call
                self._count_error(exc)
                plan = _Plan(frame, t_arrival, FrameReport("error", width=frame.width, height=frame.height))
            self._stage1_ema = _ema(self._stage1_ema, time.monotonic() - t0)
            if self._mid.closed:
                return
            self._mid.put(plan)

    async def _just_in_time(self) -> None:
        """Start stage 1 so that it ends when stage 2 gets free, not earlier: a frame analysed
        too early would wait for the blend thread and reach the peer older."""
        if self._blend_started is None or self._blend_ema is None or self._stage1_ema is None:
            return
        lead = self._blend_started + self._blend_ema - self._stage1_ema - time.monotonic()
        if lead > 0.002:
            await asyncio.sleep(min(lead, 0.2))

    async def _blend_loop(self) -> None:
        """Stage 2 (own thread, overlaps stage 1 of the next frame): paste faces -> output slot."""
        loop = asyncio.get_running_loop()
        while True:
            await self._out.wait_empty()
            plan = await self._mid.get()
            if plan is None:
                self._out.close()
                return
            out = plan.frame
            if plan.analysis is not None:
                t0 = self._blend_started = time.monotonic()
                try:
                    out = await loop.run_in_executor(self._blend_executor, self._blend, plan)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._count_error(exc)
                    plan.report.outcome, out = "error", plan.frame
                finally:
                    self._blend_started = None
                self._blend_ema = _ema(self._blend_ema, time.monotonic() - t0)
            if self._out.closed:
                return
            self._out.put((out, plan.t_arrival, plan.report))

    async def _plan(self, frame: VideoFrame, t_arrival: float) -> "_Plan":
        enh = self.enhancer
        if enh is None or not self.config.enabled or enh.strength <= 0.0:
            return _Plan(frame, t_arrival, FrameReport("off", width=frame.width, height=frame.height))
        loop = asyncio.get_running_loop()
        deadline = t_arrival + self.config.budget_ms / 1e3
        free = self._inflight is None or self._inflight.done()  # align only for a new restoration
        a: _Analysis = await loop.run_in_executor(self._executor, self._analyze, frame, free)
        report = FrameReport("noface", faces=len(a.faces), stages_ms=a.stages_ms,
                             width=frame.width, height=frame.height)
        plan = _Plan(frame, t_arrival, report)
        if not a.faces:
            return plan

        mine = self._submit(a, t_arrival) if a.aligned is not None else None
        if mine is not None:
            t0 = time.monotonic()
            remaining = deadline - t0
            # A restorer that recently took far longer than what is left of the budget will not
            # make it this time either: don't wait at all (saves latency on slow CPU models).
            hopeless = self._restore_ema_ms is not None and self._restore_ema_ms > 2e3 * remaining
            if remaining > 0 and not hopeless and not mine.done():
                waiter = asyncio.wrap_future(mine, loop=loop)
                waiter.add_done_callback(_retrieve)  # errors are counted by the done callback
                await asyncio.wait([waiter], timeout=remaining)
            report.stages_ms["wait"] = (time.monotonic() - t0) * 1e3
            if mine.done() and not mine.cancelled():
                if mine.exception() is not None:
                    report.outcome = "error"  # counted once, by the done callback
                    return plan
                restored = mine.result()
                self._set_cache(a.generation, restored, a.aligned, t_arrival)
                report.outcome, plan.analysis, plan.restored = "enhanced", a, restored
                report.restored_faces, report.age_ms = len(restored), 0.0
                return plan
        cache = self._cached_for(a)
        if cache is None:
            report.outcome = "original"
            return plan
        cached, original, t_source = cache
        report.outcome, plan.analysis, plan.restored, plan.rewarp = "cached", a, (cached, original), True
        report.restored_faces, report.age_ms = len(cached), (t_arrival - t_source) * 1e3
        return plan

    def _analyze(self, frame: VideoFrame, align: bool) -> _Analysis:
        """Worker thread: convert, (reset on a new resolution), detect + smooth, align."""
        enh = self.enhancer
        t0 = time.perf_counter()
        rgb = frame.to_ndarray(format="rgb24", threads=1)  # no per-frame sws thread pool
        t1 = time.perf_counter()
        size = rgb.shape[:2]
        if size != self._size:
            if self._size is not None:
                log.info("resolution changed %s -> %s: tracker reset", self._size, size)
            enh.reset()
            self._size = size
            self._generation += 1
            self._cache = None
        t = float(frame.time) if frame.pts is not None and frame.time_base is not None else None
        faces = enh.detect(rgb, t)
        t2 = time.perf_counter()
        aligned = enh.align(rgb, faces) if faces and align else None
        t3 = time.perf_counter()
        stages = {"convert": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "align": (t3 - t2) * 1e3}
        return _Analysis(rgb, faces, aligned, self._generation, stages)

    def _blend(self, plan: "_Plan") -> VideoFrame:
        """Blend thread: paste faces, back to a yuv420p frame with the input's timestamps."""
        frame, a, restored, report = plan.frame, plan.analysis, plan.restored, plan.report
        t0 = time.perf_counter()
        if plan.rewarp:
            cached, original = restored
            if self.config.rewarp == "face":
                original = None
            out = self.enhancer.blend(a.rgb, cached, faces=a.faces, original=original)
        else:
            out = self.enhancer.blend(a.rgb, restored, original=a.aligned)
        split = self.config.compare
        if split is not None and out.shape == a.rgb.shape:
            out = compose_split(a.rgb, out, split)
        vf = VideoFrame.from_ndarray(out, format="rgb24").reformat(format="yuv420p", threads=1)
        vf.pts, vf.time_base = frame.pts, frame.time_base
        report.stages_ms["blend"] = (time.perf_counter() - t0) * 1e3
        return vf

    def _submit(self, a: _Analysis, t_source: float) -> concurrent.futures.Future:
        t_submit = time.monotonic()
        fut = self._worker.submit(self.enhancer, a.aligned)
        self._inflight = fut
        loop = self._loop

        def done(f: concurrent.futures.Future) -> None:  # worker thread
            elapsed = (time.monotonic() - t_submit) * 1e3
            try:
                loop.call_soon_threadsafe(self._restore_done, f, a.generation, a.aligned, elapsed, t_source)
            except RuntimeError:  # loop closed: the track is gone
                pass

        fut.add_done_callback(done)
        return fut

    def _restore_done(self, fut: concurrent.futures.Future, generation: int, aligned: Any,
                      elapsed_ms: float, t_source: float) -> None:
        if self._inflight is fut:
            self._inflight = None
        if fut.cancelled():
            return
        self._last_restore_ms = elapsed_ms
        self._restores_ms.append(elapsed_ms)
        ema = self._restore_ema_ms
        self._restore_ema_ms = elapsed_ms if ema is None else 0.8 * ema + 0.2 * elapsed_ms
        exc = fut.exception()
        if exc is not None:
            self._count_error(exc)
        else:
            self.freshness.restored()
            self._set_cache(generation, fut.result(), aligned, t_source)

    def _set_cache(self, generation: int, restored: Any, aligned: Any, t_source: float) -> None:
        """Keep the newest restoration (by its source frame's arrival) with its input crops."""
        if generation == self._generation and len(restored):
            if self._cache is None or t_source >= self._cache[2]:
                self._cache, self._cache_time = (restored, aligned, t_source), time.monotonic()

    def _cached_for(self, a: _Analysis) -> tuple[Any, Any, float] | None:
        """The last restoration, its input crops (for the faces still present, in the order of
        ``a.faces``) and its source frame's arrival time; None when stale, from another
        resolution or of other faces."""
        if self._cache is None or a.generation != self._generation:
            return None
        if (time.monotonic() - self._cache_time) * 1e3 > self.config.max_cache_age_ms:
            return None
        from ..pipeline.types import AlignedFaces

        restored, original, t_source = self._cache
        pos = {tid: i for i, tid in enumerate(restored.track_ids)}
        ids = [f.track_id for f in a.faces if f.track_id in pos]
        if not ids:
            return None
        idx = [pos[t] for t in ids]
        pick = lambda af: AlignedFaces(crops=af.crops[idx], affines=af.affines[idx], track_ids=ids)  # noqa: E731
        return pick(restored), pick(original), t_source

    def _count_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.errors <= 3 or self.stats.errors % 100 == 0:
            log.warning("enhancement failed (%d so far), frame passed through: %s",
                        self.stats.errors, self.stats.last_error)
        if self.on_error is not None:
            self.on_error(exc)
