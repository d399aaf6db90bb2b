"""Helpers for the rtc tests: deterministic test restorers, a fake source track, clip frames,
an in-process server, and the check that returned frames were enhanced like a local run."""
from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from osdface_rtc.paths import videos_dir
from osdface_rtc.restore.base import check_batch

CLIP = "d9.mp4"  # webcam-at-desk talking head, one face


def clip_path(name: str = CLIP) -> Path | None:
    p = videos_dir() / name
    return p if p.is_file() else None


def load_clip_rgb(path: Path, size: tuple[int, int], count: int) -> list[np.ndarray]:
    """First ``count`` frames of a clip, cover-resized + centre-cropped to ``size`` (W, H)."""
    from osdface_rtc.io.clips import read_clip

    return read_clip(path, size, count)[0]


class StripeRestorer:
    """Visibly changes every face: strong vertical stripes (fine enough that the pipeline's
    colour-safe residual paste keeps them). Deterministic; optional delay per call."""

    name = "stripes"

    def __init__(self, face_size: int = 128, delay_s: float = 0.0, period: int = 32, amp: int = 60):
        self.face_size, self.delay_s = face_size, delay_s
        x = np.arange(face_size)
        self._stripes = np.where((x // (period // 2)) % 2 == 0, amp, -amp).astype(np.int16)[None, :, None]
        self.calls = 0

    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.clip(faces.astype(np.int16) + self._stripes[None], 0, 255).astype(np.uint8)


class FailingRestorer(StripeRestorer):
    """Raises like a CUDA OOM on every ``fail_every``-th call."""

    name = "failing"

    def __init__(self, fail_every: int = 1, **kw):
        super().__init__(**kw)
        self.fail_every = fail_every

    def restore(self, faces: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls % self.fail_every == 0:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return super().restore(faces)


class ListSource(MediaStreamTrack):
    """A paced video source track from RGB frames (a stand-in for aiortc's remote track)."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0, loops: int = 1):
        super().__init__()
        self.frames, self.fps, self.loops = frames, fps, loops
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.sent >= len(self.frames) * self.loops:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.sent / self.fps - time.monotonic()
        await asyncio.sleep(max(0.0, wait))  # always yield, like a network source
        rgb = self.frames[self.sent % len(self.frames)]
        vf = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        vf.pts, vf.time_base = self.sent * 3000, fractions.Fraction(1, 90000)
        self.sent += 1
        return vf


def face_mosaic(faces: list[np.ndarray], cols: int, cell: int) -> np.ndarray:
    """Tile face crops into one frame (e.g. 10 faces for the many-faces test)."""
    import cv2

    rows = (len(faces) + cols - 1) // cols
    img = np.full((rows * cell, cols * cell, 3), 90, np.uint8)
    for i, f in enumerate(faces):
        r, c = divmod(i, cols)
        img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = cv2.resize(f, (cell, cell))
    return img


@contextlib.asynccontextmanager
async def running_server(config=None, restorer=None) -> AsyncIterator[tuple[str, Any]]:
    """The real aiohttp app on a free loopback port (in this process); yields (base_url, Server)."""
    from aiohttp import web

    from osdface_rtc.rtc.httpguard import handler_args
    from osdface_rtc.rtc.ice import use_loopback_candidates
    from osdface_rtc.rtc.server import SERVER_KEY, ServerConfig, create_app

    use_loopback_candidates("only")
    cfg = config or ServerConfig(port=0)
    app = create_app(cfg, restorer)
    runner = web.AppRunner(app, **handler_args(cfg.guard))  # as run_server
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app[SERVER_KEY]
    finally:
        await runner.cleanup()


def clip_track(size: tuple[int, int] = (640, 480), fps: float = 30.0, max_frames: int = 90):
    """A :class:`StampedClipTrack` of the shared clip (frames are yuv420p arrays)."""
    from osdface_rtc.io.clips import load_clip_yuv
    from osdface_rtc.rtc.client import StampedClipTrack

    p = clip_path()
    frames, _ = load_clip_yuv(p, size, max_frames)
    return StampedClipTrack(frames, size, fps), frames


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    return VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")


@dataclass
class StripeCheck:
    """A returned frame against a local run of the same pipeline (:func:`stripe_checks`)."""

    fid: int
    inside_err: float  # mean |returned - sent| where the local run changed the frame (the faces)
    outside_err: float  # the same where it did not (codec noise only)
    corr: float  # correlation of the returned change with the local change, in the faces

    @property
    def ok(self) -> bool:
        return self.outside_err < 6.0 and self.inside_err > 3 * self.outside_err and self.corr > 0.5


def stripe_checks(kept: dict[int, np.ndarray], frames: list[np.ndarray], min_changed: int = 300) -> list[StripeCheck]:
    """Frames that came back from a server enhancing with :class:`StripeRestorer` (``kept``: id ->
    RGB) compared with the sent frame (``frames``: the yuv420p clip, stamped with its id) run
    through a local ``FaceEnhancer(StripeRestorer(), detector="auto")``: the face regions must
    change like that, the rest stay as sent. Frames where the local run changes fewer than
    ``min_changed`` pixels (no face found) are left out."""
    from osdface_rtc.pipeline.enhancer import FaceEnhancer
    from osdface_rtc.rtc import frameid

    local = FaceEnhancer(restorer=StripeRestorer(), detector="auto")
    out = []
    try:
        for fid, got in sorted(kept.items()):
            sent = yuv_to_rgb(frames[fid % len(frames)])
            frameid.stamp_rgb(sent, fid)
            expected = local.process(sent).astype(np.float32)
            local.reset()
            sent_f, got_f = sent.astype(np.float32), got.astype(np.float32)
            change = np.abs(expected - sent_f).mean(-1)
            mask = change > 12
            if mask.sum() < min_changed:
                continue
            outside = change < 0.5
            pw, ph = frameid.pattern_box(sent.shape[0])
            outside[: ph + 8, : pw + 8] = False  # the id pattern
            d_got = got_f - sent_f
            corr = np.corrcoef(d_got[mask].ravel(), (expected - sent_f)[mask].ravel())[0, 1]
            out.append(StripeCheck(fid, float(np.abs(d_got).mean(-1)[mask].mean()),
                                   float(np.abs(d_got).mean(-1)[outside].mean()), float(corr)))
    finally:
        local.close()
    return out


async def wait_until(pred, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return bool(pred())


def vanish(pc) -> None:
    """Make an aiortc peer go silent without saying goodbye (a killed browser tab)."""
    for tr in pc.getTransceivers():
        transport = tr.sender.transport
        if transport is None:
            continue
        for proto in list(transport.transport._connection._protocols):
            try:
                proto.transport.sendto = lambda *a, **k: None
            except AttributeError:
                proto.transport.close()
