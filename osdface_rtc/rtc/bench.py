"""Loopback WebRTC benchmark: pass-through server vs enhancing server, in the same run.

A Python aiortc peer streams a real clip (paced at its frame rate, every frame stamped with its
id in the top-left corner, see :mod:`.frameid`) to ``osdface-rtc serve`` running in a child
process, and reads the ids of the frames that come back. Every returned frame is matched to its
send time, so latency is end to end (client encode -> server decode, enhance, encode -> client
decode) and a frame that never comes back is a drop. The server runs twice, first as a plain
pass-through relay (same newest-frame plumbing), then enhancing; the difference is the latency
that enhancement adds.

:class:`PeerClient` is also what the tests use to stream through an in-process server.
"""
from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import VideoFrame

from . import frameid
from .ice import rtc_configuration, use_loopback_candidates
from .freshness import FRESH_MS, freshness_between
from .metrics import parse_prometheus

log = logging.getLogger(__name__)

RESOLUTIONS = {"360p": (640, 360), "480p": (640, 480), "720p": (1280, 720)}
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


def parse_resolution(text: str) -> tuple[int, int]:
    """``480p``/``720p``/``360p`` or ``WxH`` (even numbers) -> (W, H)."""
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)} or WxH, got {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise ValueError(f"resolution {text!r}: even sizes >= 64 expected")
    return w, h


def fit_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cover-resize and centre-crop an RGB image to ``size`` = (W, H)."""
    import cv2

    w, h = size
    ih, iw = rgb.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.resize(rgb, (nw, nh), interpolation=interp)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


def load_clip_yuv(path: Path, size: tuple[int, int], max_frames: int = 150,
                  faces: int = 1) -> tuple[list[np.ndarray], float]:
    """Decode up to ``max_frames`` frames as yuv420p arrays at ``size``; also the clip's fps.
    ``faces`` > 1 tiles that many time-shifted copies side by side (``bench_load.tile_faces``)."""
    import av
    import cv2

    from .bench_load import tile_faces

    raw: list[np.ndarray] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 30)
        for f in c.decode(stream):
            rgb = f.to_ndarray(format="rgb24")
            if rgb.shape[0] > size[1]:  # keep memory small: no taller than the target
                s = size[1] / rgb.shape[0]
                rgb = cv2.resize(rgb, (max(2, round(rgb.shape[1] * s)), size[1]), interpolation=cv2.INTER_AREA)
            raw.append(rgb)
            if len(raw) >= max_frames:
                break
    if not raw:
        raise ValueError(f"no video frames in {path}")
    frames = [VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
              for rgb in tile_faces(raw, faces, size)]
    return frames, fps


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


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(result: StreamResult, warmup_s: float = 3.0, tail_s: float = 0.5) -> dict[str, Any]:
    """fps delivered, latency percentiles and drops over the measured window (after warm-up)."""
    first_send = min(result.sent.values()) if result.sent else result.start
    t0 = first_send + warmup_s
    t1 = result.end
    window = {i: t for i, t in result.sent.items() if t0 <= t <= t1 - tail_s}
    arrivals: dict[int, float] = {}
    unreadable = 0
    for fid, t in result.received:
        if fid is None:
            unreadable += 1 if t >= t0 else 0
            continue
        arrivals.setdefault(fid, t)  # ids wrap after 2**16 frames (36 min at 30 fps)
    lat = sorted((arrivals[i] - t) * 1e3 for i, t in window.items() if i in arrivals)
    span = max(t1 - tail_s - t0, 1e-6)  # the window of send times
    in_order = [(arrivals[i] - t) * 1e3 for i, t in sorted(window.items()) if i in arrivals]
    thirds = np.array_split(np.array(in_order), 3) if len(in_order) >= 3 else [np.array([np.nan])] * 3
    return {
        "frames_sent": len(window),
        "frames_matched": len(lat),
        "frames_dropped": len(window) - len(lat),
        "frames_unreadable": unreadable,
        "fps_in": round(len(window) / span, 2),
        "fps_out": round(len(lat) / span, 2),  # frames of the window that came back, per second
        "latency_ms": {
            "p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
            "p99": round(percentile(lat, 99), 1), "mean": round(float(np.mean(lat)), 1) if lat else None,
            "max": round(max(lat), 1) if lat else None,
        },
        "latency_p50_by_third_ms": [round(float(np.median(t)), 1) for t in thirds],
        "measured_s": round(span, 2),
    }


# -- orchestration: the server in a child process ------------------------------------------------


@dataclass
class BenchConfig:
    clip: Path
    resolution: str = "480p"
    duration_s: float = 20.0
    warmup_s: float = 3.0
    codec: str = "vp8"
    model: str | None = None
    device: str = "auto"
    runtime: str = "auto"
    budget_ms: float = 25.0
    max_bitrate: int | None = None
    fps: float | None = None  # default: the clip's
    sessions: int = 1  # concurrent client peers
    faces: int = 1  # faces tiled into the clip
    out: Path | None = None
    modes: tuple[str, ...] = ("passthrough", "enhance")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a child we started, SIGKILL it if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(mode: str, cfg: BenchConfig, port: int):
    """``osdface-rtc serve`` in a child process (pass-through or enhancing), stopped on exit."""
    cmd = [sys.executable, "-m", "osdface_rtc.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--codec", cfg.codec, "--budget-ms", str(cfg.budget_ms), "--device", cfg.device,
           "--ice-loopback", "only", "--max-sessions", str(max(1, cfg.sessions))]
    if cfg.max_bitrate:
        cmd += ["--max-bitrate", str(cfg.max_bitrate)]
    if mode == "passthrough":
        cmd += ["--passthrough"]
    else:
        cmd += ["--runtime", cfg.runtime] + (["--model", cfg.model] if cfg.model else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        stop_process(proc)


async def wait_healthy(base_url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> dict:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{base_url}/healthz") as r:
                    if r.status == 200:
                        return await r.json()
            await asyncio.sleep(0.3)
    raise TimeoutError(f"server at {base_url} not healthy after {timeout_s} s")


async def fetch_metrics(base_url: str) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/metrics") as r:
            return parse_prometheus(await r.text())


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of all samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, v in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{val}"' in rest for k, val in labels.items()):
            total += v
    return total


def stage_means_ms(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, v in metrics.items():
        if key.startswith("osdface_stage_seconds_sum{"):
            stage = key.split('stage="')[1].split('"')[0]
            n = metrics.get(key.replace("_sum{", "_count{"), 0)
            if n:
                out[stage] = round(v / n * 1e3, 2)
    return out


async def run_mode(mode: str, cfg: BenchConfig, frames: list[np.ndarray], size: tuple[int, int],
                   fps: float) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    marks: dict[str, Any] = {}

    async def mark_warm() -> None:  # /metrics when the measured window starts
        await asyncio.sleep(cfg.warmup_s)
        marks["t"], marks["metrics"] = time.monotonic(), await fetch_metrics(base)

    def connected(_client: PeerClient) -> None:
        marks["task"] = asyncio.ensure_future(mark_warm())

    with server_process(mode, cfg, port) as proc:
        health = await wait_healthy(base, proc)
        runs = [PeerClient(base, codec=cfg.codec).stream(
            StampedClipTrack(frames, size, fps), cfg.duration_s + cfg.warmup_s,
            on_connected=connected if i == 0 else None) for i in range(max(1, cfg.sessions))]
        results = await asyncio.gather(*runs)
        t_end = time.monotonic()
        await asyncio.sleep(0.3)
        metrics = await fetch_metrics(base)
        await marks["task"]
    summary = merge_sessions(results, cfg.warmup_s)
    result = results[0]
    summary["freshness"] = freshness_between(marks["metrics"], metrics, t_end - marks["t"])
    summary.update(
        mode=mode,
        model=health.get("model"),
        server_frames_out=metric_sum(metrics, "osdface_frames_out_total"),
        fallbacks=metric_sum(metrics, "osdface_fallbacks_total"),
        fallbacks_cached=metric_sum(metrics, "osdface_fallbacks_total", kind="cached"),
        fallbacks_original=metric_sum(metrics, "osdface_fallbacks_total", kind="original"),
        enhanced_on_time=metric_sum(metrics, "osdface_frames_out_total", outcome="enhanced"),
        no_face=metric_sum(metrics, "osdface_frames_out_total", outcome="noface"),
        restore_errors=metric_sum(metrics, "osdface_restore_errors_total"),
        server_skipped=metric_sum(metrics, "osdface_frames_skipped_total"),
        server_stage_mean_ms=stage_means_ms(metrics),
    )
    if result.stats:
        summary["last_stats"] = {k: result.stats[-1].get(k) for k in ("fps_in", "fps_out", "stages_ms", "faces")}
    return summary


def merge_sessions(results: list[StreamResult], warmup_s: float) -> dict[str, Any]:
    """One session: :func:`summarize`. Several: totals, latency pooled over all sessions, fps out
    the mean per session; each session's figures in ``load``."""
    from .bench_load import latencies_ms, pooled

    summaries = [summarize(r, warmup_s) for r in results]
    load = pooled(summaries, [latencies_ms(r, warmup_s) for r in results], [r.stats for r in results])
    summary = dict(summaries[0])
    if len(results) > 1:
        lat = load["latencies_ms"]
        summary.update(
            {k: sum(s[k] for s in summaries) for k in ("frames_sent", "frames_matched", "frames_dropped",
                                                        "frames_unreadable")},
            fps_in=round(float(np.mean([s["fps_in"] for s in summaries])), 2),
            fps_out=load["fps_out_mean"],
            latency_ms={**load["latency_ms"], "mean": round(float(np.mean(lat)), 1) if lat else None,
                        "max": round(max(lat), 1) if lat else None},
        )
    summary["load"] = load
    return summary


async def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run every mode in ``cfg.modes`` against the same clip; return the JSON report."""
    use_loopback_candidates("only")
    size = parse_resolution(cfg.resolution)
    frames, clip_fps = load_clip_yuv(cfg.clip, size, faces=cfg.faces)
    fps = cfg.fps or clip_fps
    report: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "size": list(size), "fps": fps,
        "machine": machine_info(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    for mode in cfg.modes:
        log.info("bench: %s server, %s %s, %.0f s", mode, cfg.resolution, cfg.codec, cfg.duration_s)
        report[mode] = await run_mode(mode, cfg, frames, size, fps)
    if "passthrough" in report and "enhance" in report:
        a, b = report["passthrough"]["latency_ms"], report["enhance"]["latency_ms"]
        report["added_latency_ms"] = {q: round(b[q] - a[q], 1) for q in ("p50", "p95", "p99")}
    if cfg.out:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(report, indent=2))
    return report


def machine_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(),
                            "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        info["cuda"] = None
    return info


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of a bench report."""
    c = report["config"]
    lines = [f"clip {Path(c['clip']).name} at {report['size'][0]}x{report['size'][1]} "
             f"{report['fps']:.0f} fps, codec {c['codec']}, budget {c['budget_ms']} ms, "
             f"{c.get('sessions', 1)} session(s) x {c.get('faces', 1)} face(s)"]
    lines.append(f"{'mode':<12} {'fps out':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'dropped':>8} {'fallbacks':>10} {'errors':>7}")
    for mode in report["config"]["modes"]:
        r = report.get(mode)
        if not r:
            continue
        lat = r["latency_ms"]
        lines.append(f"{mode:<12} {r['fps_out']:>8.1f} {lat['p50']:>7.1f} {lat['p95']:>7.1f} {lat['p99']:>7.1f} "
                     f"{r['frames_dropped']:>4}/{r['frames_sent']:<4} {int(r['fallbacks']):>9} {int(r['restore_errors']):>7}")
    if "added_latency_ms" in report:
        a = report["added_latency_ms"]
        lines.append(f"added latency of enhancement over pass-through: p50 {a['p50']:+.1f} ms, "
                     f"p95 {a['p95']:+.1f} ms, p99 {a['p99']:+.1f} ms")
    if "enhance" in report:
        f = report["enhance"].get("freshness") or {}
        if f.get("faces_shown"):
            share = "n/a" if f["fresh_share"] is None else f"{100 * f['fresh_share']:.0f} %"
            lines.append(f"freshness: {f['restores_per_s']:.1f} restorations/s, restoration age p50 "
                         f"{f['age_p50_ms']} ms / p95 {f['age_p95_ms']} ms, faces with a restoration "
                         f"<= {FRESH_MS:.0f} ms old: {share}")
        lines.append(f"enhance server stage means (ms): {report['enhance'].get('server_stage_mean_ms')}")
    return "\n".join(lines)
