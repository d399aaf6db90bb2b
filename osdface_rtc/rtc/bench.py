"""``osdface-rtc bench``: loopback WebRTC, pass-through server vs enhancing server, in one run.

The server (``osdface-rtc serve``) runs in a child process, first as a plain pass-through relay
(same newest-frame plumbing), then enhancing. Against each, :class:`.client.PeerClient` peers
stream a real clip (:func:`osdface_rtc.io.clips.load_clip_yuv`, paced at its frame rate, every
frame stamped with its id) and read the ids of the frames that come back, so latency is end to
end (client encode -> server decode, enhance, encode -> client decode) and a frame that never
comes back is a drop (:mod:`.latency`). The difference between the two runs is the latency that
enhancement adds. The server's ``/metrics`` are scraped when the measured window starts and
after it ends (fallbacks, stage means, freshness of the restored faces).

:func:`run_bench` returns the JSON report; :func:`format_report` renders it as a table.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io.clips import load_clip_yuv, parse_resolution
from .client import PeerClient, StampedClipTrack
from .freshness import FRESH_MS, freshness_between
from .ice import use_loopback_candidates
from .latency import merge_sessions
from .metrics import parse_prometheus
from .track import TrackConfig

log = logging.getLogger(__name__)


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
    budget_ms: float = TrackConfig.budget_ms
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
