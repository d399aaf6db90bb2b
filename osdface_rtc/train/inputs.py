"""What a run trains and validates on, assembled from :mod:`osdface_rtc.data`.

:func:`prepare_data` reads ``TrainConfig.pack`` or the face folder; :func:`build_data` keeps the
sharpest faces as HQ targets (optionally cleaned by a trained restorer first: IDM's extrinsic
enhancement, :func:`clean_targets`), builds their LQ pool, adds the live-path pairs, and fixes
the val pairs (crop-level levels and live conditions) in :class:`TrainData`. :func:`batches`
yields the endless shuffled ``(lq, hq)`` uint8 batches of a stage.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..data.faces import laplacian_variance, load_faces
from ..data.pairs import ConcatPairs, FixedPairs, PairDataset

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("osdface_rtc")


@dataclass
class TrainData:
    """HQ targets, the training pairs and the fixed val pairs."""

    hq: np.ndarray
    pairs: PairDataset | FixedPairs | ConcatPairs
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
    """The run's data: from ``cfg.pack``, else the train/val faces of ``cfg.data`` at the model's
    face size through :func:`build_data`."""
    if cfg.pack:
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
    from ..data.degrade import LEVELS, degrade_level  # PyAV: not needed with a pack
    from ..data.pool import build_lq_pool

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
    pairs = PairDataset(hq, pool=pool, seed=cfg.seed, repeat=cfg.crop_repeat)
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
