"""(LQ, HQ) pair datasets for training: map-style (``len`` / ``[i]`` / ``set_epoch``), so they
also work with ``torch.utils.data.DataLoader``.

- :class:`PairDataset`: HQ faces degraded inline (:func:`osdface_rtc.data.degrade.degrade`) or
  read from a precomputed pool (:func:`osdface_rtc.data.pool.build_lq_pool`).
- :class:`FixedPairs`: precomputed pairs (live-path crops, a pack).
- :class:`ConcatPairs`: several of them as one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .degrade import DegradeConfig


@dataclass
class PairDataset:
    """``(lq, hq)`` uint8 ``S x S x 3`` pairs for training.

    ``pool=None``: each item is degraded inline with ``default_rng([seed, epoch, index])``
    (call :meth:`set_epoch` every epoch for fresh degradations; deterministic per epoch).
    ``pool`` (``V x N x S x S x 3`` from ``build_lq_pool``): repeat ``r`` of face ``i`` reads
    variant ``(i + epoch * repeat + r) % V``, so every epoch (and every repeat within it)
    shows a different LQ version of each face.
    ``flip``: mirror both images horizontally with probability 0.5 (same rng).
    ``repeat``: each face appears this many times per epoch (a larger share of a mixed set),
    each time with a different pool variant (or a different inline degradation).
    """

    hq: np.ndarray
    pool: np.ndarray | None = None
    seed: int = 0
    cfg: DegradeConfig | None = None
    flip: bool = True
    epoch: int = 0
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")
        if self.pool is not None and self.pool.shape[1:] != self.hq.shape:
            raise ValueError(f"pool {self.pool.shape} does not match faces {self.hq.shape}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.hq) * self.repeat

    def __getitem__(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, int(j)])
        r, i = divmod(int(j), len(self.hq))
        hq = self.hq[i]
        if self.pool is None:
            from .degrade import degrade  # PyAV: only for inline degradation

            lq = degrade(np.ascontiguousarray(hq), rng, None, self.cfg)
        else:
            lq = self.pool[(i + self.epoch * self.repeat + r) % len(self.pool), i]
        if self.flip and rng.random() < 0.5:
            hq, lq = hq[:, ::-1], lq[:, ::-1]
        return np.ascontiguousarray(lq), np.ascontiguousarray(hq)


@dataclass
class FixedPairs:
    """Precomputed ``(lq, hq)`` pairs (``N x S x S x 3`` uint8 each), e.g. live-path crops from
    :func:`osdface_rtc.data.livepairs.build_live_pairs`; mirrored with probability 0.5."""

    lq: np.ndarray
    hq: np.ndarray
    seed: int = 0
    flip: bool = True
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.lq.shape != self.hq.shape:
            raise ValueError(f"lq {self.lq.shape} and hq {self.hq.shape} differ")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lq)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lq, hq = self.lq[i], self.hq[i]
        if self.flip and np.random.default_rng([self.seed, self.epoch, int(i), 1]).random() < 0.5:
            lq, hq = lq[:, ::-1], hq[:, ::-1]
        return np.ascontiguousarray(lq), np.ascontiguousarray(hq)


class ConcatPairs:
    """Several pair datasets as one (items numbered in order); ``set_epoch`` reaches all."""

    def __init__(self, parts: list) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            p.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][int(i - self.offsets[k])]
