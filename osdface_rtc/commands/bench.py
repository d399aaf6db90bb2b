"""`osdface-rtc bench`: loopback WebRTC latency/fps, pass-through vs enhancing server."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="stream a clip over loopback WebRTC: pass-through vs enhancing server",
        description="Streams a real clip over loopback WebRTC through a pass-through server and the "
        "enhancing server (child processes, one after the other), matching every returned frame by an "
        "id stamped in its corner. Reports fps, p50/p95/p99 end-to-end latency, drops, fallbacks and "
        "the latency enhancement adds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("clip", nargs="?", default=None,
                   help="video file (default: d9.mp4 from the shared videos folder)")
    p.add_argument("--resolution", default="480p", help="480p | 720p | 360p | WxH")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per server (after warm-up)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds ignored at the start")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--model", default=None, help="as for serve (default: shipped model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-ms", type=float, default=25.0)
    p.add_argument("--max-bitrate", type=int, default=None)
    p.add_argument("--fps", type=float, default=None, help="send rate (default: the clip's)")
    p.add_argument("--only", choices=("passthrough", "enhance"), default=None, help="run one server only")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON report (default: runs/bench/rtc-<resolution>-<codec>.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..paths import REPO_ROOT, videos_dir
    from ..rtc.bench import BenchConfig, format_report, parse_resolution, run_bench

    clip = Path(args.clip) if args.clip else videos_dir() / "d9.mp4"
    if not clip.is_file():
        print(f"osdface-rtc bench: clip not found: {clip} (give a video file or set OSDFACE_RTC_DATA)")
        return 2
    try:
        parse_resolution(args.resolution)
    except ValueError as exc:
        print(f"osdface-rtc bench: {exc}")
        return 2
    out = args.out or REPO_ROOT / "runs" / "bench" / f"rtc-{args.resolution}-{args.codec}.json"
    cfg = BenchConfig(
        clip=clip, resolution=args.resolution, duration_s=args.duration, warmup_s=args.warmup,
        codec=args.codec, model=args.model, device=args.device, budget_ms=args.budget_ms,
        max_bitrate=args.max_bitrate, fps=args.fps, out=out,
        modes=(args.only,) if args.only else ("passthrough", "enhance"),
    )
    report = asyncio.run(run_bench(cfg))
    print(format_report(report))
    print(f"wrote {out}")
    return 0
