"""What a training run depends on: :class:`TrainConfig` (one default per knob) and its presets.

The config is saved next to the checkpoints as ``train_config.json``. Presets: ``real`` (the
shipped CPU-sized model), ``gpu`` (a wider net from a packed pair set) and ``tiny`` (a smoke run
of seconds on CPU: ``osdface-rtc train --preset tiny``). :data:`STAGES` are the stages in order
(see :mod:`osdface_rtc.train.loop`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

STAGES: tuple[str, ...] = ("vae", "vre", "main")

#: Network sizes per preset (``OSDFaceNet`` keyword arguments).
#: The GPU preset: the same formulation with a 1.5x wider UNet (~2x the UNet FLOPs; the live CPU
#: runtime must stay <= 40 ms/face: measure before shipping).
GPU_MODEL: dict = dict(face_size=128, latent_channels=8, vae_channels=(16, 32, 32),
                       unet_channels=(48, 96, 144), unet_attn_levels=1, attention_head_dim=48,
                       prompt_dim=128, vre_channels=32, vre_grid=8, codebook_size=256,
                       code_dim=64, norm_num_groups=8)
#: The smoke run's net (32 px faces, narrow channels: seconds per stage on CPU).
TINY_MODEL: dict = dict(face_size=32, latent_channels=4, vae_channels=(8, 16), unet_channels=(16, 32),
                        attention_head_dim=8, prompt_dim=16, vre_channels=8, vre_grid=4,
                        codebook_size=16, code_dim=8, norm_num_groups=4)
#: The shipped model (CPU-sized: the live runtime budget).
REAL_MODEL: dict = dict(face_size=128, latent_channels=8, vae_channels=(16, 32, 32),
                        unet_channels=(32, 64, 96), unet_attn_levels=1, attention_head_dim=32,
                        prompt_dim=128, vre_channels=32, vre_grid=8, codebook_size=256,
                        code_dim=64, norm_num_groups=8)


@dataclass
class TrainConfig:
    """Everything a run depends on (saved next to the checkpoints as ``train_config.json``)."""

    out: str = "runs/osdface-rtc"
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
    crop_repeat: int = 1  # crop-level pairs shown this many times per epoch (their share of the mix)
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
        minutes with slim checkpoints) or ``"tiny"`` (a smoke run: seconds on CPU; the tests
        run it too). ``overrides`` replace fields of the preset (unknown names raise)."""
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
