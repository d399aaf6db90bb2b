"""What a run leaves next to its weights: the loss plot and the model card.

:func:`plot_losses` draws ``loss.png`` from the JSONL loss log; :func:`write_model_card` writes
the model folder's ``README.md`` (data and licence, degradations, stages and losses, metrics,
CPU speed) and ``metrics.json``, scoring the model on the run's val pairs with the evaluation's
own :func:`~osdface_rtc.evaluate.metrics.mean_scores`.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..evaluate.metrics import face_mask, mean_scores
from ..model.network import OSDFaceNet
from ..model.restorer import to_tensor, to_uint8
from ..restore.classical import ClassicalRestorer
from .config import STAGES, TrainConfig

if TYPE_CHECKING:
    from .inputs import TrainData
    from .loop import Trainer


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_losses(log_file: Path, png: Path) -> bool:
    """Loss curves per stage (and val PSNR) as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_log(log_file)
    if not rows:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, stage in zip(axes, STAGES):
        rs = [r for r in rows if r["stage"] == stage and "loss" in r]
        for key in sorted({k for r in rs for k in r} - {"stage", "step", "minutes", "lr"}):
            pts = [(r["step"], r[key]) for r in rs if key in r]
            ax.plot(*zip(*pts), label=key)
        ax.set_title(f"stage {stage}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        if rs:
            ax.legend(fontsize=7)
    vs = [r for r in rows if any(k.startswith("psnr_") for k in r)]
    for key in sorted({k for r in vs for k in r if k.startswith("psnr_")}):
        axes[3].plot([r["step"] for r in vs], [r[key] for r in vs], label=key)
    axes[3].set_title("val face-region PSNR (EMA)")
    axes[3].set_xlabel("main step")
    if vs:
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return True


@torch.no_grad()
def run_model(model: OSDFaceNet, lq: np.ndarray, device: torch.device, batch: int = 16) -> np.ndarray:
    """``model`` over uint8 faces in batches (fp32), uint8 out."""
    return np.concatenate([to_uint8(model(to_tensor(lq[i:i + batch], device, torch.float32)))
                           for i in range(0, len(lq), batch)])


@torch.no_grad()
def evaluate_levels(model: OSDFaceNet, data: TrainData, device: torch.device) -> dict[str, dict[str, float]]:
    """Face-region PSNR / SSIM per level for the degraded input, the classical restorer and
    ``model`` (:func:`osdface_rtc.evaluate.metrics.mean_scores`, as ``osdface-rtc eval``)."""
    model = model.eval()
    mask = face_mask(data.val_hq.shape[1])
    classical = ClassicalRestorer(face_size=data.val_hq.shape[1])
    res: dict[str, dict[str, float]] = {}
    for lv, (lq, hq) in data.val.items():
        outs = {"input": lq, "classical": classical.restore(lq), "model": run_model(model, lq, device)}
        for name, out in outs.items():
            p, s = mean_scores(out, hq, mask)
            res.setdefault(name, {}).update({f"psnr_{lv}": p, f"ssim_{lv}": s})
    return res


@torch.no_grad()
def cpu_speed_ms(model: OSDFaceNet, batch: int, threads: int = 2, reps: int = 10) -> float:
    """Best-of-``reps`` CPU wall time per face (ms) at ``batch`` with ``threads`` torch threads."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        m = copy.deepcopy(model).cpu().float().eval()
        x = torch.zeros(batch, 3, m.config.face_size, m.config.face_size)
        m(x)
        best = math.inf
        for _ in range(reps):
            t = time.perf_counter()
            m(x)
            best = min(best, time.perf_counter() - t)
        return 1000 * best / batch
    finally:
        torch.set_num_threads(prev)


def write_model_card(out: Path, cfg: TrainConfig, trainer: Trainer, model: OSDFaceNet, data: TrainData,
                     minutes: float) -> None:
    """README.md and metrics.json next to the weights of ``model`` (the shipped EMA weights):
    data and licence, degradations, stages, losses, metrics, speed."""
    rows = read_log(trainer.log_file)
    steps_run = {st: max([r["step"] for r in rows if r["stage"] == st] or [0]) for st in STAGES}
    n_params = sum(p.numel() for p in model.parameters())
    weights = out / "diffusion_pytorch_model.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    metrics = evaluate_levels(model, data, trainer.device)
    levels = list(data.val)
    table = ["| method | " + " | ".join(f"{lv} PSNR / SSIM" for lv in levels) + " |",
             "|---|" + "---|" * len(levels)]
    for name, m in metrics.items():
        table.append(f"| {name} | " + " | ".join(f"{m[f'psnr_{lv}']:.2f} / {m[f'ssim_{lv}']:.4f}" for lv in levels) + " |")
    ms1, ms8 = cpu_speed_ms(model, 1), cpu_speed_ms(model, 8)
    mc = model.config
    live_text = ""
    if cfg.live_photos or cfg.pack:
        live_text = ("**Live-path pairs** (`osdface_rtc.data.livepairs`" + (", from the pack " + str(cfg.pack) if cfg.pack else "")
                     + "): train faces placed in webcam frames and the training clips, the whole frame "
                     "sent through a random call condition (downscale, real VP8/H.264 at a call bitrate), "
                     "cropped by the pipeline's own detector and aligner on the damaged frame; HQ from the "
                     "clean frame at the same affine.\n")
    text = f"""# osdface-rtc one-step face restorer ({mc.face_size}px)

OSDFace formulation (arXiv 2411.17163) trained from scratch in this project with diffusers
blocks: VAE encoder (f={2 ** (len(mc.vae_channels) - 1)}, {mc.latent_channels} latent channels) →
`UNet2DConditionModel` run once at t = {mc.timestep} on the LQ latent, conditioned by cross-attention
on {mc.vre_grid}×{mc.vre_grid} visual-prompt tokens from the VRE ({mc.codebook_size}-entry VQ codebook
learned on HQ faces) → x0 = (z − √(1−ᾱ)ε̂)/√ᾱ (SD-2.1 schedule) → decoder with encoder skips →
**residual** added to the LQ face. No text encoder. Deterministic (no latent sampling).
IDM iterative mode: `load_restorer(path, steps=N)`.

- Face size: **{mc.face_size}** px (the live default: UTKFace crops resized to {mc.face_size}², the
  pipeline's aligned-crop framing). Input/output: N×{mc.face_size}×{mc.face_size}×3 uint8 RGB.
- Parameters: {n_params / 1e6:.2f} M; weights {size_mb:.1f} MB (fp32 safetensors).
- CPU speed (torch {torch.__version__}, 2 threads, best of 10): **{ms1:.1f} ms/face at batch 1**,
  {ms8:.1f} ms/face at batch 8 (measured on the training machine at the end of training; the
  machine was shared, so these are upper-ish bounds).

## Data and licence
UTKFace "crop_part1" (aligned 200×200 faces, resized to {mc.face_size}²). **UTKFace is for
non-commercial research use only; so are these weights.** Fixed split by a hash of the file name
(`osdface_rtc.data.faces.split_of`). HQ targets: the sharpest {100 * cfg.sharp_fraction:.0f}% of the
train faces by variance of the Laplacian ({len(data.hq)} faces{"" if cfg.train_limit is None else f", first {cfg.train_limit} only"}).
{"HQ targets were cleaned first with `" + cfg.clean_targets_with + "` (IDM extrinsic enhancement)." if cfg.clean_targets_with else ""}

## Degradations
`osdface_rtc.data.degrade`: colour/exposure, Gaussian or motion blur, downscale ×1–8, Gaussian
and shot noise, **real VP8 / H.264 encoding through PyAV** (or JPEG), Lanczos/bicubic/bilinear
upscale back. {"Precomputed pool of " + str(cfg.pool_variants) + " random variants per face." if cfg.pool_variants else "Degraded on the fly."}
{live_text}Evaluation uses the fixed `mild` / `medium` / `severe` crop presets{" and live-path conditions" if cfg.live_photos or cfg.pack else ""}
(the table below); the pipeline-level numbers come from `osdface-rtc eval --live` / `--video`.

## Training (`osdface-rtc train`, batch {cfg.batch_size}, AdamW lr {cfg.lr}, EMA {cfg.ema_decay})
| stage | steps run | losses |
|---|---|---|
| A `vae` | {steps_run["vae"]} | L1 + {cfg.w_lap}·Laplacian-pyramid L1 + {cfg.w_latent}·latent L2 (HQ → HQ, no skips) |
| B `vre` | {steps_run["vre"]} | VRE features → HQ latent read-out (MSE); k-means codebook at half-way, then VQ codebook + {cfg.w_commit}·commitment |
| C `main` | {steps_run["main"]} | L1 + {cfg.w_lap}·Laplacian-pyramid L1 + {cfg.w_assoc}·LQ→HQ code association; from step {cfg.disc_start}: {cfg.w_adv}·hinge patch-GAN + {cfg.w_fm}·discriminator feature matching |

Wall time {minutes:.0f} min on {trainer.device.type.upper()}. No pretrained perceptual or
identity network exists offline, so the Laplacian pyramid and discriminator feature matching stand in
for LPIPS/DISTS, and there is no identity loss. Loss curves: `loss.png` in the run folder.

## Metrics ({len(data.val_hq)} val faces per level, face-region ellipse, `osdface_rtc.evaluate.metrics`)
{chr(10).join(table)}
"""
    (out / "README.md").write_text(text)
    (out / "metrics.json").write_text(json.dumps(dict(metrics=metrics, cpu_ms_per_face_b1=ms1,
                                                      cpu_ms_per_face_b8=ms8, steps=steps_run), indent=2))
