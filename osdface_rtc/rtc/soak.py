"""Soak test: back-to-back calls against a real ``osdface-rtc serve`` child process.

    python -m osdface_rtc.rtc.soak --minutes 30 --out runs/soak       # shipped model, 480x360
    python -m osdface_rtc.rtc.soak --minutes 2 --call-s 5 --model classical --out runs/soak-quick

Each call is a real aiortc peer over loopback streaming the shared clip (d9.mp4) for
``--call-s`` seconds with the control DataChannel open; then it hangs up, waits until the
server reports 0 sessions, and samples the server process from ``/proc``: threads, RSS, open
file descriptors (also once in the middle of each call). The server is never asked to collect
garbage: what is measured is what a closed call leaves behind on its own. Writes
``soak.json`` (every sample + a summary) and ``soak.png`` (threads/RSS/fds over time) to ``--out``.
Bounded: stops after ``--minutes`` or ``--max-calls``, whichever comes first.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from ..paths import videos_dir
from ..io.clips import load_clip_yuv
from .bench import free_port, stop_process, wait_healthy
from .client import PeerClient, StampedClipTrack
from .ice import use_loopback_candidates


@dataclass
class Sample:
    t_s: float  # since the soak started
    call: int  # calls completed so far
    phase: str  # "idle" (after a call ended, 0 sessions) | "call" (mid-call)
    threads: int
    rss_mb: float
    fds: int
    frames_back: int = 0  # frames the client got back in the call just finished


def proc_sample(pid: int) -> tuple[int, float, int]:
    """(threads, RSS MiB, open fds) of a process, from /proc."""
    threads, rss_kb = 0, 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return threads, rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def _sessions(base: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:
            return int((await r.json())["sessions"])


async def soak(args: argparse.Namespace) -> dict:
    use_loopback_candidates("only")
    clip = Path(args.clip) if args.clip else videos_dir() / "d9.mp4"
    if not clip.is_file():
        raise SystemExit(f"clip not found: {clip} (set OSDFACE_RTC_DATA or pass --clip)")
    size = (args.width, args.height)
    frames, fps = load_clip_yuv(clip, size, 150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "osdface_rtc.cli", "serve", "--port", str(port), "--max-sessions", "2",
           "--device", args.device]
    cmd += ["--passthrough"] if args.model == "passthrough" else (["--model", args.model] if args.model else [])
    log = open(out / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    samples: list[Sample] = []
    t0 = time.monotonic()
    failures = 0
    try:
        await wait_healthy(base, proc)
        await asyncio.sleep(1.0)
        samples.append(Sample(0.0, 0, "idle", *proc_sample(proc.pid)))
        deadline = t0 + args.minutes * 60
        call = 0
        while call < args.max_calls and time.monotonic() + args.call_s < deadline:
            track = StampedClipTrack(frames, size, fps)
            client = PeerClient(base)

            async def mid(_c: PeerClient) -> None:
                async def later() -> None:
                    await asyncio.sleep(args.call_s / 2)
                    samples.append(Sample(time.monotonic() - t0, call, "call", *proc_sample(proc.pid)))
                asyncio.ensure_future(later())

            try:
                res = await client.stream(track, duration_s=args.call_s, on_connected=mid)
                got = len(res.received)
            except Exception as exc:  # noqa: BLE001 - recorded, the soak goes on
                failures += 1
                got = 0
                print(f"call {call + 1} failed: {exc}", flush=True)
            call += 1
            for _ in range(100):  # until the server has released the session (<= 10 s)
                if await _sessions(base) == 0:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.settle_s)
            s = Sample(time.monotonic() - t0, call, "idle", *proc_sample(proc.pid), frames_back=got)
            samples.append(s)
            print(f"call {call}: {got} frames back; idle server: {s.threads} threads, {s.rss_mb:.0f} MiB, "
                  f"{s.fds} fds", flush=True)
            if proc.poll() is not None:
                raise RuntimeError(f"server died (exit {proc.returncode}); see {out / 'server.log'}")
    finally:
        stop_process(proc)
        log.close()
    report = {"command": " ".join(sys.argv), "server": " ".join(cmd[1:]), "clip": str(clip), "size": size,
              "call_s": args.call_s, "failures": failures, "load_avg": os.getloadavg(),
              "summary": summarize(samples), "samples": [asdict(s) for s in samples]}
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(samples, out / "soak.png")
    return report


def summarize(samples: list[Sample]) -> dict:
    idle = [s for s in samples if s.phase == "idle"]
    if len(idle) < 2:
        return {}
    first, last = idle[0], idle[-1]
    half = idle[len(idle) // 2:]
    return {
        "calls": last.call, "minutes": round(last.t_s / 60, 1),
        "threads_baseline": first.threads, "threads_last_idle": last.threads,
        "threads_max_idle": max(s.threads for s in idle),
        "rss_mb_baseline": round(first.rss_mb, 1), "rss_mb_last_idle": round(last.rss_mb, 1),
        "rss_mb_max_idle": round(max(s.rss_mb for s in idle), 1),
        # MiB per call over the second half (after allocator warm-up): ~0 when flat
        "rss_mb_per_call_2nd_half": round((half[-1].rss_mb - half[0].rss_mb) / max(1, half[-1].call - half[0].call), 3),
        "fds_baseline": first.fds, "fds_last_idle": last.fds, "fds_max_idle": max(s.fds for s in idle),
        "threads_mid_call_max": max((s.threads for s in samples if s.phase == "call"), default=None),
    }


def plot(samples: list[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for ax, key, label in zip(axes, ("threads", "rss_mb", "fds"), ("threads", "RSS (MiB)", "open fds")):
        for phase, style in (("idle", "o-"), ("call", "x")):
            pts = [(s.t_s / 60, getattr(s, key)) for s in samples if s.phase == phase]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=f"{phase}" if phase == "call" else "idle (after each call)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("minutes")
    calls = max((s.call for s in samples), default=0)
    fig.suptitle(f"osdface-rtc serve soak: {calls} calls back to back")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m osdface_rtc.rtc.soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="stop starting calls after this long")
    p.add_argument("--max-calls", type=int, default=10_000)
    p.add_argument("--call-s", type=float, default=20.0, help="length of each call")
    p.add_argument("--settle-s", type=float, default=1.0, help="wait after a call is released before sampling")
    p.add_argument("--model", default=None, help="server --model (default: shipped); 'passthrough' for none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clip", default=None, help="video to stream (default: d9.mp4 of the shared clips)")
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--out", default="runs/soak")
    args = p.parse_args(argv)
    report = asyncio.run(soak(args))
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
