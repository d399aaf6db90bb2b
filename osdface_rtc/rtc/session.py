"""One WebRTC call: peer connection, EnhanceTrack, control/stats DataChannel, watchdog.

DataChannel protocol (JSON text messages on any channel the peer opens, e.g. ``"control"``;
the schema is in :mod:`osdface_rtc.rtc.messages`: at most 4 KiB, exact JSON types, no unknown
fields, 20 messages/s on average per channel):

client -> server
    ``{"type": "config", "enabled": true, "strength": 0.7, "budget_ms": 25, "compare": 0.5}``
    (any subset; enabled a JSON boolean, strength 0..1, budget_ms 0..1000, ``compare``: split
    position 0..1 of a frame-exact before/after view composed by the server, ``null`` = off)
    -> answered with a stats message
    ``{"type": "ping", "t": <client ms>}`` -> ``{"type": "pong", "t": <echoed>}``
    ``{"type": "stats"}`` -> a stats message now
server -> client
    ``{"type": "hello", "session": id, "codec": "vp8", "budget_ms": 25, "model": name}``
    ``{"type": "stats", "session": id, "fps_in", "fps_out", "latency_ms", "stages_ms": {...},
      "faces", "fallbacks", "fallback_cached", "fallback_original", "errors", "frames_in",
      "frames_out", "frames_skipped", "enhanced", "width", "height", "enabled", "strength",
      "budget_ms", "restores_per_s", "age_p50_ms", "age_p95_ms", "fresh_share", "fresh_ms",
      "unrestored_share", "t": <server ms>}`` every ``stats_interval_s`` (freshness fields:
      :mod:`osdface_rtc.rtc.freshness`)
    ``{"type": "error", "message": reason}`` for a message that was refused (nothing applied);
    over the rate limit, messages are dropped with at most one error per second.

No message, however malformed, ends the call: every event handler is guarded.

Configuration: :class:`SessionConfig` nests the track's (:class:`.track.TrackConfig`: the
budget) and the enhancer's (:class:`osdface_rtc.pipeline.enhancer.EnhancerConfig`: strength,
detector, max faces); each call gets its own copy of both.

Lifetime: a session that is not connected within ``connect_timeout_s`` is closed (an offer that
never connects frees its slot quickly); once connected, ``media_timeout_s`` without a video
frame closes it (DataChannel traffic does not keep a call alive). :meth:`Session.close` releases
everything explicitly (tasks awaited, detector closed, track and peer connection stopped,
callbacks and listeners dropped), so threads and memory come back without the garbage collector.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from ..pipeline.enhancer import EnhancerConfig, FaceEnhancer
from ..pipeline.temporal import TemporalConfig
from .ice import rtc_configuration
from .messages import MAX_MESSAGE_BYTES, MessageError, parse_message
from .metrics import ServerMetrics
from .offer import OfferError, OfferLimits, check_offer_sdp, describe
from .ratelimit import TokenBucket
from .track import EnhanceTrack, FrameReport, TrackConfig

log = logging.getLogger(__name__)

__all__ = ["OfferError", "Session", "SessionConfig", "live_enhancer"]


def live_enhancer() -> EnhancerConfig:
    """A call's enhancer: :class:`EnhancerConfig`'s defaults with the ``auto`` detector (the
    short-range model first, the full-range one only when it finds no face: fast on webcams)
    and no temporal filter: late frames re-warp the last restoration's *change*, which must
    not carry pixels of the older frame it was made from (the filter mixes those in)."""
    return EnhancerConfig(detector="auto", temporal=TemporalConfig(weight=0.0))


@dataclass
class SessionConfig:
    codec: str = "vp8"  # vp8 | h264
    ice_servers: list[str] = field(default_factory=list)
    passthrough: bool = False  # relay frames unchanged (benchmark baseline)
    track: TrackConfig = field(default_factory=TrackConfig)  # the budget (budget_ms), re-warp, ...
    enhancer: EnhancerConfig = field(default_factory=live_enhancer)  # strength, detector, max faces
    connect_timeout_s: float = 6.0  # not connected (ICE + DTLS) within this -> closed
    media_timeout_s: float = 5.0  # connected but no video frame for this long -> closed
    stats_interval_s: float = 0.5
    max_message_bytes: int = MAX_MESSAGE_BYTES
    message_rate: float = 20.0  # DataChannel messages per second per channel, on average
    max_channels: int = 2  # DataChannels per call; more are closed at once
    offer_limits: OfferLimits = field(default_factory=OfferLimits)  # video tracks per call, ...

    @property
    def message_burst(self) -> int:
        """Messages a channel may send at once: two seconds' worth."""
        return max(1, int(2 * self.message_rate))


def _guarded(method: Callable) -> Callable:
    """An event handler that never raises into aiortc (it would end the call): log and go on."""

    @functools.wraps(method)
    def wrapper(self: "Session", *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception:  # noqa: BLE001 - the call must go on
            self.handler_errors += 1
            self._reject("handler")
            log.exception("session %s: %s failed (ignored)", self.id, method.__name__)
            return None

    return wrapper


class Session:
    """A peer connection whose incoming video is sent back enhanced."""

    def __init__(self, sid: str, restorer: Any, config: SessionConfig, metrics: ServerMetrics,
                 on_closed: Callable[["Session"], None] | None = None, model_name: str = ""):
        self.id = sid
        self.restorer = restorer
        self.config = config
        self.metrics = metrics
        self.model_name = model_name
        self._on_closed = on_closed
        self.pc = RTCPeerConnection(configuration=rtc_configuration(config.ice_servers))
        self.track: EnhanceTrack | None = None
        self.enhancer: Any = None
        self.channels: list[Any] = []
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.closed = False
        self.close_reason = ""
        self.handler_errors = 0  # exceptions caught in event handlers (the call went on)
        self.final_stats: dict = {}  # the last stats, kept after close
        self._buckets: dict[int, tuple[TokenBucket, TokenBucket]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._counted_in = 0

    # -- signalling -------------------------------------------------------------------------
    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer ``offer``; raises :class:`OfferError` for offers we cannot serve."""
        check_offer_sdp(offer.sdp, self.config.offer_limits)
        loop = asyncio.get_running_loop()
        if not self.config.passthrough:
            # Built through a list, not returned, by a function that does not hold the session:
            # the executor's work item can outlive the call (kept by a traceback) and must not
            # keep the session or its detector alive.
            built: list[Any] = []
            await loop.run_in_executor(None, functools.partial(
                _build_into, built, FaceEnhancer, restorer=self.restorer, config=replace(self.config.enhancer)))
            self.enhancer = built.pop()
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        pc.on("track", self._on_track)
        try:
            await pc.setRemoteDescription(offer)
        except Exception as exc:  # noqa: BLE001 - aiortc raises several types for bad SDP
            raise OfferError(f"invalid SDP offer: {describe(exc)}") from exc
        if self.track is None:
            raise OfferError("offer has no video track to enhance")
        self._prefer_codec()
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # noqa: BLE001
            raise OfferError(f"cannot answer offer: {describe(exc)}") from exc
        self._spawn(self._watchdog())
        self._spawn(self._stats_loop())
        return pc.localDescription

    def _prefer_codec(self) -> None:
        want = f"video/{self.config.codec}".lower()
        caps = RTCRtpSender.getCapabilities("video").codecs
        prefs = [c for c in caps if c.mimeType.lower() in (want, "video/rtx")]
        for t in self.pc.getTransceivers():
            if t.kind == "video" and t.sender.track is self.track:
                t.setCodecPreferences(prefs)

    # -- events (all guarded: an exception here must not reach aiortc) ------------------------
    @_guarded
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.track is None:
            m = self.metrics
            self.track = EnhanceTrack(
                track, self.enhancer, config=replace(self.config.track),  # a copy: the call changes it
                on_frame=self._on_frame, on_skip=m.frames_skipped.inc,
                on_error=_count_error(m), close_enhancer=True)
            self.pc.addTrack(self.track)
        else:  # audio (or a video over the cap, refused earlier): consume and drop
            self._spawn(_drain(track))

    @_guarded
    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("session %s: connection %s", self.id, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        if state in ("failed", "closed"):
            self._spawn(self.close(f"connection {state}"))

    @_guarded
    def _on_datachannel(self, channel: Any) -> None:
        if self.closed:
            return
        cfg = self.config
        if len(self.channels) >= cfg.max_channels:
            self._reject("channels")
            self._send(channel, {"type": "error", "message": f"at most {cfg.max_channels} DataChannels per call"})
            channel.close()
            return
        self.channels.append(channel)
        self._buckets[id(channel)] = (TokenBucket(cfg.message_rate, cfg.message_burst), TokenBucket(1.0, 1))
        channel.on("message", functools.partial(self._on_message, channel))
        channel.on("close", functools.partial(self._on_channel_close, channel))
        self._send(channel, {"type": "hello", "session": self.id, "codec": cfg.codec,
                             "budget_ms": cfg.track.budget_ms, "model": self.model_name,
                             "passthrough": cfg.passthrough, "max_message_bytes": cfg.max_message_bytes})

    @_guarded
    def _on_channel_close(self, channel: Any) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
        self._buckets.pop(id(channel), None)
        channel.remove_all_listeners()

    @_guarded
    def _on_message(self, channel: Any, message: Any) -> None:
        buckets = self._buckets.get(id(channel))
        if buckets is not None and not buckets[0].allow():
            self._reject("rate")
            if buckets[1].allow():  # at most one notice per second
                self._send(channel, {"type": "error", "message": (
                    f"rate limit: at most {self.config.message_rate:g} messages/s "
                    f"(bursts of {self.config.message_burst}); messages dropped")})
            return
        try:
            kind, fields = parse_message(message, self.config.max_message_bytes)
        except MessageError as exc:
            self._reject("invalid")
            self._send(channel, {"type": "error", "message": str(exc)})
            return
        if kind == "ping":
            self._send(channel, {"type": "pong", "t": fields.get("t")})
        elif kind == "config":
            self.apply_config(fields)
            self._send(channel, self.stats_message())
        elif kind == "stats":
            self._send(channel, self.stats_message())

    def _reject(self, reason: str) -> None:
        self.metrics.messages_rejected.labels(reason=reason).inc()

    def apply_config(self, fields: dict) -> None:
        """Apply the checked fields of a ``config`` message (see :mod:`.messages`) to the track."""
        t = self.track
        if t is None:
            return
        if "enabled" in fields:
            t.enabled = fields["enabled"]
        if "strength" in fields:
            t.strength = fields["strength"]
        if "budget_ms" in fields:
            t.budget_ms = fields["budget_ms"]
        if "compare" in fields:  # frame-exact before/after split (rtc/compare.py)
            t.compare = fields["compare"]

    def _on_frame(self, r: FrameReport) -> None:
        m = self.metrics
        m.frames_out.labels(outcome=r.outcome).inc()
        if r.outcome in ("cached", "original"):
            m.fallbacks.labels(kind=r.outcome).inc()
        m.faces.inc(r.faces)
        for stage, ms in r.stages_ms.items():
            if stage != "restore":
                m.stage_seconds.labels(stage=stage).observe(ms / 1e3)
        for ms in r.restores_ms:
            m.stage_seconds.labels(stage="restore").observe(ms / 1e3)
        m.frame_latency.observe(r.latency_ms / 1e3)
        m.observe_freshness(r)

    # -- stats + watchdog -------------------------------------------------------------------
    def stats_message(self) -> dict:
        if self.track is None:
            return {"type": "stats", "session": self.id, "t": time.time() * 1e3, **self.final_stats}
        return {"type": "stats", "session": self.id, "t": time.time() * 1e3, **self.track.snapshot()}

    def _sync_counters(self) -> None:
        if self.track is not None:
            n = self.track.stats.frames_in
            self.metrics.frames_in.inc(n - self._counted_in)
            self._counted_in = n

    async def _stats_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.config.stats_interval_s)
            try:
                self._sync_counters()
                if self.channels:
                    msg = self.stats_message()
                    for ch in list(self.channels):
                        self._send(ch, msg)
            except Exception:  # noqa: BLE001 - stats must never end the call
                log.exception("session %s: stats failed", self.id)

    async def _watchdog(self) -> None:
        cfg = self.config
        while not self.closed:
            await asyncio.sleep(min(0.5, cfg.media_timeout_s / 4, cfg.connect_timeout_s / 4))
            reason = self.timed_out(time.monotonic())
            if reason:
                await self.close(reason)

    def timed_out(self, now: float) -> str | None:
        """Why this session should be closed now, or None."""
        cfg = self.config
        if self.connected_at is None:
            if now - self.created > cfg.connect_timeout_s:
                return f"not connected within {cfg.connect_timeout_s:g} s"
            return None
        t = self.track
        last_media = self.connected_at if t is None or t.stats.frames_in == 0 else max(t.last_activity, self.connected_at)
        if now - last_media > cfg.media_timeout_s:
            return f"no video for {cfg.media_timeout_s:g} s (peer vanished or stopped sending)"
        return None

    @staticmethod
    def _send(channel: Any, msg: dict) -> None:
        if getattr(channel, "readyState", "") == "open":
            try:
                channel.send(json.dumps(msg))
            except Exception:  # noqa: BLE001 - channel closing under us
                pass

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str = "closed") -> None:
        """Release everything (idempotent), explicitly, so nothing waits for the garbage
        collector: tasks (awaited), track and its threads, detector, peer connection (codec
        contexts, transports), then every callback and listener that ties them together."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("session %s closed: %s", self.id, reason)
        try:
            self._sync_counters()
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            track, self.track = self.track, None
            if track is not None:
                self.final_stats = track.snapshot()
                track.stop()  # closes the enhancer (detector) on its worker thread
                await track.wait_stopped()
            elif self.enhancer is not None:
                self.enhancer.close()
            self.enhancer = None
            try:
                await self.pc.close()
            except Exception:  # noqa: BLE001
                log.exception("closing peer connection")
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._release()
            if self._on_closed is not None:
                on_closed, self._on_closed = self._on_closed, None
                on_closed(self)

    def _release(self) -> None:
        """Break the reference cycles between this session, aiortc and the track."""
        for ch in self.channels:
            ch.remove_all_listeners()
        self.channels.clear()
        self._buckets.clear()
        pc = self.pc
        emitters: list[Any] = [pc, pc.sctp]
        for tr in pc.getTransceivers():
            emitters += [tr.receiver.track, tr.sender.track, tr.receiver.transport, tr.sender.transport]
        if pc.sctp is not None:
            emitters.append(pc.sctp.transport)
        seen: set[int] = set()
        for obj in emitters:  # DTLS -> ICE -> gatherer: each holds callbacks into the pc
            while obj is not None and id(obj) not in seen:
                seen.add(id(obj))
                if hasattr(obj, "remove_all_listeners"):
                    obj.remove_all_listeners()
                obj = getattr(obj, "transport", None) or getattr(obj, "iceGatherer", None)
        self._tasks.clear()


def _build_into(out: list, factory: Callable, **kw: Any) -> None:
    out.append(factory(**kw))


def _count_error(metrics: ServerMetrics) -> Callable[[BaseException], None]:
    return lambda exc: metrics.errors.inc()


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
