"""Processes and WebRTC peers for pool tests and benchmarks: a restorer pool, media servers,
many aiortc client sessions, and per-phase summaries of what came back.

Everything binds 127.0.0.1. Child processes get their own session (process group); stopping
one stops the whole tree it started (Ray's workers included), found by walking ``/proc`` from
its PID, so nothing else on the machine is touched.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..rtc.bench import free_port
from ..rtc.client import PeerClient, StampedClipTrack, StreamResult
from ..rtc.latency import percentile

ROOT = Path(__file__).resolve().parents[2]


# -- processes -----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL, wait_s: float = 10.0) -> None:
    """Send ``sig`` to ``proc`` and everything it started; wait (bounded) until they are gone."""
    pids = [proc.pid] + descendants(proc.pid)
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc.poll()
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return
        time.sleep(0.1)
    for p in pids:  # still there after a polite signal: no more politeness
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    proc.poll()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def child_env(extra_path: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *(extra_path or []), env.get("PYTHONPATH", "")])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class Proc:
    proc: subprocess.Popen
    url: str
    log: Path

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the tree (a pool shuts Serve and Ray down), SIGKILL what is left."""
        if self.proc.poll() is None:
            kill_tree(self.proc, signal.SIGTERM, timeout_s)
        kill_tree(self.proc, signal.SIGKILL, 5.0)

    def kill(self) -> None:
        kill_tree(self.proc, signal.SIGKILL)


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    f = open(log, "ab")
    try:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        f.close()


def http_json(url: str, timeout_s: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


def wait_url(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError, ValueError):
            return http_json(url)
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout_s:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def _start(cmd: list[str], url: str, probe: str, log: Path, env: dict[str, str] | None,
           timeout_s: float) -> Proc:
    """Spawn ``cmd`` and wait until ``url + probe`` answers; the process tree is killed on failure."""
    proc = _spawn(cmd, log, env or child_env())
    try:
        wait_url(url + probe, proc, timeout_s, log)
    except BaseException:
        kill_tree(proc)
        raise
    return Proc(proc, url, log)


def start_pool(model: str, port: int, log: Path, *, app: str = "restorer", extra: list[str] | None = None,
               env: dict[str, str] | None = None, timeout_s: float = 180.0) -> Proc:
    """``osdface-rtc restorer-serve`` (a private local Ray cluster on 127.0.0.1); waits for /info."""
    cmd = [sys.executable, "-m", "osdface_rtc.cli", "restorer-serve", "--model", model,
           "--http-port", str(port), "--app", app, *(extra or [])]
    return _start(cmd, f"http://127.0.0.1:{port}/{app}", "/info", log, env, timeout_s)


def start_media_server(model: str, port: int, log: Path, *, budget_ms: float | None = None, max_sessions: int = 8,
                       extra: list[str] | None = None, env: dict[str, str] | None = None,
                       timeout_s: float = 120.0) -> Proc:
    """``osdface-rtc serve`` on 127.0.0.1 (``model`` may be ``ray://...``); waits for /healthz.
    ``budget_ms`` None: the server's default budget."""
    budget = [] if budget_ms is None else ["--budget-ms", str(budget_ms)]
    cmd = [sys.executable, "-m", "osdface_rtc.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", model, *budget, "--ice-loopback", "only",
           "--max-sessions", str(max_sessions), *(extra or [])]
    return _start(cmd, f"http://127.0.0.1:{port}", "/healthz", log, env, timeout_s)


# -- sessions ------------------------------------------------------------------------------------


async def stream_until(base_url: str, track: StampedClipTrack, stop: asyncio.Event, *, codec: str = "vp8",
                       keep: Callable[[int], bool] | None = None) -> StreamResult:
    """One call that streams ``track`` until ``stop`` is set (bench's PeerClient underneath)."""

    async def hold(_client: PeerClient) -> None:
        await stop.wait()

    return await PeerClient(base_url, codec=codec).stream(track, duration_s=0.3, keep=keep, on_connected=hold)


def window(result: StreamResult, t0: float, t1: float) -> dict[str, Any]:
    """fps and latency of the frames *sent* in ``[t0, t1)`` (monotonic), as received back."""
    arrivals: dict[int, float] = {}
    for fid, t in result.received:
        if fid is not None:
            arrivals.setdefault(fid, t)
    sent = {i: t for i, t in result.sent.items() if t0 <= t < t1}
    lat = [(arrivals[i] - t) * 1e3 for i, t in sent.items() if i in arrivals]
    span = max(t1 - t0, 1e-6)
    return {"frames_sent": len(sent), "frames_back": len(lat), "fps_in": round(len(sent) / span, 2),
            "fps_out": round(len(lat) / span, 2), "p50_ms": round(percentile(lat, 50), 1),
            "p95_ms": round(percentile(lat, 95), 1), "max_ms": round(max(lat), 1) if lat else None}


COUNTERS = ("frames_out", "enhanced", "fallback_cached", "fallback_original", "errors")


def counters_between(result: StreamResult, w0: float, w1: float) -> dict[str, int]:
    """Server-side outcome counters of a call between wall times ``w0``..``w1`` (seconds), from
    the DataChannel stats messages (cumulative, stamped ``t`` in ms)."""
    def at(w: float) -> dict[str, int]:
        best: dict = {}
        for m in result.stats:
            if m.get("t", 0) / 1e3 <= w:
                best = m
        return {k: int(best.get(k, 0)) for k in COUNTERS}

    a, b = at(w0), at(w1)
    return {k: b[k] - a[k] for k in COUNTERS}


@dataclass
class Phase:
    name: str
    mono: tuple[float, float]
    wall: tuple[float, float]
    extra: dict[str, Any] = field(default_factory=dict)


def phase_report(results: list[StreamResult], phase: Phase) -> list[dict[str, Any]]:
    return [{**window(r, *phase.mono), **counters_between(r, *phase.wall)} for r in results]


def mean(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return float(np.mean(vals)) if vals else float("nan")


__all__ = ["free_port", "start_pool", "start_media_server", "stream_until", "window", "counters_between",
           "Phase", "phase_report", "kill_tree", "descendants", "http_json", "child_env"]
