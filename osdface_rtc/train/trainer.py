"""Training the one-step restorer (:class:`~osdface_rtc.model.network.OSDFaceNet`) in stages.

Stage A ``vae``   – the VAE alone on sharp HQ faces (no skips, image head): L1 + Laplacian-pyramid
                    loss + a small latent L2 penalty; then ``latent_scale`` = 1/std of HQ latents.
Stage B ``vre``   – the VRE encoder on HQ faces learns features that predict the HQ latent (a
                    linear read-out per grid cell); half-way the codebook is k-means initialised on
                    HQ features, then trained VQ-style (codebook + commitment losses).
Stage C ``main``  – the whole restorer on (LQ, HQ) pairs, one step at the fixed t: pixel L1 +
                    Laplacian-pyramid L1 (perceptual substitute, no pretrained nets exist offline)
                    + association (LQ VRE features → the HQ face's code, frozen HQ VRE copy)
                    + after ``disc_start`` a hinge patch-GAN term and discriminator feature
                    matching. The codebook is frozen. An EMA of the weights is what gets shipped.

Data: sharp UTKFace train faces (top ``sharp_fraction`` by variance of the Laplacian) from
:func:`osdface_rtc.train.data.load_faces`, LQ from :mod:`osdface_rtc.train.degrade` (a
precomputed pool of ``pool_variants`` random degradations per face, codec included).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import resolve_device
from ..model.network import OSDFaceNet
from ..model.restorer import to_tensor, to_uint8

if TYPE_CHECKING:
    from .data import ConcatPairs, PairDataset

log = logging.getLogger("osdface_rtc")

STAGES: tuple[str, ...] = ("vae", "vre", "main")

#: Network sizes per preset (``OSDFaceNet`` keyword arguments).
#: The GPU preset: the same formulation with a 1.5x wider UNet (~2x the UNet FLOPs; the live CPU
#: runtime must stay <= 40 ms/face: measure before shipping).
GPU_MODEL: dict = dict(face_size=128, latent_channels=8, vae_channels=(16, 32, 32),
                       unet_channels=(48, 96, 144), unet_attn_levels=1, attention_head_dim=48,
                       prompt_dim=128, vre_channels=32, vre_grid=8, codebook_size=256,
                       code_dim=64, norm_num_groups=8)
TINY_MODEL: dict = dict(face_size=32, latent_channels=4, vae_channels=(8, 16), unet_channels=(16, 32),
                        attention_head_dim=8, prompt_dim=16, vre_channels=8, vre_grid=4,
                        codebook_size=16, code_dim=8, norm_num_groups=4)
REAL_MODEL: dict = dict(face_size=128, latent_channels=8, vae_channels=(16, 32, 32),
                        unet_channels=(32, 64, 96), unet_attn_levels=1, attention_head_dim=32,
                        prompt_dim=128, vre_channels=32, vre_grid=8, codebook_size=256,
                        code_dim=64, norm_num_groups=8)


@dataclass
class TrainConfig:
    """Everything a run depends on (saved next to the checkpoints as ``train_config.json``)."""

    out: str = "runs/osdface-rtc-s128"
    data: str | None = None  # face folder (default: osdface_rtc.paths.faces_dir())
    model: dict = field(default_factory=lambda: dict(REAL_MODEL))
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (fp32 on CPU regardless)
    threads: int | None = None  # torch CPU threads (1 is much faster on a contended CPU)
    seed: int = 0
    train_limit: int | None = None  # first N train faces (before the sharpness filter)
    sharp_fraction: float = 0.5  # keep the sharpest share of train faces as HQ targets
    pool_variants: int = 4  # precomputed LQ variants per face (0 = degrade inline)
    pool_workers: int = 2
    batch_size: int = 8
    steps: dict = field(default_factory=lambda: {"vae": 300, "vre": 200, "main": 100_000})
    max_minutes: float | None = None  # wall-clock cap for stage "main" (then finish and save)
    lr: float = 5e-4
    lr_decay_from: float = 0.7  # main stage: cosine LR decay over the last 30 % (steps or minutes)
    lr_final: float = 0.1  # final LR as a fraction of ``lr``
    lr_disc: float = 2e-4
    ema_decay: float = 0.999
    w_lap: float = 1.0  # Laplacian-pyramid L1
    w_latent: float = 1e-4  # stage A latent L2 penalty
    w_commit: float = 0.25  # stage B VQ commitment
    w_assoc: float = 0.1  # stage C LQ→HQ code association
    w_adv: float = 0.01  # stage C generator hinge loss (after disc_start)
    w_fm: float = 0.5  # stage C discriminator feature matching (after disc_start)
    disc_start: int = 1000  # main-stage step where the GAN terms switch on
    disc_channels: int = 32
    kmeans_faces: int = 1024
    val_count: int = 24  # faces per level for the periodic val PSNR
    log_every: int = 10
    eval_every: int = 250
    ckpt_every: int = 100
    live_photos: int = 0  # live-path pairs from this many sharp train photos (-1 = all; 0 = off)
    live_clips: bool = True  # with live_photos: also the clips in <data>/videos/train
    live_clip_variants: int = 2  # random call conditions per training clip
    live_val_conditions: tuple[str, ...] = ("x2-vp8-300k", "x3-vp8-120k", "x4-vp8-80k")
    pack: str | None = None  # train/val pairs from a tar of osdface_rtc.train.pack (no faces folder)
    slim_ckpt: bool = False  # checkpoints without optimiser state, weights in bf16 (small to carry)
    clean_targets_with: str | None = None  # IDM extrinsic: restore the HQ targets first
    init: str | None = None  # start from a saved model folder (skips stages A and B)
    init_face_size: int | None = None  # with init: re-target it to this face size (see retarget)
    progress: bool = True

    @classmethod
    def preset(cls, name: str, **overrides) -> TrainConfig:
        """``"real"`` (the shipped model: crop-level + live-path pairs, CPU-sized), ``"gpu"``
        (a wider net trained from scratch at batch 64 on a packed pair set, in calls of a few
        minutes with slim checkpoints) or ``"tiny"`` (tests: seconds on CPU)."""
        if name == "real":
            cfg = cls(live_photos=-1)
        elif name == "gpu":
            cfg = cls(model=dict(GPU_MODEL), pack=".pack/pairs.tar", batch_size=64, lr=5e-4,
                      steps={"vae": 1500, "vre": 800, "main": 200_000}, max_minutes=22.0,
                      lr_decay_from=0.6, ema_decay=0.999, disc_start=200_000, val_count=48,
                      eval_every=500, ckpt_every=250, slim_ckpt=True, progress=False,
                      pool_workers=8)
        elif name == "tiny":
            cfg = cls(model=dict(TINY_MODEL), train_limit=48, sharp_fraction=1.0, pool_variants=0,
                      batch_size=4, steps={"vae": 5, "vre": 6, "main": 40}, lr=2e-3,
                      ema_decay=0.5, disc_start=20, kmeans_faces=32, val_count=4, log_every=5,
                      eval_every=15, ckpt_every=10, progress=False, disc_channels=8,
                      threads=1)
        else:
            raise ValueError(f"unknown preset {name!r}: 'real', 'gpu' or 'tiny'")
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"unknown config fields {sorted(bad)}")
        return replace(cfg, **overrides)


# ----------------------------------------------------------------------------- losses

def laplacian_pyramid_l1(x: torch.Tensor, y: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 between Laplacian pyramids (band-pass detail at several scales; penalises blur)."""
    loss = x.new_zeros(())
    for _ in range(levels):
        xd, yd = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        xb = x - F.interpolate(xd, scale_factor=2, mode="bilinear", align_corners=False)
        yb = y - F.interpolate(yd, scale_factor=2, mode="bilinear", align_corners=False)
        loss = loss + (xb - yb).abs().mean()
        x, y = xd, yd
    return loss


class PatchDiscriminator(nn.Module):
    """Small PatchGAN (spectral-normalised); returns the logits map and intermediate features."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        sn = nn.utils.spectral_norm
        blocks, c_in = [], 3
        for i in range(layers):
            c_out = channels * 2**i
            blocks.append(nn.Sequential(sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = sn(nn.Conv2d(c_in, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return self.head(x), feats


def kmeans(x: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> torch.Tensor:
    """Plain k-means (k-means++-free: random distinct init) on rows of ``x``; returns k centres."""
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        idx = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[idx == j]
            if len(members):
                centres[j] = members.mean(0)
            else:  # re-seed an empty cluster with a random point
                centres[j] = x[torch.randint(len(x), (1,), generator=g)].squeeze(0)
    return centres


def retarget(net: OSDFaceNet, face_size: int) -> OSDFaceNet:
    """The same weights as a model for another face size.

    Every layer of :class:`OSDFaceNet` is convolutional or attention over tokens, so the weights
    do not depend on the face size; only the VRE grid scales with it (``face_size / grid`` stays
    the same power of two, e.g. 128/8 -> 160/10 or 192/12). Fine-tune afterwards: the features
    were learned at the old scale.
    """
    cfg = {k: v for k, v in net.config.items() if not k.startswith("_")}
    cell = cfg["face_size"] // cfg["vre_grid"]
    if face_size % cell:
        raise ValueError(f"face size {face_size} is not a multiple of the VRE cell {cell}px")
    new = OSDFaceNet(**{**cfg, "face_size": int(face_size), "vre_grid": face_size // cell})
    new.load_state_dict(net.state_dict(), strict=True)
    return new


# ----------------------------------------------------------------------------- data

@dataclass
class TrainData:
    """HQ targets, their LQ pool (or None for inline degradation) and fixed val pairs."""

    hq: np.ndarray
    pairs: PairDataset | ConcatPairs
    val_hq: np.ndarray
    #: level -> (lq, hq) val pairs: the crop-level presets (hq = val_hq) and live-path conditions
    val: dict[str, tuple[np.ndarray, np.ndarray]]


def clean_targets(faces: np.ndarray, spec: str, device: str, batch: int = 16) -> np.ndarray:
    """IDM's extrinsic enhancement: run a trained restorer over the HQ targets."""
    from ..restorers import load_restorer

    restorer = load_restorer(spec, device=device, face_size=faces.shape[1])
    log.info("cleaning %d targets with %s", len(faces), restorer.name)
    return np.concatenate([restorer.restore(faces[i:i + batch]) for i in range(0, len(faces), batch)])


def prepare_data(cfg: TrainConfig) -> TrainData:
    """Load the train/val faces of ``cfg.data`` at the model's face size and build the data."""
    from .data import load_faces

    if cfg.pack:
        from .data import FixedPairs
        from .pack import read_pack

        (lq, hq), val = read_pack(cfg.pack)
        log.info("pack %s: %d train pairs, val %s", cfg.pack, len(lq), sorted(val))
        return TrainData(hq, FixedPairs(lq, hq, seed=cfg.seed), next(iter(val.values()))[1], val)
    size = int(cfg.model["face_size"])
    faces = np.asarray(load_faces("train", size, cfg.train_limit, data_dir=cfg.data))
    val_hq = np.asarray(load_faces("val", size, cfg.val_count, data_dir=cfg.data))
    return build_data(cfg, faces, val_hq)


def build_data(cfg: TrainConfig, faces: np.ndarray, val_hq: np.ndarray) -> TrainData:
    """Filter (and optionally clean) the HQ targets, build the LQ pool and the fixed val pairs."""
    from ..evaluate.runner import degrade_level
    from .data import ConcatPairs, PairDataset, laplacian_variance
    from .degrade import LEVELS, build_lq_pool

    sharp = laplacian_variance(faces)
    keep = np.sort(np.argsort(-sharp)[: max(1, int(round(len(faces) * cfg.sharp_fraction)))])
    hq = np.ascontiguousarray(faces[keep])
    log.info("HQ targets: %d of %d train faces (sharpest %.0f%%)", len(hq), len(faces),
             100 * cfg.sharp_fraction)
    if cfg.clean_targets_with:
        hq = clean_targets(hq, cfg.clean_targets_with, cfg.device)
    pool = None
    if cfg.pool_variants > 0:
        pool = build_lq_pool(hq, cfg.pool_variants, seed=cfg.seed, workers=cfg.pool_workers,
                             progress=cfg.progress)
    val = {lv: (degrade_level(val_hq, lv, seed=cfg.seed), val_hq) for lv in LEVELS}
    pairs = PairDataset(hq, pool=pool, seed=cfg.seed)
    if cfg.live_photos:
        from .livedata import live_train_pairs, live_val_pairs

        pairs = ConcatPairs([pairs, live_train_pairs(cfg)])
        val.update(live_val_pairs(cfg))
    return TrainData(hq, pairs, val_hq, val)


def batches(data: TrainData, batch_size: int, seed: int, start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled (lq, hq) uint8 batches; epochs advance the dataset's LQ variant."""
    n = len(data.pairs)
    per_epoch = max(1, n // batch_size)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        data.pairs.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for b in range(offset, per_epoch):
            items = [data.pairs[int(i)] for i in order[b * batch_size:(b + 1) * batch_size]]
            yield np.stack([a for a, _ in items]), np.stack([h for _, h in items])
        epoch, offset = epoch + 1, 0


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Runs the stages with checkpoints (``ckpt.pt``), a JSONL loss log and a loss plot."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        self.amp_dtype = torch.bfloat16 if (cfg.amp and self.device.type == "cuda") else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if cfg.init:
            from ..model.network import load_network

            self.net = load_network(cfg.init)
            if cfg.init_face_size and cfg.init_face_size != self.net.config.face_size:
                self.net = retarget(self.net, cfg.init_face_size)
            self.net.train()
            cfg.model = {k: v for k, v in self.net.config.items() if not k.startswith("_")}
        else:
            self.net = OSDFaceNet(**cfg.model)
        self.net.to(self.device)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.vre_hq = copy.deepcopy(self.net.vre).requires_grad_(False).eval()
        code_dim, grid = self.net.config.code_dim, self.net.config.vre_grid
        f = 2 ** (len(self.net.config.vae_channels) - 1)
        cell = (self.net.config.face_size // f // grid) ** 2 * self.net.config.latent_channels
        self.latent_head = nn.Linear(code_dim, cell).to(self.device)  # stage B read-out only
        self.disc = PatchDiscriminator(cfg.disc_channels).to(self.device)
        self.stage, self.step = ("main", 0) if cfg.init else ("vae", 0)
        self.main_minutes = 0.0  # wall time spent in stage "main" (persists across --resume)
        self.opt = self._make_opt()
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), cfg.lr_disc, betas=(0.5, 0.9))
        self.log_file = self.out / "loss_log.jsonl"
        self.started = time.time()
        if resume:
            self.load_checkpoint()
        elif self.log_file.exists():
            self.log_file.unlink()
        (self.out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # --- optimisers / checkpoints -----------------------------------------------------------
    def _make_opt(self) -> torch.optim.Optimizer:
        net = self.net
        if self.stage == "vae":
            params = [*net.encoder.parameters(), *net.decoder.parameters()]
        elif self.stage == "vre":
            params = [*net.vre.encoder.parameters(), net.vre.codebook, *self.latent_head.parameters()]
        else:
            params = [p for n, p in net.named_parameters() if n != "vre.codebook"]
        return torch.optim.AdamW(params, self.cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def state(self) -> dict:
        return dict(stage=self.stage, step=self.step, net=self.net.state_dict(),
                    ema=self.ema.state_dict(), vre_hq=self.vre_hq.state_dict(),
                    latent_head=self.latent_head.state_dict(), disc=self.disc.state_dict(),
                    opt=self.opt.state_dict(), opt_d=self.opt_d.state_dict(),
                    main_minutes=self.main_minutes, config=asdict(self.cfg))

    def save_checkpoint(self) -> None:
        """``ckpt.pt``; with ``slim_ckpt`` only the EMA (bf16), the small modules and counters:
        a resume then restarts the trained net from the EMA with fresh optimiser moments."""
        st = self.state()
        if self.cfg.slim_ckpt:
            def half(sd: dict) -> dict:
                return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
            st = {k: v for k, v in st.items() if k not in ("net", "opt", "opt_d")}
            st.update(ema=half(st["ema"]), disc=half(st["disc"]), slim=True)
        tmp = self.out / "ckpt.pt.tmp"
        torch.save(st, tmp)
        tmp.replace(self.out / "ckpt.pt")

    def load_checkpoint(self) -> None:
        path = self.out / "ckpt.pt"
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        st = torch.load(path, map_location=self.device, weights_only=False)
        if st.get("slim"):
            self.ema.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["ema"].items()})
            self.net.load_state_dict(self.ema.state_dict())
            self.disc.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["disc"].items()})
            self.vre_hq.load_state_dict(st["vre_hq"])
            self.latent_head.load_state_dict(st["latent_head"])
            self.stage, self.step = st["stage"], st["step"]
            self.main_minutes = float(st.get("main_minutes", 0.0))
            self.opt = self._make_opt()
            log.info("resumed slim %s at stage %s step %d (net from EMA, fresh optimiser)", path, self.stage, self.step)
            return
        self.net.load_state_dict(st["net"])
        self.ema.load_state_dict(st["ema"])
        self.vre_hq.load_state_dict(st["vre_hq"])
        self.latent_head.load_state_dict(st["latent_head"])
        self.disc.load_state_dict(st["disc"])
        self.stage, self.step = st["stage"], st["step"]
        self.main_minutes = float(st.get("main_minutes", 0.0))
        self.opt = self._make_opt()
        self.opt.load_state_dict(st["opt"])
        self.opt_d.load_state_dict(st["opt_d"])
        log.info("resumed %s at stage %s step %d", path, self.stage, self.step)

    def log_row(self, row: dict) -> None:
        row = dict(stage=self.stage, step=self.step, minutes=round((time.time() - self.started) / 60, 3), **row)
        with self.log_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    # --- helpers ----------------------------------------------------------------------------
    def tensors(self, lq: np.ndarray, hq: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (to_tensor(lq, self.device, torch.float32), to_tensor(hq, self.device, torch.float32))

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def update_ema(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters()):
                e.lerp_(p, 1 - d)
            for e, b in zip(self.ema.buffers(), self.net.buffers()):
                e.copy_(b)

    def hq_latent_cells(self, hq: torch.Tensor) -> torch.Tensor:
        """Scaled HQ latent cut into the VRE grid: (N, G·G, cell) read-out targets."""
        with torch.no_grad():
            z, _ = self.net.encode(hq)
            z = z * self.net.latent_scale
        g = self.net.config.vre_grid
        n, c, h, w = z.shape
        z = z.reshape(n, c, g, h // g, g, w // g).permute(0, 2, 4, 1, 3, 5)
        return z.reshape(n, g * g, -1)

    # --- stages -----------------------------------------------------------------------------
    def step_vae(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        with self.autocast():
            rec, z = self.net.autoencode(hq)
        rec = rec.float()
        l1 = (rec - hq).abs().mean()
        lap = laplacian_pyramid_l1(rec, hq)
        lat = z.float().pow(2).mean()
        loss = l1 + self.cfg.w_lap * lap + self.cfg.w_latent * lat
        self.backward(loss)
        return dict(loss=loss.item(), l1=l1.item(), lap=lap.item(), latent=lat.item())

    def step_vre(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        vre, half = self.net.vre, self.cfg.steps["vre"] // 2
        target = self.hq_latent_cells(hq)
        feats = vre.features(hq)
        if self.step < half:
            pred, vq = self.latent_head(feats), feats.new_zeros(())
        else:
            codes, idx = vre.quantize(feats)
            raw = vre.codebook[idx]
            vq = (raw - feats.detach()).pow(2).mean() + self.cfg.w_commit * (feats - raw.detach()).pow(2).mean()
            pred = self.latent_head(codes)
        rec = F.mse_loss(pred, target)
        self.backward(rec + vq)
        return dict(loss=(rec + vq).item(), latent_mse=rec.item(), vq=vq.item())

    def step_main(self, lq: torch.Tensor, hq: torch.Tensor) -> dict:
        c, net = self.cfg, self.net
        gan = self.step >= c.disc_start and (c.w_adv > 0 or c.w_fm > 0)
        with self.autocast():
            feats = net.vre.features(lq)
            codes, _ = net.vre.quantize(feats)
            out = net(lq, prompt=net.vre.prompt(codes))
        out, feats = out.float(), feats.float()
        with torch.no_grad():
            hq_codes, _ = self.vre_hq.quantize(self.vre_hq.features(hq))
        l1 = (out - hq).abs().mean()
        lap = laplacian_pyramid_l1(out, hq)
        assoc = F.mse_loss(feats, hq_codes)
        loss = l1 + c.w_lap * lap + c.w_assoc * assoc
        row = dict(l1=l1.item(), lap=lap.item(), assoc=assoc.item())
        if gan:
            self.disc.requires_grad_(False)
            logits, f_fake = self.disc(out)
            with torch.no_grad():
                _, f_real = self.disc(hq)
            adv = -logits.mean()
            fm = sum((a - b).abs().mean() for a, b in zip(f_fake, f_real)) / len(f_fake)
            loss = loss + c.w_adv * adv + c.w_fm * fm
            row.update(adv=adv.item(), fm=fm.item())
        self.backward(loss)
        if gan:
            self.disc.requires_grad_(True)
            real, _ = self.disc(hq)
            fake, _ = self.disc(out.detach())
            d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            row["d_loss"] = d_loss.item()
        return dict(loss=loss.item(), **row)

    def main_progress(self) -> float:
        """Fraction of the main stage done: by steps, or by minutes when ``max_minutes`` is set."""
        c = self.cfg
        frac = self.step / max(1, int(c.steps.get("main", 0)))
        if c.max_minutes:
            frac = max(frac, self.main_minutes / c.max_minutes)
        return min(frac, 1.0)

    def set_main_lr(self) -> None:
        """Constant LR, then cosine decay to ``lr_final``·lr after ``lr_decay_from``."""
        c = self.cfg
        u = max(0.0, (self.main_progress() - c.lr_decay_from) / max(1e-9, 1 - c.lr_decay_from))
        factor = c.lr_final + (1 - c.lr_final) * 0.5 * (1 + math.cos(math.pi * u))
        for g in self.opt.param_groups:
            g["lr"] = c.lr * factor

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
        self.opt.step()

    def end_of_stage(self, data: TrainData) -> None:
        """Stage transitions: latent scale after A, k-means mid-B, frozen HQ VRE copy after B."""
        net = self.net
        if self.stage == "vae":
            with torch.no_grad():
                x = to_tensor(data.hq[:256], self.device, torch.float32)
                z = torch.cat([net.encode(x[i:i + 32])[0] for i in range(0, len(x), 32)])
                net.latent_scale.fill_(1.0 / float(z.std().clamp_min(1e-6)))
            log.info("latent scale %.4f", float(net.latent_scale))
        elif self.stage == "vre":
            self.vre_hq.load_state_dict(net.vre.state_dict())

    def init_codebook(self, data: TrainData) -> None:
        """k-means on HQ VRE features (stage B, half-way)."""
        vre = self.net.vre
        with torch.no_grad():
            x = to_tensor(data.hq[: self.cfg.kmeans_faces], self.device, torch.float32)
            feats = torch.cat([vre.features(x[i:i + 64]) for i in range(0, len(x), 64)]).flatten(0, 1)
            vre.codebook.copy_(kmeans(feats.cpu(), vre.codebook.shape[0], seed=self.cfg.seed).to(self.device))
        log.info("codebook k-means initialised on %d features", len(feats))

    @torch.no_grad()
    def validate(self, data: TrainData, model: OSDFaceNet | None = None) -> dict[str, float]:
        """Face-region PSNR of the (EMA) model on the fixed val pairs, per level."""
        from ..evaluate.metrics import face_mask, psnr

        model = model or self.ema
        mask = face_mask(data.val_hq.shape[1])
        res = {}
        for lv, (lq, hq) in data.val.items():
            out = run_model(model, lq, self.device)
            res[f"psnr_{lv}"] = float(np.mean([psnr(o, h, mask) for o, h in zip(out, hq)]))
        return res

    def run(self, data: TrainData, deadline: float | None = None) -> OSDFaceNet:
        """Run (or continue) every stage; returns the EMA model (what gets shipped).

        ``deadline`` (a ``time.time()`` value): stop this call there with a checkpoint, to be
        continued with ``--resume`` (e.g. one device call of a few minutes at a time)."""
        from tqdm import tqdm

        c = self.cfg
        for stage in STAGES[STAGES.index(self.stage):]:
            if stage != self.stage:
                self.stage, self.step = stage, 0
                self.opt = self._make_opt()
            total = int(c.steps.get(stage, 0))
            fn = {"vae": self.step_vae, "vre": self.step_vre, "main": self.step_main}[stage]
            bar = tqdm(total=total, initial=self.step, desc=stage, disable=not c.progress)
            it = batches(data, c.batch_size, c.seed + STAGES.index(stage), self.step)
            t_last = time.time()
            while self.step < total:
                if deadline is not None and time.time() > deadline:
                    log.info("this call's time is up at %s step %d: checkpoint saved, --resume continues",
                             stage, self.step)
                    bar.close()
                    self.save_checkpoint()
                    plot_losses(self.log_file, self.out / "loss.png")
                    return self.ema
                if stage == "vre" and self.step == total // 2:
                    self.init_codebook(data)
                if stage == "main":
                    now = time.time()
                    self.main_minutes += (now - t_last) / 60
                    t_last = now
                    if c.max_minutes and self.main_minutes > c.max_minutes:
                        log.info("max_minutes reached at main step %d", self.step)
                        break
                    self.set_main_lr()
                lq, hq = self.tensors(*next(it))
                self.net.train()
                row = fn(lq, hq)
                self.step += 1
                self.update_ema()
                bar.update(1)
                if self.step % c.log_every == 0 or self.step == total:
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    self.log_row(dict(row, lr=self.opt.param_groups[0]["lr"]))
                if stage == "main" and self.step % c.eval_every == 0:
                    self.log_row(self.validate(data))
                if self.step % c.ckpt_every == 0:
                    self.save_checkpoint()
                    plot_losses(self.log_file, self.out / "loss.png")
            bar.close()
            if stage != "main":
                self.end_of_stage(data)
                self.ema.load_state_dict(self.net.state_dict())
            self.save_checkpoint()
        plot_losses(self.log_file, self.out / "loss.png")
        return self.ema


# ----------------------------------------------------------------------------- log / plot

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


# ----------------------------------------------------------------------------- report

@torch.no_grad()
def run_model(model: OSDFaceNet, lq: np.ndarray, device: torch.device, batch: int = 16) -> np.ndarray:
    """``model`` over uint8 faces in batches (fp32), uint8 out."""
    return np.concatenate([to_uint8(model(to_tensor(lq[i:i + batch], device, torch.float32)))
                           for i in range(0, len(lq), batch)])


@torch.no_grad()
def evaluate_levels(model: OSDFaceNet, data: TrainData, device: torch.device) -> dict[str, dict[str, float]]:
    """Face-region PSNR / SSIM per level for the degraded input, the classical restorer and ``model``."""
    from ..evaluate.metrics import face_mask, psnr, ssim
    from ..restore.classical import ClassicalRestorer

    model = model.eval()
    mask = face_mask(data.val_hq.shape[1])
    classical = ClassicalRestorer(face_size=data.val_hq.shape[1])
    res: dict[str, dict[str, float]] = {}
    for lv, (lq, hq) in data.val.items():
        outs = {"input": lq, "classical": classical.restore(lq), "model": run_model(model, lq, device)}
        for name, out in outs.items():
            res.setdefault(name, {})[f"psnr_{lv}"] = float(np.mean([psnr(o, h, mask) for o, h in zip(out, hq)]))
            res[name][f"ssim_{lv}"] = float(np.mean([ssim(o, h, mask) for o, h in zip(out, hq)]))
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


def write_model_card(out: Path, cfg: TrainConfig, trainer: Trainer, data: TrainData, minutes: float) -> None:
    """README.md next to the weights: data and licence, degradations, stages, losses, metrics, speed."""
    model = trainer.ema
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
(`osdface_rtc.train.data.split_of`). HQ targets: the sharpest {100 * cfg.sharp_fraction:.0f}% of the
train faces by variance of the Laplacian ({len(data.hq)} faces{"" if cfg.train_limit is None else f", first {cfg.train_limit} only"}).
{"HQ targets were cleaned first with `" + cfg.clean_targets_with + "` (IDM extrinsic enhancement)." if cfg.clean_targets_with else ""}

## Degradations
`osdface_rtc.train.degrade`: colour/exposure, Gaussian or motion blur, downscale ×1–8, Gaussian
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


def train(cfg: TrainConfig, resume: bool = False, data: TrainData | None = None,
          for_minutes: float | None = None) -> Path:
    """Run a whole training and ``save_pretrained`` the EMA model into ``cfg.out/model``.

    ``data`` (from :func:`build_data`) skips loading the face folder (tests). ``for_minutes``:
    stop this call after that long (checkpoint and model saved; ``resume=True`` continues).
    """
    t0 = time.time()
    trainer = Trainer(cfg, resume=resume)
    data = data if data is not None else prepare_data(cfg)
    model = trainer.run(data, deadline=t0 + 60 * for_minutes if for_minutes else None)
    out = Path(cfg.out) / "model"
    model.save_pretrained(out)
    write_model_card(out, cfg, trainer, data, minutes=(time.time() - t0) / 60)
    log.info("saved %s", out)
    return out


__all__ = ["TrainConfig", "Trainer", "train", "prepare_data", "build_data", "laplacian_pyramid_l1",
           "PatchDiscriminator", "kmeans", "plot_losses", "evaluate_levels", "write_model_card"]
