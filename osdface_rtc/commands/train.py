"""`osdface-rtc train`: train the one-step restorer (stages vae → vre → main) and save it."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the one-step restorer on the shared faces",
        description="Train OSDFaceNet in stages (VAE, VRE codebook, one-step UNet) and save a "
        "diffusers model folder (config.json + safetensors + README.md) into OUT/model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=("real", "gpu", "tiny"), default="real",
                   help="'real' = the shipped 128px model (CPU-sized, crop-level + live-path pairs), "
                        "'gpu' = a wider net from a packed pair set (python -m osdface_rtc.train.pack), "
                        "'tiny' = seconds-long smoke run")
    p.add_argument("--out", default="runs/osdface-rtc", help="run folder (checkpoints, logs, model/)")
    p.add_argument("--data", default=None, help="face folder (default: ../shared/data/faces/utkface)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--init", default=None, metavar="MODEL", help="start from a saved model folder (skips stages A/B)")
    p.add_argument("--clean-targets-with", default=None, metavar="MODEL",
                   help="IDM extrinsic enhancement: restore the HQ targets with MODEL first")
    p.add_argument("--steps-vae", type=int, default=None)
    p.add_argument("--steps-vre", type=int, default=None)
    p.add_argument("--steps-main", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock cap of the main stage")
    p.add_argument("--for-minutes", type=float, default=None,
                   help="stop THIS call after N minutes with a checkpoint and the model saved "
                        "(continue with --resume): e.g. device calls of at most 9 minutes")
    p.add_argument("--pack", default=None, help="train/val pairs from this pack tar (see --preset gpu)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override any TrainConfig field, e.g. --set disc_start=500")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """TrainConfig from the preset plus the command-line overrides."""
    from ..train.config import TrainConfig

    over: dict = {"out": args.out, "data": args.data, "device": args.device, "init": args.init,
                  "clean_targets_with": args.clean_targets_with}
    for key in ("max_minutes", "batch_size", "lr", "pack"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    if args.no_progress:
        over["progress"] = False
    for item in args.set:
        key, _, value = item.partition("=")
        over[key.strip()] = json.loads(value)
    cfg = TrainConfig.preset(args.preset, **over)
    for stage in ("vae", "vre", "main"):
        n = getattr(args, f"steps_{stage}")
        if n is not None:
            cfg.steps = {**cfg.steps, stage: n}
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    out = train(build_config(args), resume=args.resume, for_minutes=args.for_minutes)
    print(f"model saved to {out}")
    return 0
