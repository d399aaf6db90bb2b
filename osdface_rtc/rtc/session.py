"""One WebRTC call: peer connection, EnhanceTrack, control/stats DataChannel, watchdog.

DataChannel protocol (JSON text messages on any channel the peer opens, e.g. ``"control"``):

client -> server
    ``{"type": "config", "enabled": true, "strength": 0.7, "budget_ms": 25}`` (any subset)
    ``{"type": "ping", "t": <client ms>}``
server -> client
    ``{"type": "hello", "session": id, "codec": "vp8", "budget_ms": 25, "model": name}``
    ``{"type": "stats", "session": id, "fps_in", "fps_out", "latency_ms", "stages_ms": {...},
      "faces", "fallbacks", "fallback_cached", "fallback_original", "errors", "frames_in",
      "frames_out", "frames_skipped", "enhanced", "width", "height", "enabled", "strength",
      "budget_ms", "t": <server ms>}`` every ``stats_interval_s``
    ``{"type": "pong", "t": <echoed>}``, ``{"type": "error", "message": ...}``
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from .ice import rtc_configuration
from .metrics import ServerMetrics
from .track import EnhanceTrack, FrameReport, TrackConfig

log = logging.getLogger(__name__)


class OfferError(ValueError):
    """The offer cannot be answered (reason goes back to the client as HTTP 400)."""


@dataclass
class SessionConfig:
    budget_ms: float = 25.0
    codec: str = "vp8"  # vp8 | h264
    ice_servers: list[str] = field(default_factory=list)
    passthrough: bool = False  # relay frames unchanged (benchmark baseline)
    strength: float = 1.0
    max_faces: int = 10
    detector: str = "auto"  # short-range first, full-range only when it finds nothing
    peer_timeout_s: float = 5.0  # no frames / messages for this long -> session closed
    connect_timeout_s: float = 15.0  # no first frame within this -> session closed
    stats_interval_s: float = 0.5


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
        self.last_message = 0.0
        self.closed = False
        self.close_reason = ""
        self._tasks: set[asyncio.Task] = set()
        self._counted_in = 0

    # -- signalling -------------------------------------------------------------------------
    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer ``offer``; raises :class:`OfferError` for offers we cannot serve."""
        loop = asyncio.get_running_loop()
        if not self.config.passthrough:
            from ..pipeline.enhancer import FaceEnhancer

            self.enhancer = await loop.run_in_executor(
                None, lambda: FaceEnhancer(restorer=self.restorer, strength=self.config.strength,
                                           max_faces=self.config.max_faces, detector=self.config.detector))
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        pc.on("track", self._on_track)
        try:
            await pc.setRemoteDescription(offer)
        except Exception as exc:  # noqa: BLE001 - aiortc raises several types for bad SDP
            raise OfferError(f"invalid SDP offer: {exc}") from exc
        if self.track is None:
            raise OfferError("offer has no video track to enhance")
        self._prefer_codec()
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # noqa: BLE001
            raise OfferError(f"cannot answer offer: {exc}") from exc
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

    # -- events -----------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.track is None:
            self.track = EnhanceTrack(
                track, self.enhancer, config=TrackConfig(budget_ms=self.config.budget_ms),
                on_frame=self._on_frame, on_skip=lambda: self.metrics.frames_skipped.inc(),
                on_error=lambda exc: self.metrics.errors.inc(), close_enhancer=True)
            self.pc.addTrack(self.track)
        else:  # audio or a second video: consume and drop (aiortc queues are unbounded)
            self._spawn(_drain(track))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("session %s: connection %s", self.id, state)
        if state in ("failed", "closed"):
            self._spawn(self.close(f"connection {state}"))

    def _on_datachannel(self, channel: Any) -> None:
        self.channels.append(channel)
        channel.on("message", lambda msg: self._on_message(channel, msg))
        channel.on("close", lambda: self.channels.remove(channel) if channel in self.channels else None)
        self._send(channel, {"type": "hello", "session": self.id, "codec": self.config.codec,
                             "budget_ms": self.config.budget_ms, "model": self.model_name,
                             "passthrough": self.config.passthrough})

    def _on_message(self, channel: Any, message: Any) -> None:
        self.last_message = time.monotonic()
        try:
            msg = json.loads(message)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except (ValueError, TypeError):
            self._send(channel, {"type": "error", "message": "messages must be JSON objects"})
            return
        kind = msg.get("type")
        if kind == "ping":
            self._send(channel, {"type": "pong", "t": msg.get("t")})
        elif kind == "config":
            try:
                self.apply_config(msg)
            except (TypeError, ValueError) as exc:
                self._send(channel, {"type": "error", "message": f"bad config: {exc}"})
                return
            self._send(channel, self.stats_message())
        else:
            self._send(channel, {"type": "error", "message": f"unknown message type {kind!r}"})

    def apply_config(self, msg: dict) -> None:
        """Apply a ``config`` control message to the live track."""
        t = self.track
        if t is None:
            return
        if "enabled" in msg:
            t.enabled = bool(msg["enabled"])
        if "strength" in msg:
            t.strength = min(1.0, max(0.0, float(msg["strength"])))
        if "budget_ms" in msg:
            t.budget_ms = min(1000.0, max(0.0, float(msg["budget_ms"])))

    def _on_frame(self, r: FrameReport) -> None:
        m = self.metrics
        m.frames_out.inc(outcome=r.outcome)
        if r.outcome in ("cached", "original"):
            m.fallbacks.inc(kind=r.outcome)
        m.faces.inc(r.faces)
        for stage, ms in r.stages_ms.items():
            if stage != "restore":
                m.stage_seconds.observe(ms / 1e3, stage=stage)
        for ms in r.restores_ms:
            m.stage_seconds.observe(ms / 1e3, stage="restore")
        m.frame_latency.observe(r.latency_ms / 1e3)

    # -- stats + watchdog -------------------------------------------------------------------
    def stats_message(self) -> dict:
        body = self.track.snapshot() if self.track is not None else {}
        return {"type": "stats", "session": self.id, "t": time.time() * 1e3, **body}

    def _sync_counters(self) -> None:
        if self.track is not None:
            n = self.track.stats.frames_in
            self.metrics.frames_in.inc(n - self._counted_in)
            self._counted_in = n

    async def _stats_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.config.stats_interval_s)
            self._sync_counters()
            if self.channels:
                msg = self.stats_message()
                for ch in list(self.channels):
                    self._send(ch, msg)

    async def _watchdog(self) -> None:
        cfg = self.config
        while not self.closed:
            await asyncio.sleep(min(1.0, cfg.peer_timeout_s / 4))
            now = time.monotonic()
            t = self.track
            if t is None or t.stats.frames_in == 0:
                if now - self.created > cfg.connect_timeout_s:
                    await self.close("no video within the connect timeout")
            elif now - max(t.last_activity, self.last_message) > cfg.peer_timeout_s:
                await self.close("peer vanished (no frames or messages)")

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
        """Release everything (idempotent): tasks, track, enhancer, peer connection."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("session %s closed: %s", self.id, reason)
        self._sync_counters()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.track is not None:
            self.track.stop()
        elif self.enhancer is not None:
            self.enhancer.close()
        try:
            await self.pc.close()
        except Exception:  # noqa: BLE001
            log.exception("closing peer connection")
        self.channels.clear()
        if self._on_closed is not None:
            self._on_closed(self)


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
