"""Multi-session benchmark of the restorer pool: ``python -m osdface_rtc.scale.bench``.

For each restorer (``--models``) and each session count N (``--sessions``), on loopback WebRTC
at the clip's frame rate (every frame stamped with its id, as in ``osdface-rtc bench``):

- ``pool``:      1 restorer pool (``restorer-serve``, local Ray on 127.0.0.1) + 2 media servers
                 (``serve --model ray://...``), sessions spread over the two servers;
- ``inproc``:    1 media server with the restorer in-process (today's setup);
- ``passthrough`` baselines of both topologies (same N), so "added latency" is enhancement's own.

Per run: per-session fps and p50/p95 latency, outcomes (enhanced / re-warped / original / errors),
the media servers' mean restore round trip, and the batch sizes the pool formed. Also the remote
hop at batch 1 (sequential calls: pool round trip vs the same restorer in this process).
Writes JSON (``--out``) and prints a table. Everything runs on 127.0.0.1; run it inside
``unshare -n`` (after ``ip link set lo up``) to be sure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.runner import BUILTIN_SPECS
from ..io.clips import load_clip_yuv, parse_resolution
from ..paths import default_model_dir
from ..pipeline.live import LiveConfig
from ..rtc.bench import fetch_metrics, machine_info, stage_means_ms
from ..rtc.client import StampedClipTrack
from ..rtc.latency import summarize
from ..rtc.ice import use_loopback_candidates
from . import loadgen as lg

log = logging.getLogger("osdface_rtc")


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def _outcomes(metrics: dict[str, float]) -> dict[str, float]:
    out: Counter = Counter()
    for k, v in metrics.items():
        if k.startswith("osdface_frames_out_total{"):
            out[k.split('outcome="')[1].split('"')[0]] += v
    return dict(out)


def _pool_delta(after: dict, before: dict) -> dict[str, Any]:
    def diff(key: str) -> dict[str, int]:
        d = Counter({int(k): v for k, v in after[key].items()})
        d.subtract(Counter({int(k): v for k, v in before.get(key, {}).items()}))
        return {str(k): v for k, v in sorted(d.items()) if v}

    faces = diff("batch_faces")
    n = sum(faces.values())
    return {"batches": n, "batch_faces": faces, "batch_requests": diff("batch_requests"),
            "mean_batch_faces": round(sum(int(k) * v for k, v in faces.items()) / max(n, 1), 2),
            "mixed_batches": after["mixed_batches"] - before.get("mixed_batches", 0),
            "refused_full": after["refused_full"] - before.get("refused_full", 0),
            "expired": after["expired"] - before.get("expired", 0),
            "compute_ms_ema": after.get("compute_ms_ema")}


async def run_sessions(urls: list[str], n: int, frames, size, fps: float, duration_s: float,
                       warmup_s: float) -> list[dict[str, Any]]:
    stop = asyncio.Event()
    calls = [asyncio.ensure_future(lg.stream_until(urls[i % len(urls)], StampedClipTrack(frames, size, fps), stop))
             for i in range(n)]
    await asyncio.sleep(warmup_s + duration_s + 1.0)  # + connection set-up
    stop.set()
    results = await asyncio.gather(*calls)
    return [summarize(r, warmup_s=warmup_s) for r in results]


async def measure(name: str, urls: list[str], n: int, frames, size, fps, args, pool_url: str | None = None) -> dict:
    m0 = [await fetch_metrics(u) for u in urls]
    p0 = lg.http_json(f"{pool_url}/stats") if pool_url else None
    t0 = time.time()
    sessions = await run_sessions(urls, n, frames, size, fps, args.duration, args.warmup)
    await asyncio.sleep(0.5)
    m1 = [await fetch_metrics(u) for u in urls]
    d = [_delta(b, a) for a, b in zip(m0, m1)]
    merged: Counter = Counter()
    for x in d:
        merged.update(x)
    run = {
        "mode": name, "sessions": n, "t_start": time.strftime("%H:%M:%S", time.gmtime(t0)),
        "loadavg_1m": round(__import__("os").getloadavg()[0], 2),
        "fps_out": [s["fps_out"] for s in sessions], "p50_ms": [s["latency_ms"]["p50"] for s in sessions],
        "p95_ms": [s["latency_ms"]["p95"] for s in sessions],
        "dropped": [s["frames_dropped"] for s in sessions],
        "outcomes": _outcomes(dict(merged)), "stage_mean_ms": stage_means_ms(dict(merged)),
    }
    if pool_url:
        run["pool"] = _pool_delta(lg.http_json(f"{pool_url}/stats"), p0)
    log.info("%s N=%d: fps %s p95 %s", name, n, run["fps_out"], run["p95_ms"])
    return run


def has_runtime(spec: str | None, runtime: str) -> bool:
    """Whether ``runtime`` is a choice to pass on: a model folder (built-in and ``py:`` restorers
    have no runtime) and not ``"auto"``."""
    return runtime != "auto" and spec not in BUILTIN_SPECS and not (spec or "").startswith("py:")


def runtime_args(spec: str | None, runtime: str) -> list[str]:
    """``--runtime`` for ``restorer-serve`` when :func:`has_runtime`, else nothing."""
    return ["--runtime", runtime] if has_runtime(spec, runtime) else []


def hop_overhead(pool_url: str, model: str | None, face_size: int, calls: int = 30,
                 runtime: str = "auto") -> dict[str, float]:
    """Sequential batch-1 calls: pool round trip vs the same restorer in this process."""
    from ..device import configure_cpu
    from ..restore.remote import RemoteConfig, RemoteRestorer
    from ..restorers import load_restorer

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (1, face_size, face_size, 3), dtype=np.uint8)
    remote = RemoteRestorer(RemoteConfig(url=pool_url, budget_ms=0))  # no batching wait
    configure_cpu("cpu", None)  # as in the media server and the pool's replica: 1 torch/cv2 thread
    local = load_restorer(model, device="cpu", runtime=runtime if has_runtime(model, runtime) else "auto")
    before = lg.http_json(f"{pool_url}/stats")
    rt, lt = [], []
    for _ in range(calls + 3):  # interleaved, so both see the same background load
        t = time.perf_counter()
        remote.restore(crop)
        rt.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        local.restore(crop)
        lt.append((time.perf_counter() - t) * 1e3)
    after = lg.http_json(f"{pool_url}/stats")
    remote.close()
    r, l_ = float(np.median(rt[3:])), float(np.median(lt[3:]))
    return {"remote_ms_p50": round(r, 2), "remote_ms_p95": round(float(np.percentile(rt[3:], 95)), 2),
            "local_ms_p50": round(l_, 2), "local_ms_p95": round(float(np.percentile(lt[3:], 95)), 2),
            "hop_overhead_ms_p50": round(r - l_, 2), "pool_compute_ms_ema": after.get("compute_ms_ema"),
            "pool_batches": after["batches"] - before["batches"]}


async def bench_model(model: str, args, frames, size, fps, out_dir: Path, env) -> dict[str, Any]:
    rep: dict[str, Any] = {"model": model, "runs": []}
    spec = None if model == "shipped" else model
    pool_model = spec or str(default_model_dir())
    port = lg.free_port()
    rt = runtime_args(spec, args.runtime)
    pool = lg.start_pool(pool_model, port, out_dir / f"pool-{model}.log",
                         extra=["--num-cpus", "2", "--max-wait-ms", str(args.max_wait_ms), *rt], env=env)
    try:
        info = lg.http_json(f"{pool.url}/info")
        rep["hop"] = await asyncio.to_thread(hop_overhead, pool.url, spec, int(info["face_size"]), args.hop_calls,
                                             args.runtime)
        log.info("hop overhead %s: %s", model, rep["hop"])
        remote = f"ray://127.0.0.1:{port}/restorer"
        media = [lg.start_media_server(remote, lg.free_port(), out_dir / f"media{i}-{model}.log",
                                       budget_ms=args.budget_ms, env=env) for i in range(2)]
        try:
            for n in args.sessions:
                rep["runs"].append(await measure("pool", [m.url for m in media], n, frames, size, fps, args, pool.url))
        finally:
            for m in media:
                m.stop()
    finally:
        pool.stop()
    m = lg.start_media_server(spec or pool_model, lg.free_port(), out_dir / f"inproc-{model}.log",
                              budget_ms=args.budget_ms, env=env, extra=rt)
    try:
        for n in args.sessions:
            rep["runs"].append(await measure("inproc", [m.url], n, frames, size, fps, args))
    finally:
        m.stop()
    return rep


async def hop_only(args, out_dir: Path, env) -> list[dict[str, Any]]:
    """Only the batch-1 remote hop, for each model (``identity`` isolates the transport)."""
    out = []
    for model in args.models:
        spec = None if model == "shipped" else model
        pool_model = spec or str(default_model_dir())
        pool = lg.start_pool(pool_model, lg.free_port(), out_dir / f"hop-{model}.log",
                             extra=["--num-cpus", "2", *runtime_args(spec, args.runtime)], env=env)
        try:
            face_size = int(lg.http_json(f"{pool.url}/info")["face_size"])
            hop = await asyncio.to_thread(hop_overhead, pool.url, spec, face_size, args.hop_calls, args.runtime)
        finally:
            pool.stop()
        log.info("hop %s: %s", model, hop)
        out.append({"model": model, "hop": hop, "loadavg_1m": round(__import__("os").getloadavg()[0], 2)})
    return out


async def bench_passthrough(args, frames, size, fps, out_dir: Path, env) -> list[dict]:
    runs = []
    servers = [lg.start_media_server("classical", lg.free_port(), out_dir / f"pass{i}.log", env=env,
                                     extra=["--passthrough"]) for i in range(2)]
    try:
        for n in args.sessions:
            runs.append(await measure("passthrough-2", [s.url for s in servers], n, frames, size, fps, args))
            runs.append(await measure("passthrough-1", [servers[0].url], n, frames, size, fps, args))
    finally:
        for s in servers:
            s.stop()
    return runs


def held(runs: list[dict], base: dict[int, dict], fps_min: float, p95_max: float) -> int:
    """Largest N whose every session has fps >= fps_min and p95 - baseline p95 <= p95_max."""
    best = 0
    for r in sorted(runs, key=lambda r: r["sessions"]):
        b = base.get(r["sessions"])
        if b is None:
            continue
        added = max(r["p95_ms"]) - float(np.mean(b["p95_ms"]))
        if min(r["fps_out"]) >= fps_min and added <= p95_max:
            best = r["sessions"]
    return best


def format_report(rep: dict) -> str:
    lines = []
    base = {(r["mode"], r["sessions"]): r for r in rep["passthrough"]}
    lines.append(f"{'model':<10} {'mode':<14} {'N':>2} {'fps/session':>18} {'p50':>16} {'p95':>16} "
                 f"{'+p95':>6} {'enh/rewarp/orig/err %':>22} {'restore ms':>10} {'batches (faces:count)':<28}")
    for r in rep["passthrough"]:
        lines.append(f"{'-':<10} {r['mode']:<14} {r['sessions']:>2} {str(r['fps_out']):>18} {str(r['p50_ms']):>16} "
                     f"{str(r['p95_ms']):>16}")
    for m in rep["models"]:
        for r in m["runs"]:
            b = base.get(("passthrough-2" if r["mode"] == "pool" else "passthrough-1", r["sessions"]))
            added = max(r["p95_ms"]) - float(np.mean(b["p95_ms"])) if b else float("nan")
            oc = r["outcomes"]
            tot = sum(oc.values()) or 1
            shares = "/".join(f"{100 * oc.get(k, 0) / tot:.0f}" for k in ("enhanced", "cached", "original", "error"))
            lines.append(f"{m['model']:<10} {r['mode']:<14} {r['sessions']:>2} {str(r['fps_out']):>18} "
                         f"{str(r['p50_ms']):>16} {str(r['p95_ms']):>16} {added:>+6.0f} {shares:>22} "
                         f"{r['stage_mean_ms'].get('restore', float('nan')):>10.1f} "
                         f"{json.dumps(r.get('pool', {}).get('batch_faces', '')):<28}")
        lines.append(f"{m['model']}: hop at batch 1: {m['hop']}")
        lines.append(f"{m['model']}: calls held (fps >= {rep['criteria']['fps']}, +p95 <= {rep['criteria']['p95_ms']} ms): "
                     f"in-process {m['held']['inproc']}, pool {m['held']['pool']}")
    return "\n".join(lines)


async def main_async(args) -> dict:
    use_loopback_candidates("only")
    size = parse_resolution(args.resolution)
    frames, clip_fps = load_clip_yuv(args.clip, size, 150)
    fps = args.fps or clip_fps
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    env = lg.child_env()
    if args.hop_only:
        rep = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "machine": machine_info(),
               "hop_only": await hop_only(args, out_dir, env)}
        args.out.write_text(json.dumps(rep, indent=1))
        return rep
    rep: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "machine": machine_info(),
                           "config": {k: str(v) for k, v in vars(args).items()}, "fps": fps, "size": list(size),
                           "criteria": {"fps": args.fps_min, "p95_ms": args.p95_max}}
    rep["passthrough"] = await bench_passthrough(args, frames, size, fps, out_dir, env)
    rep["models"] = []
    for model in args.models:
        m = await bench_model(model, args, frames, size, fps, out_dir, env)
        b2 = {r["sessions"]: r for r in rep["passthrough"] if r["mode"] == "passthrough-2"}
        b1 = {r["sessions"]: r for r in rep["passthrough"] if r["mode"] == "passthrough-1"}
        m["held"] = {"pool": held([r for r in m["runs"] if r["mode"] == "pool"], b2, args.fps_min, args.p95_max),
                     "inproc": held([r for r in m["runs"] if r["mode"] == "inproc"], b1, args.fps_min, args.p95_max)}
        rep["models"].append(m)
        args.out.write_text(json.dumps(rep, indent=1))
    rep["loadavg_end"] = list(__import__("os").getloadavg())
    args.out.write_text(json.dumps(rep, indent=1))
    return rep


def main(argv: list[str] | None = None) -> int:
    from ..paths import videos_dir

    ap = argparse.ArgumentParser(prog="python -m osdface_rtc.scale.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=videos_dir() / "d9.mp4")
    ap.add_argument("--resolution", default="480p")
    ap.add_argument("--fps", type=float, default=None)
    ap.add_argument("--models", nargs="+", default=["classical", "shipped"], help="load_restorer specs; 'shipped'")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--budget-ms", type=float, default=LiveConfig().budget_ms)
    ap.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                    help="model runtime of the pool replicas and the in-process server (model folders only)")
    ap.add_argument("--max-wait-ms", type=float, default=4.0)
    ap.add_argument("--fps-min", type=float, default=25.0)
    ap.add_argument("--p95-max", type=float, default=50.0)
    ap.add_argument("--out", type=Path, default=Path("runs/scale/bench.json"))
    ap.add_argument("--hop-only", action="store_true", help="only the batch-1 remote hop per model")
    ap.add_argument("--hop-calls", type=int, default=30, help="sequential calls per hop measurement")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rep = asyncio.run(main_async(args))
    print(json.dumps(rep["hop_only"], indent=1) if args.hop_only else format_report(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
