"""Live-path training and validation pairs for the trainer (see :mod:`osdface_rtc.data.livepairs`).

- Train: the sharpest train photos (same split and sharpness rule as the crop-level targets),
  each placed in a webcam frame and sent through a random call condition, plus the real clips
  in ``videos/train/`` (never the four test clips in ``videos/``), each through
  ``live_clip_variants`` random conditions. Cached under ``.cache/``.
- Val: the val photos through the fixed conditions of ``live_val_conditions``, so the training
  log shows the crop PSNR the live path would give (``psnr_live_x3-vp8-120k`` etc.).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.call import parse_damage
from ..data.livepairs import LivePairConfig, build_live_pairs, read_photo, scene_pairs
from ..paths import CACHE_DIR, DATA_DIR
from ..pipeline.detect import DetectorConfig, FaceDetector
from ..data.faces import laplacian_variance, list_faces
from ..data.pairs import FixedPairs

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("osdface_rtc")


def train_clips(data_dir: Path | None = None) -> list[Path]:
    """The training clips (``<data>/videos/train/*.mp4``); empty when absent."""
    d = (Path(data_dir) if data_dir else DATA_DIR) / "videos" / "train"
    return sorted(p for p in d.glob("*") if p.suffix.lower() in (".mp4", ".webm", ".mkv", ".mov")) if d.is_dir() else []


def sharp_photos(cfg: TrainConfig) -> list[Path]:
    """Train photos kept as HQ (the sharpest ``cfg.sharp_fraction``), at most ``cfg.live_photos``."""
    import cv2

    files = list_faces("train", cfg.data)[: cfg.train_limit]
    grey = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    sharp = laplacian_variance(np.stack([cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA)[..., ::-1]
                                         for g in grey]))
    keep = np.sort(np.argsort(-sharp)[: max(1, int(round(len(files) * cfg.sharp_fraction)))])
    photos = [files[i] for i in keep]
    return photos if cfg.live_photos < 0 else photos[: cfg.live_photos]


def live_config(cfg: TrainConfig) -> LivePairConfig:
    return LivePairConfig(face_size=int(cfg.model["face_size"]))


def live_train_pairs(cfg: TrainConfig) -> FixedPairs:
    """Live-path (LQ, HQ) training pairs (cached)."""
    photos = sharp_photos(cfg)
    clips = train_clips(Path(cfg.data).parent.parent if cfg.data else None) if cfg.live_clips else []
    lq, hq = build_live_pairs(photos, clips, live_config(cfg), seed=cfg.seed, workers=cfg.pool_workers,
                              cache_dir=CACHE_DIR, clip_variants=cfg.live_clip_variants,
                              progress=cfg.progress)
    log.info("live-path pairs: %d (from %d photos, %d clips)", len(lq), len(photos), len(clips))
    return FixedPairs(lq, hq, seed=cfg.seed)


def live_val_pairs(cfg: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"live_<condition>": (lq, hq)}`` from the first ``cfg.val_count`` val photos."""
    lcfg = live_config(cfg)
    photos = list_faces("val", cfg.data)[: cfg.val_count]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    detector = FaceDetector(DetectorConfig(mode=lcfg.detector, min_face=16, max_faces=4))
    try:
        for name in cfg.live_val_conditions:
            damage = parse_damage(name)
            pairs = []
            for i, p in enumerate(photos):
                pairs += scene_pairs(read_photo(p), np.random.default_rng([cfg.seed, 7, i]), lcfg,
                                     detector, damage)[-1:]
            if pairs:
                out[f"live_{name}"] = (np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
    finally:
        detector.close()
    return out
