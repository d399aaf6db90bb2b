"""A client peer for the live server: streams a stamped clip and records what comes back.

- :class:`StampedClipTrack`: loops preloaded yuv420p frames (:func:`osdface_rtc.io.clips.load_clip_yuv`)
  at the clip's frame rate, real-time paced, each stamped with its id in the top-left corner
  (:mod:`.frameid`); ``sent`` maps id -> monotonic send time.
- :class:`PeerClient`: an aiortc peer that offers the track to ``POST {base_url}/offer``, reads
  the id of every returned frame (:class:`StreamResult`: so each one is matched to its send
  time, and a frame that never comes back is a drop), collects the DataChannel stats messages,
  and can send control messages.

Used by ``osdface-rtc bench`` (:mod:`.bench`), the soak test, the restorer-pool load generator
and the tests that stream through an in-process server.
"""
from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import VideoFrame

from . import frameid
from .ice import rtc_configuration

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


class StampedClipTrack(MediaStreamTrack):
    """Loops preloaded frames at ``fps`` (real-time paced), stamping each with its id."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], size: tuple[int, int], fps: float = 30.0):
        super().__init__()
        self.frames, self.size, self.fps = frames, size, fps
        self.sent: dict[int, float] = {}  # id -> monotonic send time
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n = self._n
        self._n += 1
        yuv = self.frames[n % len(self.frames)].copy()
        frameid.stamp_yuv420(yuv, self.size[1], n % (1 << frameid.BITS))
        vf = VideoFrame.from_ndarray(yuv, format="yuv420p")
        vf.pts, vf.time_base = int(n * 90000 / self.fps), VIDEO_TIME_BASE
        self.sent[n] = time.monotonic()
        return vf


@dataclass
class StreamResult:
    sent: dict[int, float]
    received: list[tuple[int | None, float]]  # (id or None if unreadable, monotonic time)
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # kept decoded frames (RGB)
    stats: list[dict] = field(default_factory=list)  # DataChannel stats messages
    session: str | None = None
    start: float = 0.0
    end: float = 0.0


class PeerClient:
    """An aiortc peer that streams a track to ``POST {base_url}/offer`` and records what returns."""

    def __init__(self, base_url: str, codec: str = "vp8", token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.codec = codec
        self.token = token
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None

    async def stream(
        self,
        track: StampedClipTrack,
        duration_s: float,
        keep: Callable[[int], bool] | None = None,
        on_connected: Callable[["PeerClient"], Any] | None = None,
    ) -> StreamResult:
        """Stream ``track`` for ``duration_s`` seconds after the answer's track arrives (and
        ``on_connected`` ran); keep the decoded frames whose id ``keep`` accepts."""
        import aiohttp

        pc = self.pc = RTCPeerConnection(configuration=rtc_configuration([]))
        result = StreamResult(sent=track.sent, received=[])
        got_track = asyncio.Event()
        consumers: list[asyncio.Task] = []

        async def consume(remote: MediaStreamTrack) -> None:
            try:
                while True:
                    frame = await remote.recv()
                    t = time.monotonic()
                    fid = frameid.read_frame(frame)
                    result.received.append((fid, t))
                    if keep is not None and fid is not None and keep(fid) and fid not in result.frames:
                        result.frames[fid] = frame.to_ndarray(format="rgb24")
            except MediaStreamError:
                pass

        @pc.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            if remote.kind == "video":
                consumers.append(asyncio.ensure_future(consume(remote)))
                got_track.set()

        transceiver = pc.addTransceiver(track, direction="sendrecv")
        want = f"video/{self.codec}".lower()
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in (want, "video/rtx")])
        channel = self.channel = pc.createDataChannel("control")

        @channel.on("message")
        def on_message(msg: str) -> None:
            with contextlib.suppress(ValueError):
                m = json.loads(msg)
                if m.get("type") == "stats":
                    result.stats.append(m)
                    result.session = m.get("session")

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base_url}/offer", json={
                "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}, headers=headers) as r:
                body = await r.json()
                if r.status != 200:
                    await pc.close()
                    raise RuntimeError(f"offer refused: HTTP {r.status} {body}")
        result.session = body.get("session")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(got_track.wait(), 10)
        if on_connected is not None:
            res = on_connected(self)
            if asyncio.iscoroutine(res):
                await res
        result.start = time.monotonic()
        await asyncio.sleep(duration_s)
        result.end = time.monotonic()
        track.stop()
        await pc.close()
        for c in consumers:
            c.cancel()
        return result

    def send(self, msg: dict) -> None:
        """Send a control message on the DataChannel (when open)."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(msg))
