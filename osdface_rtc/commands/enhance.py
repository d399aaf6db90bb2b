"""`osdface-rtc enhance IN -o OUT`: the live pipeline on video files, images or image folders."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("osdface_rtc.enhance")


def register(sub) -> None:
    p = sub.add_parser(
        "enhance",
        help="enhance faces in a video, an image or a folder of images",
        description="Enhance every face in a video (mp4/webm/mkv/mov/y4m; audio is kept), an "
        "image, or a folder of images/videos. Never overwrites the input.",
    )
    p.add_argument("input", type=Path, help="video file, image file, or folder")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (same kind as the input) or folder (for a folder input)")
    add_enhancer_args(p)
    p.add_argument("--json", type=Path, help="write the run summary as JSON here")
    p.add_argument("--max-pixels", type=float, default=None,
                   help="refuse inputs larger than this many pixels per image/frame (default 40e6; 0 = no limit)")
    p.set_defaults(func=run)


def add_enhancer_args(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that build a FaceEnhancer."""
    p.add_argument("--model", default=None,
                   help="model folder, 'classical', or 'osdface:/dir' (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                   help="model runtime: auto = OpenVINO on the CPU when installed, else torch")
    p.add_argument("--upscale", type=int, choices=(1, 2), default=1, help="output frame scale")
    p.add_argument("--strength", type=float, default=1.0, help="0 = original face .. 1 = fully restored")
    p.add_argument("--max-faces", type=int, default=8)
    p.add_argument("--min-face", type=int, default=32, help="ignore faces smaller than this (px)")
    p.add_argument("--detector", choices=("short", "full", "both", "auto"), default="both")
    p.add_argument("--temporal", type=float, default=None,
                   help="temporal filter of restored faces in videos: share of the previous frame's "
                   "face kept where the face is still, in [0, 1); 0 = off (default: TemporalConfig.weight)")
    p.add_argument("--steps", type=int, default=1,
                   help="diffusion steps (1 = one-step; >1 = IDM iterative mode, offline only)")


def build_enhancer(args: argparse.Namespace):
    from ..pipeline.enhancer import FaceEnhancer
    from ..pipeline.temporal import TemporalConfig
    from ..restorers import load_restorer

    if not 0.0 <= args.strength <= 1.0:
        raise SystemExit("--strength must be between 0 and 1")
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    try:  # TemporalConfig checks the range
        temporal = TemporalConfig() if args.temporal is None else TemporalConfig(weight=args.temporal)
    except ValueError as exc:
        raise SystemExit(f"--temporal: {exc}") from None
    kw = {"steps": args.steps} if args.steps != 1 else {}
    restorer = load_restorer(args.model, device=args.device, runtime=args.runtime, **kw)
    return FaceEnhancer(restorer=restorer, strength=args.strength, upscale=args.upscale,
                        max_faces=args.max_faces, min_face=args.min_face, detector=args.detector,
                        temporal=temporal)


def run(args: argparse.Namespace) -> int:
    from ..io.atomic import install_signal_cleanup, write_bytes_atomic
    from ..io.media import IMAGE_EXTS, MAX_PIXELS, VIDEO_EXTS, kind_of
    from .enhance_jobs import enhance_image, enhance_video, plan_jobs

    install_signal_cleanup()  # SIGTERM: partial outputs are removed, nothing half-written stays
    max_pixels = MAX_PIXELS if args.max_pixels is None else (int(args.max_pixels) or None)
    src, dst = args.input, args.output
    if not src.exists():
        log.error("%s: no such file or folder", src)
        return 2
    if dst.resolve() == src.resolve():
        log.error("refusing to write the output over the input (%s)", src)
        return 2
    try:
        jobs = plan_jobs(src, dst)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if not jobs:
        log.error("%s: nothing to enhance (images: %s; videos: %s)", src,
                  " ".join(sorted(IMAGE_EXTS)), " ".join(sorted(VIDEO_EXTS)))
        return 2
    try:
        enhancer = build_enhancer(args)
    except Exception as exc:  # noqa: BLE001 - a clear message for a bad model, no traceback
        log.error("cannot load the restorer: %s", exc)
        return 2
    log.info("restorer: %s (face size %d)", enhancer.restorer.name, enhancer.face_size)
    results = []
    for job_in, job_out in jobs:
        enhancer.reset()
        try:
            if kind_of(job_in) == "video":
                stats = enhance_video(enhancer, job_in, job_out, show_progress=True, max_pixels=max_pixels)
            else:
                stats = enhance_image(enhancer, job_in, job_out, max_pixels=max_pixels)
            results.append({"input": str(job_in), "output": str(job_out), "ok": True, **stats.summary()})
            print(f"{job_in} -> {job_out}\n{stats.format()}")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a folder
            log.error("%s: %s", job_in, exc)
            results.append({"input": str(job_in), "ok": False, "error": str(exc)})
    ok = sum(r["ok"] for r in results)
    if len(results) > 1:
        print(f"done: {ok} of {len(results)} files enhanced, {len(results) - ok} failed")
    if args.json:
        write_bytes_atomic(args.json, json.dumps(results, indent=2).encode())
    return 0 if ok else 1
