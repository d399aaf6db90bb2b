"""`osdface-rtc eval`: quality (face-region PSNR / SSIM / identity) and speed of restorers.

Example::

    osdface-rtc eval --limit 200 --steps 1,2,4 --speed --out runs/eval
    osdface-rtc eval --model classical --baseline none --limit 50
    osdface-rtc eval --live --limit 100 --out runs/eval-live          # val faces in call-damaged frames
    osdface-rtc eval --video clip.mp4 --conditions x3-vp8-120k --out runs/eval-clip
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("osdface_rtc")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _levels(text: str) -> tuple[str, ...]:
    from ..data.degrade import LEVELS

    levels = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in levels if v not in LEVELS]
    if bad or not levels:
        raise argparse.ArgumentTypeError(f"levels must be from {','.join(LEVELS)}, got {text!r}")
    return levels


def _conditions(text: str) -> tuple[str, ...]:
    from ..data.call import parse_damage

    names = tuple(v.strip() for v in text.split(",") if v.strip())
    try:
        for n in names:
            parse_damage(n)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    if not names:
        raise argparse.ArgumentTypeError("no call condition given")
    return names


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score restorers on degraded val faces (PSNR/SSIM/identity, speed)",
        description="Degrade the val faces at fixed video-call levels and score the input, the "
        "baseline and the model in the face region. Writes eval.json, table.txt and grid.png.",
    )
    p.add_argument("--model", default=None,
                   help="model folder, 'classical', 'identity' or 'osdface:/dir' "
                        "(default: the shipped models/osdface-rtc-s160)")
    p.add_argument("--baseline", default="classical",
                   help="baseline restorer spec, or 'none' (default: classical)")
    p.add_argument("--limit", type=int, default=200, help="number of val faces (default 200)")
    p.add_argument("--levels", type=_levels, default="mild,medium,severe",
                   help="comma-separated degradation levels")
    p.add_argument("--seed", type=int, default=0, help="degradation seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--steps", type=_ints, default=(1,),
                   help="IDM iterative steps to evaluate, e.g. 1,2,4 (model restorers only)")
    p.add_argument("--speed", action="store_true",
                   help="also time ms/face at batch 1 and 8 (CUDA graphs too where supported)")
    p.add_argument("--batch-size", type=int, default=16, help="restore batch in the quality loop")
    p.add_argument("--face-size", type=int, default=128,
                   help="face size for built-in restorers (trained models bring their own)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="UTKFace folder (default: $OSDFACE_RTC_DATA/faces/utkface)")
    p.add_argument("--grid-faces", type=int, default=4, help="faces per level in grid.png")
    p.add_argument("--no-identity", action="store_true", help="skip the dlib identity metric")
    live = p.add_argument_group(
        "live path", "score whole frames damaged like a call (downscale + real VP8/H.264 at a "
        "call bitrate + upscale) through the full detect/align/restore/paste pipeline")
    live.add_argument("--live", action="store_true",
                      help="val faces placed in 640x480 webcam frames (--limit of them)")
    live.add_argument("--video", type=Path, nargs="+", default=[], metavar="CLIP",
                      help="real clips (face region = the detector's box on the clean frame)")
    live.add_argument("--conditions", type=_conditions, default=None,
                      help="comma-separated call conditions x<scale>-<vp8|h264>-<kbps>k "
                           "(default: x2-vp8-300k,x3-vp8-120k,x4-vp8-80k,x3-h264-150k)")
    live.add_argument("--max-frames", type=int, default=150, help="frames read from each clip")
    live.add_argument("--temporal", type=float, default=None,
                      help="weight of the pipeline's temporal filter of restored crops, in [0, 1); 0 = off "
                      "(default: TemporalConfig.weight, as `enhance`)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..paths import default_model_dir
    from ..restore import RestorerError

    if args.model is None and not (default_model_dir() / "config.json").exists():
        print(f"error: no shipped model at {default_model_dir()}; train one "
              "(osdface-rtc train) or pass --model DIR | classical | osdface:/dir")
        return 2
    try:
        if args.live or args.video:
            return _evaluate_live(args)
        return _evaluate(args)
    except RestorerError as e:
        print(f"error: {e}")
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}")
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.identity import INSTALL_HINT, load_identity
    from ..evaluate.report import format_speed, format_table, save_grid, write_json
    from ..evaluate.runner import EvalConfig, load_methods, run_eval
    from ..evaluate.speed import graph_variants, measure_speed
    from ..data.faces import load_faces

    cfg = EvalConfig(
        model=args.model,
        baseline=None if args.baseline in (None, "", "none") else args.baseline,
        levels=args.levels,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
        steps=args.steps,
        batch_size=args.batch_size,
        face_size=args.face_size,
        data_dir=args.data_dir,
        grid_faces=args.grid_faces,
        progress=not args.no_progress,
    )
    identity = None if args.no_identity else load_identity()
    if identity is None and not args.no_identity:
        log.warning(INSTALL_HINT)
    methods = load_methods(cfg)
    result = run_eval(cfg, identity, methods)
    table = format_table(result.rows, identity is not None)
    print(table)

    speed = []
    if args.speed:
        entries = []
        for m in methods[1:]:
            if m.steps is None:  # baselines and built-in restorers
                entries.append((m.label, m.restorer, m.steps, "eager"))
            else:
                entries += [(m.label, r, m.steps, accel) for accel, r in
                            graph_variants(m.restorer)]
        faces = load_faces("val", result.face_size, limit=8, data_dir=cfg.data_dir)
        speed = measure_speed(entries, faces)
        print()
        print(format_speed(speed))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text(table + ("\n\n" + format_speed(speed) if speed else "") + "\n")
    write_json(args.out / "eval.json", cfg, result, speed, identity is not None)
    save_grid(args.out / "grid.png", result)
    print(f"\nwrote {args.out / 'eval.json'}, {args.out / 'table.txt'}, {args.out / 'grid.png'}")
    return 0



def _evaluate_live(args: argparse.Namespace) -> int:
    from ..data.call import DEFAULT_CONDITIONS
    from ..data.livepairs import read_photo
    from ..evaluate.identity import INSTALL_HINT, load_identity
    from ..evaluate.live import LiveEvalConfig, LiveResult, eval_stills, eval_video
    from ..evaluate.live_report import format_live_table, save_curves, save_live_grid, write_live_json
    from ..evaluate.runner import EvalConfig, load_methods
    from ..data.faces import list_faces
    from ..pipeline.temporal import TemporalConfig

    for v in args.video:
        if not v.is_file():
            print(f"error: no such clip: {v}")
            return 2
    try:  # TemporalConfig checks the range
        temporal = TemporalConfig() if args.temporal is None else TemporalConfig(weight=args.temporal)
    except ValueError as exc:
        print(f"error: --temporal: {exc}")
        return 2
    cfg = LiveEvalConfig(conditions=args.conditions or DEFAULT_CONDITIONS, limit=args.limit,
                         max_frames=args.max_frames, seed=args.seed, grid_faces=args.grid_faces,
                         progress=not args.no_progress, temporal=temporal)
    methods = load_methods(EvalConfig(
        model=args.model, baseline=None if args.baseline in (None, "", "none") else args.baseline,
        device=args.device, face_size=args.face_size))
    identity = None if args.no_identity else load_identity()
    if identity is None and not args.no_identity:
        log.warning(INSTALL_HINT)
    result = LiveResult()
    if args.live:
        photos = [read_photo(p) for p in list_faces("val", args.data_dir)[: args.limit]]
        eval_stills(photos, methods, cfg, identity, result)
    for clip in args.video:
        eval_video(clip, methods, cfg, identity, result)
    table = format_live_table(result.rows, identity is not None)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text(table + "\n")
    names = {m.label: (m.restorer.name if m.restorer else "-") for m in methods}
    write_live_json(args.out / "eval_live.json", cfg, result, {"methods": names})
    save_live_grid(args.out / "grid.png", result)
    wrote = ["eval_live.json", "table.txt", "grid.png"]
    if save_curves(args.out / "curves.png", result):
        wrote.append("curves.png")
    print(f"\nwrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0
