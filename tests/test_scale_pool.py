"""A real restorer pool on Ray Serve (local cluster on 127.0.0.1) shared by two media servers,
each streamed to by a real aiortc peer: frames come back enhanced, crops of both servers are
batched together, killing the pool makes the calls fall back without stalling, and they are
enhanced again once the pool is back.

Runs in a child process inside a private network namespace when possible (like the browser
test), so Ray and WebRTC cannot reach anything but loopback. This file is the child's script too.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZE = (480, 360)
FPS = 15.0
# Frames back per second that still mean "the call flows": Ray, two media servers and two peers
# share the 2-core CI box, so encoders drop frames under load (CI once saw 8.2 fps back of 15 right
# after the pool returned); a stalled call returns ~0.
LIVE_FPS = 0.45 * FPS


def ray_missing() -> str | None:
    """Why the pool cannot run here (None when it can). Not imported in this process: the pool
    runs in children, and importing Ray costs seconds."""
    import importlib.util

    for mod in ("ray", "ray.serve", "starlette"):
        try:
            found = importlib.util.find_spec(mod) is not None
        except ImportError:
            found = False
        if not found:
            return f"{mod} not installed: pip install -e '.[scale]' -c constraints/scale.txt"
    return None


@pytest.mark.slow
def test_pool_shared_by_two_media_servers_falls_back_and_resumes(tmp_path, clip):
    reason = ray_missing()
    if reason:
        pytest.skip(reason)
    from test_rtc_browser import netns_prefix

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0")
    cmd = netns_prefix() + [sys.executable, str(Path(__file__)), "--inner", "--clip", str(clip), "--out", str(tmp_path)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"pool test did not finish in time:\n{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}")
    out = tmp_path / "result.json"
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(tmp_path.glob("*.log")))
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=1))
    a, b, c = r["phases"]["healthy"], r["phases"]["pool_down"], r["phases"]["resumed"]

    # 1. both calls enhanced by the pool, pixels changed like a local run of the same restorer
    for s in a:
        assert s["fps_out"] >= LIVE_FPS and s["frames_out"] > 0, a
        assert s["enhanced"] >= 0.5 * s["frames_out"], a
    assert r["pixel_checks"] >= 4, r["pixel_checks"]
    # 2. crops of both media servers were batched together (the pool's own statistics)
    pool = r["pool_stats_healthy"]
    assert len(pool["clients"]) == 2, pool["clients"]
    assert pool["mixed_batches"] >= 1, pool
    assert sum(int(k) * v for k, v in pool["batch_faces"].items()) == pool["faces"] > 0
    # 3. pool killed: the calls go on (pass-through / re-warp), no stall, no growing delay
    for s in b:
        assert s["fps_out"] >= LIVE_FPS and s["frames_sent"] >= 0.8 * FPS * r["down_s"], b
        assert s["p95_ms"] < 800, b
        assert s["enhanced"] <= 2, b  # nothing is restored while the pool is gone
        assert s["errors"] + s["fallback_cached"] + s["fallback_original"] >= 0.5 * s["frames_out"], b
    # 4. pool back: enhanced again, without reconnecting the calls
    for s in c:
        assert s["enhanced"] >= 0.5 * s["frames_out"] > 0, c
        assert s["fps_out"] >= LIVE_FPS and s["p95_ms"] < 2000, c  # no delay building up
    assert len(r["pool_stats_resumed"]["clients"]) == 2
    # 5. back-pressure: a burst larger than the queue is partly served (bit-exact), partly refused fast
    burst = r["burst"]
    assert burst["ok"] >= 1 and burst["wrong"] == 0 and not burst["other"], burst
    assert burst["busy"] >= 1 and burst["refused_full"] >= burst["busy"], burst
    assert max(burst["busy_ms"]) < max(burst["ok_ms"]), burst  # refusals never wait for the batch


# -- the child ------------------------------------------------------------------------------------


def pixel_check(results, frames) -> int:
    """Kept frames whose face regions changed like a local run with the same restorer."""
    from rtc_util import stripe_checks

    return sum(c.ok for res in results for c in stripe_checks(res.frames, frames))


def burst(url: str, clients: int = 12, faces: int = 8) -> dict:
    """``clients`` media servers at once, ``faces`` crops each, against a 16-face queue: the
    pool restores what fits (bit-exact with the same restorer here) and refuses the rest fast."""
    import threading

    from osdface_rtc.restore.protocol import PoolBusy
    from osdface_rtc.restore.remote import RemoteConfig, RemoteRestorer
    from rtc_util import StripeRestorer

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (faces, 128, 128, 3), dtype=np.uint8)
    want = StripeRestorer().restore(crops)
    out: dict = {"ok": 0, "wrong": 0, "busy": 0, "other": [], "busy_ms": [], "ok_ms": []}
    lock, go = threading.Lock(), threading.Event()

    def one(i: int) -> None:
        r = RemoteRestorer(RemoteConfig(url=url, budget_ms=1000, client=f"burst{i}"))
        r.info()  # connected before the burst
        go.wait()
        t = time.monotonic()
        try:
            got = r.restore(crops)
            with lock:
                out["ok" if np.array_equal(got, want) else "wrong"] += 1
                out["ok_ms"].append((time.monotonic() - t) * 1e3)
        except PoolBusy:
            with lock:
                out["busy"] += 1
                out["busy_ms"].append((time.monotonic() - t) * 1e3)
        except Exception as exc:  # noqa: BLE001 - reported
            with lock:
                out["other"].append(repr(exc))
        finally:
            r.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    go.set()
    for t in threads:
        t.join(30)
    out["refused_full"] = lg_http(url)["refused_full"]
    return out


def lg_http(url: str) -> dict:
    from osdface_rtc.scale.loadgen import http_json

    return http_json(f"{url}/stats")


async def wait_for(pred, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await asyncio.to_thread(pred):
            return time.monotonic() - t0
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{what} not within {timeout_s:.0f} s")


async def inner(clip: Path, out: Path) -> dict:
    from osdface_rtc.io.clips import load_clip_yuv
    from osdface_rtc.rtc.client import StampedClipTrack
    from osdface_rtc.rtc.ice import use_loopback_candidates
    from osdface_rtc.scale import loadgen as lg

    use_loopback_candidates("only")
    env = lg.child_env([str(HERE)])
    pool_port = lg.free_port()
    # max batch 8 / max queued 16 faces: the burst below (12 x 8 faces) must overflow the queue
    pool_args = ["--num-cpus", "2", "--max-wait-ms", "15", "--max-batch", "8", "--max-queued", "16",
                 "--start-timeout", "150"]
    model = "py:scale_util:slow_stripes"
    t = time.monotonic()
    pool = lg.start_pool(model, pool_port, out / "pool1.log", extra=pool_args, env=env)
    report: dict = {"pool_start_s": round(time.monotonic() - t, 1)}
    servers = []
    try:
        spec = f"ray://127.0.0.1:{pool_port}/restorer?budget_ms=150&retry_after_s=0.5&timeout_s=1"
        for i in range(2):
            servers.append(lg.start_media_server(spec, lg.free_port(), out / f"media{i}.log", budget_ms=150,
                                                 env=env, extra=["--peer-timeout", "20"]))
        frames, _ = load_clip_yuv(clip, SIZE, 45)
        stop = asyncio.Event()
        tracks = [StampedClipTrack(frames, SIZE, FPS) for _ in servers]
        keep = lambda i: 45 <= i < 120 and i % 8 == 0  # noqa: E731 - sent in the healthy phase
        calls = [asyncio.ensure_future(lg.stream_until(s.url, tr, stop, keep=keep)) for s, tr in zip(servers, tracks)]

        def enhanced_counts() -> list[int]:
            counts = []
            for s in servers:
                st = lg.http_json(f"{s.url}/stats")
                counts.append(sum(v.get("enhanced", 0) for v in st.values()))
            return counts

        await wait_for(lambda: min(enhanced_counts()) > 0, 60, "both calls enhanced")
        phases = {}

        async def phase(name: str, seconds: float) -> None:
            m0, w0 = time.monotonic(), time.time()
            await asyncio.sleep(seconds)
            phases[name] = lg.Phase(name, (m0, time.monotonic()), (w0, time.time()))

        await phase("healthy", 6.0)
        report["pool_stats_healthy"] = lg.http_json(f"{pool.url}/stats")
        pool.kill()  # SIGKILL: Ray, Serve's proxy and the replica die at once
        # counters come from 2 Hz stats messages and frames in flight: start counting 1 s later
        await asyncio.sleep(1.0)
        report["down_s"] = 6.0
        await phase("pool_down", 6.0)
        t = time.monotonic()
        pool = await asyncio.to_thread(lg.start_pool, model, pool_port, out / "pool2.log", extra=pool_args, env=env)
        report["pool_restart_s"] = round(time.monotonic() - t, 1)
        base = enhanced_counts()
        report["resume_after_s"] = round(await wait_for(
            lambda: all(n > b for n, b in zip(enhanced_counts(), base)), 30, "enhancement resumed"), 1)
        await phase("resumed", 5.0)
        report["pool_stats_resumed"] = lg.http_json(f"{pool.url}/stats")
        stop.set()
        results = await asyncio.gather(*calls)
        report["burst"] = await asyncio.to_thread(burst, pool.url)
        report["phases"] = {name: lg.phase_report(results, p) for name, p in phases.items()}
        report["pixel_checks"] = pixel_check(results, frames)
        return report
    finally:
        for s in servers:
            s.stop()
        pool.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", action="store_true")
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(HERE)]
    report = asyncio.run(inner(args.clip, args.out))
    (args.out / "result.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
