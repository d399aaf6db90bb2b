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

This module is the aiortc plumbing; what a frame shows is decided by
:class:`~osdface_rtc.pipeline.live.LivePolicy` (wait within the budget, re-warp the last
restoration when late, pass through when nothing fresh is cached), and restore calls run on the
restorer's shared :class:`~.worker.RestoreWorker`. Per stream, all on the newest frame only:

1. A reader task drains ``source.recv()`` into a one-frame slot (:class:`~.slots.LatestSlot`),
   so aiortc's unbounded incoming queue never grows; a frame not yet picked up is replaced by a
   newer one.
2. Stage 1 (a per-track thread) takes the newest frame: scale it down if over ``max_pixels``
   (:mod:`.framecap`), convert, then the policy's detect + align + restoration (waits at most
   until ``arrival + budget_ms``) -> a plan.
3. Stage 2 (a second thread) pastes the plan's faces: frame N+1 is analysed while frame N is
   blended and frame N-1 encoded (one slot between stages, so nothing queues). ``recv()``
   returns the processed frame with the input's ``pts``/``time_base``.

A restorer exception (CUDA OOM included) passes that frame through and counts an error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from ..pipeline.live import LiveConfig, LivePolicy, Outcome, Plan
from .compare import check_position, compose_split
from .freshness import Freshness
from .slots import LatestSlot, RateMeter
from .framecap import capped_size, scale_frame
from .worker import RestoreWorker, restore_worker_for

__all__ = ["EnhanceTrack", "FrameReport", "Outcome", "TrackConfig", "TrackStats"]

log = logging.getLogger(__name__)


@dataclass
class TrackConfig(LiveConfig):
    """The policy's knobs (``budget_ms``, ``max_cache_age_ms``, ``rewarp``) and the track's own."""

    enabled: bool = True  # False: pass frames through (still newest-only)
    #: frame-exact before/after: left of this share of the width the frame as received, right
    #: of it the same frame enhanced (see :mod:`.compare`); None = the enhanced frame only
    compare: float | None = None
    max_pixels: int | None = 1920 * 1080  # larger frames are scaled down first (see .framecap)


@dataclass
class FrameReport:
    """What happened to one sent frame (given to ``on_frame`` callbacks)."""

    outcome: Outcome
    faces: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0  # arrival at the track -> handed to the encoder
    width: int = 0
    height: int = 0
    restores_ms: list[float] = field(default_factory=list)  # restorations finished since last frame
    restored_faces: int = 0  # faces shown with a restoration (on time or re-warped)
    age_ms: float | None = None  # their restoration's source frame -> this frame (0: on time)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)  # also from its string ("enhanced", ...)


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
    frames_downscaled: int = 0  # frames over ``TrackConfig.max_pixels``, scaled down
    faces: int = 0  # faces in the last sent frame
    last_error: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # last frame
    latency_ms: float = 0.0  # last frame, arrival -> encoder
    width: int = 0
    height: int = 0

    @property
    def fallbacks(self) -> int:
        return self.fallback_cached + self.fallback_original


@dataclass
class _Sent:
    """A frame on its way from stage 1 to stage 2 (``plan`` None: send ``frame`` as is)."""

    frame: VideoFrame
    t_arrival: float
    report: FrameReport
    plan: Plan | None = None


def _ema(old: float | None, value: float, alpha: float = 0.2) -> float:
    return value if old is None else (1 - alpha) * old + alpha * value


class EnhanceTrack(MediaStreamTrack):
    """Wrap a video track; ``recv()`` returns its newest frame with faces enhanced in budget.

    ``enhancer=None`` makes a pass-through track (same newest-frame plumbing; the benchmark's
    baseline). The knobs come in ``config`` (a :class:`TrackConfig`); ``budget_ms`` is a
    shortcut for ``config=TrackConfig(budget_ms=...)`` (not both). ``enabled``, ``strength``,
    ``budget_ms`` and ``compare`` can be changed while it runs. ``on_frame(report)`` is called
    on the event loop for every sent frame, ``on_skip()`` for every stale input frame dropped,
    ``on_error(exc)`` for every restorer failure.
    """

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        enhancer: Any | None,
        budget_ms: float | None = None,
        *,
        config: TrackConfig | None = None,
        restore_worker: RestoreWorker | None = None,
        on_frame: Callable[[FrameReport], None] | None = None,
        on_skip: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        close_enhancer: bool = False,
    ):
        super().__init__()
        if budget_ms is not None and config is not None:
            raise TypeError("pass budget_ms inside config, or as an argument without a config -- not both")
        self.source = source
        self.enhancer = enhancer
        self.config = config or TrackConfig()
        if budget_ms is not None:
            self.budget_ms = budget_ms
        self.stats = TrackStats()
        self.freshness = Freshness()
        self.fps_in = RateMeter()
        self.fps_out = RateMeter()
        self.on_frame, self.on_skip, self.on_error = on_frame, on_skip, on_error
        self._close_enhancer = close_enhancer
        self._policy: LivePolicy | None = None
        if enhancer is not None:
            worker = restore_worker or restore_worker_for(enhancer.restorer)
            self._policy = LivePolicy(enhancer, worker.submit, self.config)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="osdface-detect")
        self._blend_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="osdface-blend")
        self._in: LatestSlot[tuple[VideoFrame, float]] = LatestSlot()
        self._mid: LatestSlot[_Sent] = LatestSlot()
        self._out: LatestSlot[_Sent] = LatestSlot()
        self._tasks: list[asyncio.Task] = []
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
        now = time.monotonic()
        item.report.latency_ms = (now - item.t_arrival) * 1e3
        self._account(item.report, now)
        return item.frame

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
        if self._policy is not None:
            self._policy.forget()
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
        loop = asyncio.get_running_loop()
        if self._policy is not None:
            def restore_done(elapsed_ms: float, exc: BaseException | None) -> None:  # worker thread
                try:
                    loop.call_soon_threadsafe(self._restore_done, elapsed_ms, exc)
                except RuntimeError:  # loop closed: the track is gone
                    pass

            self._policy.on_restore_done = restore_done
        self._tasks = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._process_loop()),
            asyncio.ensure_future(self._blend_loop()),
        ]

    def _account(self, report: FrameReport, now: float) -> None:
        s = self.stats
        report.restores_ms, self._restores_ms = self._restores_ms, []
        if report.outcome in (Outcome.RESTORED, Outcome.REWARPED, Outcome.PASSTHROUGH):
            report.stages_ms["restore"] = self._policy.last_restore_ms
        s.frames_out += 1
        s.faces = report.faces
        s.stages_ms = report.stages_ms
        s.latency_ms = report.latency_ms
        s.width, s.height = report.width, report.height
        if report.outcome == Outcome.RESTORED:
            s.enhanced += 1
        elif report.outcome == Outcome.REWARPED:
            s.fallback_cached += 1
        elif report.outcome == Outcome.PASSTHROUGH:
            s.fallback_original += 1
        if report.outcome != Outcome.OFF:
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
        """Stage 1: newest input -> the policy's plan (its own thread) -> the slot to stage 2."""
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
                sent = await self._plan(frame, t_arrival)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never break the call
                self._count_error(exc)
                sent = _Sent(frame, t_arrival, FrameReport(Outcome.ERROR, width=frame.width, height=frame.height))
            self._stage1_ema = _ema(self._stage1_ema, time.monotonic() - t0)
            if self._mid.closed:
                return
            self._mid.put(sent)

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
            sent = await self._mid.get()
            if sent is None:
                self._out.close()
                return
            if sent.plan is not None:
                t0 = self._blend_started = time.monotonic()
                try:
                    sent.frame = await loop.run_in_executor(self._blend_executor, self._blend, sent)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._count_error(exc)
                    sent.report.outcome = Outcome.ERROR
                finally:
                    self._blend_started = None
                self._blend_ema = _ema(self._blend_ema, time.monotonic() - t0)
            if self._out.closed:
                return
            self._out.put(sent)

    async def _plan(self, frame: VideoFrame, t_arrival: float) -> _Sent:
        loop = asyncio.get_running_loop()
        capped = capped_size(frame.width, frame.height, self.config.max_pixels)
        if capped is not None:
            frame = await loop.run_in_executor(self._executor, scale_frame, frame, *capped)
            self.stats.frames_downscaled += 1
        size = {"width": frame.width, "height": frame.height}
        if self._policy is None or not self.config.enabled or self.enhancer.strength <= 0.0:
            return _Sent(frame, t_arrival, FrameReport(Outcome.OFF, **size))
        plan = await loop.run_in_executor(self._executor, self._analyze, frame, t_arrival)
        report = FrameReport(plan.outcome, faces=len(plan.faces), stages_ms=plan.stages_ms,
                             restored_faces=plan.restored_faces, age_ms=plan.age_ms, **size)
        return _Sent(frame, t_arrival, report, plan if plan.restoration is not None else None)

    def _analyze(self, frame: VideoFrame, t_arrival: float) -> Plan:
        """Stage-1 thread: convert, then the policy (detect, align, restore within budget)."""
        t0 = time.perf_counter()
        rgb = frame.to_ndarray(format="rgb24", threads=1)  # no per-frame sws thread pool
        convert_ms = (time.perf_counter() - t0) * 1e3
        t = float(frame.time) if frame.pts is not None and frame.time_base is not None else None
        plan = self._policy.analyze(rgb, t, t_arrival)
        plan.stages_ms = {"convert": convert_ms, **plan.stages_ms}
        return plan

    def _blend(self, sent: _Sent) -> VideoFrame:
        """Stage-2 thread: paste faces, back to a yuv420p frame with the input's timestamps."""
        t0 = time.perf_counter()
        rgb = sent.plan.rgb
        out = self._policy.paste(sent.plan)
        split = self.config.compare
        if split is not None and out.shape == rgb.shape:
            out = compose_split(rgb, out, split)
        vf = VideoFrame.from_ndarray(out, format="rgb24").reformat(format="yuv420p", threads=1)
        vf.pts, vf.time_base = sent.frame.pts, sent.frame.time_base
        sent.report.stages_ms["blend"] = (time.perf_counter() - t0) * 1e3
        return vf

    def _restore_done(self, elapsed_ms: float, exc: BaseException | None) -> None:
        """Event loop: one restoration of this track finished (on time or not)."""
        self._restores_ms.append(elapsed_ms)
        if exc is not None:
            self._count_error(exc)
        else:
            self.freshness.restored()

    def _count_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.errors <= 3 or self.stats.errors % 100 == 0:
            log.warning("enhancement failed (%d so far), frame passed through: %s",
                        self.stats.errors, self.stats.last_error)
        if self.on_error is not None:
            self.on_error(exc)
