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
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                   help="model runtime: auto = OpenVINO on the CPU when installed, else torch")
    p.add_argument("--budget-ms", type=float, default=argparse.SUPPRESS,
                   help="the server's --budget-ms (default: the server's, TrackConfig.budget_ms)")
    p.add_argument("--max-bitrate", type=int, default=None)
    p.add_argument("--fps", type=float, default=None, help="send rate (default: the clip's)")
    p.add_argument("--sessions", default="1",
                   help="concurrent client peers; a list (1,2,4) runs each, with --faces as a matrix")
    p.add_argument("--faces", default="1", help="faces tiled into the clip (K side-by-side tiles); a list runs each")
    p.add_argument("--plot", type=Path, default=None,
                   help="latency CDF PNG, one line per configuration (default with lists: next to --out)")
    p.add_argument("--only", choices=("passthrough", "enhance"), default=None, help="run one server only")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON report (default: runs/bench/rtc-<resolution>-<codec>.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..paths import REPO_ROOT, videos_dir
    from ..io.clips import parse_resolution
    from ..rtc.bench import BenchConfig, format_report, run_bench

    clip = Path(args.clip) if args.clip else videos_dir() / "d9.mp4"
    if not clip.is_file():
        print(f"osdface-rtc bench: clip not found: {clip} (give a video file or set OSDFACE_RTC_DATA)")
        return 2
    try:
        parse_resolution(args.resolution)
    except ValueError as exc:
        print(f"osdface-rtc bench: {exc}")
        return 2
    try:
        sessions, faces = _int_list(args.sessions, "--sessions"), _int_list(args.faces, "--faces")
    except ValueError as exc:
        print(f"osdface-rtc bench: {exc}")
        return 2
    matrix = len(sessions) > 1 or len(faces) > 1 or args.plot is not None
    name = f"rtc-{args.resolution}-{args.codec}" + (
        f"-s{'_'.join(map(str, sessions))}-f{'_'.join(map(str, faces))}" if matrix else "")
    out = args.out or REPO_ROOT / "runs" / "bench" / f"{name}.json"
    cfg = BenchConfig(
        clip=clip, resolution=args.resolution, duration_s=args.duration, warmup_s=args.warmup,
        codec=args.codec, model=args.model, device=args.device, runtime=args.runtime,
        max_bitrate=args.max_bitrate, fps=args.fps, out=out,
        modes=(args.only,) if args.only else ("passthrough", "enhance"),
        sessions=sessions[0], faces=faces[0],
        **({"budget_ms": args.budget_ms} if hasattr(args, "budget_ms") else {}),  # else BenchConfig's
    )
    if matrix:
        import json

        from ..rtc.bench_load import format_matrix, run_matrix

        plot = args.plot or out.with_suffix(".png")
        doc = asyncio.run(run_matrix(cfg, sessions, faces, plot))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        for row in doc["rows"]:
            print(format_report(row["report"]))
        print(format_matrix(doc))
        print(f"wrote {out}" + (f" and {doc['plot']}" if doc.get("plot") else ""))
        return 0
    report = asyncio.run(run_bench(cfg))
    print(format_report(report))
    print(f"wrote {out}")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes a number or a comma-separated list, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > 16:
        raise ValueError(f"{flag}: numbers from 1 to 16 expected, got {text!r}")
    return values
