"""Time the released OSDFace architecture with random weights: eager vs CUDA graph vs compile.

No release files needed: the model is built at paper size (SD-2.1-base UNet + SD VAE + the
release's VRE, 512² faces) with random weights, so anyone with a GPU can measure it::

    python -m osdface_rtc.model.release_bench --size paper --batch 1 --out release_bench.json

``--size tiny`` builds a toy model (CPU smoke test). Each mode is timed end to end through
``ReleaseRestorer.restore`` (uint8 in, uint8 out, so host↔device copies are included); a mode
that fails (e.g. ``compile`` without a working Triton) records its error instead of a time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..device import resolve_device
from .accel import ACCEL_MODES
from .formulation import make_scheduler
from .release import OSDFaceRelease, ReleaseRestorer
from .vre_release import EmbeddingChange, ReleaseVRE, VREConfig


@dataclass(frozen=True)
class SizePreset:
    """Architecture sizes of one benchmark model."""

    face_size: int
    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    vre: VREConfig = VREConfig()
    embedding: tuple[int, int, int] = (512, 256, 1024)  # EmbeddingChange in/hidden/out


PRESETS: dict[str, SizePreset] = {
    # SD-2.1-base (unet/config.json, vae/config.json) + the release's VRE.
    "paper": SizePreset(
        face_size=512,
        unet=dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), sample_size=512, scaling_factor=0.18215,
        ),
    ),
    # Toy sizes with the same structure (tests, CPU smoke runs).
    "tiny": SizePreset(
        face_size=32,
        unet=dict(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 32), sample_size=32,
        ),
        vre=VREConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(2,),
                      z_channels=32, embed_dim=32, n_embed=16),
        embedding=(32, 16, 32),
    ),
}


def build_random_release(preset: SizePreset, seed: int = 0) -> OSDFaceRelease:
    """The release architecture at ``preset`` sizes with random weights (fp32, CPU)."""
    torch.manual_seed(seed)
    vre = ReleaseVRE(preset.vre, EmbeddingChange(*preset.embedding))
    vre.codebook.data.normal_()
    return OSDFaceRelease(
        UNet2DConditionModel(**preset.unet), AutoencoderKL(**preset.vae), vre, make_scheduler()
    )


def time_mode(net: OSDFaceRelease, device: torch.device, face_size: int, batch: int,
              accel: str, steps: int, iters: int, warmup: int = 3) -> dict:
    """Per-call wall times (ms) of ``restore`` on random faces; ``first_ms`` includes capture."""
    restorer = ReleaseRestorer(net, device, face_size=face_size, steps=steps, accel=accel)
    faces = np.random.default_rng(0).integers(0, 256, (batch, face_size, face_size, 3), np.uint8)
    t0 = time.perf_counter()
    restorer.restore(faces)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        restorer.restore(faces)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        restorer.restore(faces)
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "first_ms": round(first_ms, 2),
        "p50_ms": round(statistics.median(times), 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "min_ms": round(min(times), 3),
        "iters": iters,
    }


def run(size: str, device: str, batch: int, modes: list[str], steps: int, iters: int) -> dict:
    """Benchmark every mode; returns the JSON-able report."""
    dev = resolve_device(device)
    preset = PRESETS[size]
    net = build_random_release(preset)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    net = net.to(dev, dtype).eval().requires_grad_(False)
    report = {
        "size": size,
        "face_size": preset.face_size,
        "batch": batch,
        "steps": steps,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "results": {},
    }
    for mode in modes:
        if mode != "none" and dev.type != "cuda":
            report["results"][mode] = {"skipped": "needs CUDA"}
            continue
        try:
            report["results"][mode] = time_mode(net, dev, preset.face_size, batch, mode, steps, iters)
        except Exception as e:  # record and go on: one failing mode must not hide the others
            report["results"][mode] = {"error": repr(e)}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--modes", default=",".join(ACCEL_MODES),
                    help=f"comma-separated subset of {ACCEL_MODES}")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("release_bench.json"))
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = sorted(set(modes) - set(ACCEL_MODES))
    if bad:
        ap.error(f"unknown modes {bad}")
    report = run(args.size, args.device, args.batch, modes, args.steps, args.iters)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
