"""The live policy: what one frame of a stream shows when the restorer has a latency budget.

:class:`LivePolicy` wraps one stream's :class:`~.enhancer.FaceEnhancer` (numpy only; the
WebRTC plumbing around it is :class:`osdface_rtc.rtc.track.EnhanceTrack`). For each frame,
:meth:`LivePolicy.analyze` (blocking, one thread per stream) decides:

1. Detect (+ smooth) the faces; align them only when no restoration of this stream is in
   flight, and hand the crops to ``submit`` (a restore service: the restorer's worker thread).
   A stream has at most one restoration in flight, so no queue grows anywhere.
2. Wait for it at most until ``t_arrival + budget_ms`` -- not at all when recent restorations
   took more than twice the time left (a slow CPU model would not make it either).
3. On time: :attr:`Outcome.RESTORED`, the frame gets its own restoration. Late (or a
   restoration already running): the newest restoration still fresh (``max_cache_age_ms``),
   for the faces still present (matched by ``track_id``), is *re-warped* to this frame's
   landmarks, :attr:`Outcome.REWARPED` -- with ``rewarp="delta"`` only its change (restored -
   the crops it was made from) moves with the face, so the current mouth and eyes stay;
   ``"face"`` pastes the old restored face itself (for comparison). Nothing fresh cached:
   :attr:`Outcome.PASSTHROUGH`, the frame as it came. A restorer exception:
   :attr:`Outcome.ERROR`, the frame as it came.

A late restoration keeps running and, when it lands, becomes the cache for the next frames.
:meth:`LivePolicy.paste` (another thread may run it) turns a :class:`Plan` into the frame.
A new frame size resets the face tracker and forgets the cache.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .enhancer import FaceEnhancer
from .types import AlignedFaces, Face

log = logging.getLogger(__name__)

#: A restore service: aligned crops in, a future of the restored crops (same rows) out.
Submit = Callable[[AlignedFaces], concurrent.futures.Future]


class Outcome(str, Enum):
    """What one sent frame shows; the values are the strings of the JSON stats and metrics."""

    RESTORED = "enhanced"  # its own restoration, on time
    REWARPED = "cached"  # late: the last restoration re-warped to its landmarks
    PASSTHROUGH = "original"  # late, nothing fresh cached: the frame as it came
    NO_FACE = "noface"
    OFF = "off"  # enhancement disabled (or strength 0)
    ERROR = "error"  # the restorer (or a stage) failed: the frame as it came

    def __str__(self) -> str:  # the value, on every Python (a metric label, a log line)
        return self.value

    __hash__ = str.__hash__  # a dict keyed by the value finds the member and vice versa


@dataclass
class LiveConfig:
    budget_ms: float = 25.0  # longest wait for the restorer, from the frame's arrival
    max_cache_age_ms: float = 1000.0  # older restorations are not re-used
    #: late frames: "delta" re-warps the last restoration's *change* (restored - its input crop)
    #: to the current landmarks, so the current mouth/eyes stay; "face" re-warps the restored
    #: face itself (the old expression over the current face; kept for comparison and for
    #: restorers that replace the face).
    rewarp: str = "delta"

    def __post_init__(self) -> None:
        if self.rewarp not in ("delta", "face"):
            raise ValueError(f"rewarp must be 'delta' or 'face', got {self.rewarp!r}")


@dataclass
class Restoration:
    """Restored crops with the crops they were made from (row for row, same ``track_ids``)."""

    restored: AlignedFaces
    original: AlignedFaces
    t_source: float  # arrival time of the frame the crops were cut from

    def pick(self, track_ids: list[int]) -> "Restoration":
        """The rows of these faces, in this order (ids it lacks must be left out by the caller)."""
        pos = {tid: i for i, tid in enumerate(self.restored.track_ids)}
        idx = [pos[t] for t in track_ids]
        sub = lambda af: AlignedFaces(af.crops[idx], af.affines[idx], list(track_ids))  # noqa: E731
        return Restoration(sub(self.restored), sub(self.original), self.t_source)


@dataclass
class Plan:
    """One analysed frame and what it will show (``restoration`` None: the frame as it came)."""

    outcome: Outcome
    rgb: np.ndarray
    faces: list[Face] = field(default_factory=list)
    stages_ms: dict[str, float] = field(default_factory=dict)
    restoration: Restoration | None = None
    rewarp: bool = False  # paste ``restoration`` at the current faces' landmarks
    age_ms: float | None = None  # restoration's source frame -> this frame (0: on time)

    @property
    def restored_faces(self) -> int:
        return len(self.restoration.restored) if self.restoration is not None else 0


class LivePolicy:
    """One stream's budget / cache / re-warp decisions (see the module docstring).

    ``on_restore_done(elapsed_ms, exc)`` is called (on the restore service's thread) when any
    restoration of this stream finishes; ``exc`` is None on success.
    """

    def __init__(self, enhancer: FaceEnhancer, submit: Submit, config: LiveConfig | None = None,
                 on_restore_done: Callable[[float, BaseException | None], None] | None = None):
        self.enhancer, self.submit = enhancer, submit
        self.config = config or LiveConfig()  # read on every frame: live changes apply
        self.on_restore_done = on_restore_done
        self.last_restore_ms = 0.0
        self.restore_ema_ms: float | None = None
        self._lock = threading.Lock()  # the cache, set from the restore thread too
        self._cache: Restoration | None = None
        self._cache_time = 0.0
        self._generation = 0
        self._size: tuple[int, int] | None = None
        self._inflight: concurrent.futures.Future | None = None

    def forget(self) -> None:
        """Drop the cache, the running restoration and the callback (the stream has ended)."""
        with self._lock:
            self._cache = self._inflight = None
            self.on_restore_done = None

    # -- stage 1 ------------------------------------------------------------------------------
    def analyze(self, rgb: np.ndarray, t: float | None, t_arrival: float) -> Plan:
        """Detect, align, restore within the budget, decide. Blocks at most until the deadline
        (``t``: the frame's media time in seconds for the smoother; ``t_arrival``: its arrival,
        ``time.monotonic()``)."""
        enh = self.enhancer
        t0 = time.perf_counter()
        self._check_size(rgb.shape[:2])
        generation = self._generation
        faces = enh.detect(rgb, t)
        t1 = time.perf_counter()
        free = self._inflight is None or self._inflight.done()  # align only for a new restoration
        aligned = enh.align(rgb, faces) if faces and free else None
        t2 = time.perf_counter()
        plan = Plan(Outcome.NO_FACE, rgb, faces, {"detect": (t1 - t0) * 1e3, "align": (t2 - t1) * 1e3})
        if not faces:
            return plan
        if aligned is not None:
            mine = self._start(aligned, generation, t_arrival)
            t0 = time.monotonic()
            remaining = t_arrival + self.config.budget_ms / 1e3 - t0
            hopeless = self.restore_ema_ms is not None and self.restore_ema_ms > 2e3 * remaining
            if remaining > 0 and not hopeless:
                concurrent.futures.wait([mine], timeout=remaining)
            plan.stages_ms["wait"] = (time.monotonic() - t0) * 1e3
            if mine.done() and not mine.cancelled():
                if mine.exception() is not None:  # counted by on_restore_done
                    plan.outcome = Outcome.ERROR
                    return plan
                plan.restoration = Restoration(mine.result(), aligned, t_arrival)
                self._keep(generation, plan.restoration)
                plan.outcome, plan.age_ms = Outcome.RESTORED, 0.0
                return plan
        cached = self._cached_for(faces, generation)
        if cached is None:
            plan.outcome = Outcome.PASSTHROUGH
            return plan
        plan.outcome, plan.restoration, plan.rewarp = Outcome.REWARPED, cached, True
        plan.age_ms = (t_arrival - cached.t_source) * 1e3
        return plan

    # -- stage 2 ------------------------------------------------------------------------------
    def paste(self, plan: Plan) -> np.ndarray:
        """The frame ``plan`` shows (RGB, the enhancer's output size)."""
        r = plan.restoration
        if r is None:
            return plan.rgb
        if not plan.rewarp:
            return self.enhancer.blend(plan.rgb, r.restored, original=r.original)
        original = r.original if self.config.rewarp == "delta" else None
        return self.enhancer.blend(plan.rgb, r.restored, faces=plan.faces, original=original)

    # -- internals ----------------------------------------------------------------------------
    def _check_size(self, size: tuple[int, int]) -> None:
        if size != self._size:
            if self._size is not None:
                log.info("resolution changed %s -> %s: tracker reset", self._size, size)
            self.enhancer.reset()
            with self._lock:
                self._size = size
                self._generation += 1
                self._cache = None

    def _start(self, aligned: AlignedFaces, generation: int, t_source: float) -> concurrent.futures.Future:
        t_submit = time.monotonic()
        fut = self.submit(aligned)
        self._inflight = fut

        def done(f: concurrent.futures.Future) -> None:  # the restore service's thread
            elapsed = (time.monotonic() - t_submit) * 1e3
            if self._inflight is f:
                self._inflight = None
            if f.cancelled():
                return
            self.last_restore_ms = elapsed
            ema = self.restore_ema_ms
            self.restore_ema_ms = elapsed if ema is None else 0.8 * ema + 0.2 * elapsed
            exc = f.exception()
            if exc is None:
                self._keep(generation, Restoration(f.result(), aligned, t_source))
            callback = self.on_restore_done
            if callback is not None:
                callback(elapsed, exc)

        fut.add_done_callback(done)
        return fut

    def _keep(self, generation: int, r: Restoration) -> None:
        """Cache the newest restoration (by its source frame's arrival) of the current size."""
        with self._lock:
            if generation == self._generation and len(r.restored):
                if self._cache is None or r.t_source >= self._cache.t_source:
                    self._cache, self._cache_time = r, time.monotonic()

    def _cached_for(self, faces: list[Face], generation: int) -> Restoration | None:
        """The cached restoration of the faces still present (in the order of ``faces``); None
        when stale, from another frame size or of other faces."""
        with self._lock:
            cache, cache_time = self._cache, self._cache_time
            if cache is None or generation != self._generation:
                return None
        if (time.monotonic() - cache_time) * 1e3 > self.config.max_cache_age_ms:
            return None
        have = set(cache.restored.track_ids)
        ids = [f.track_id for f in faces if f.track_id in have]
        return cache.pick(ids) if ids else None
