"""Temporal stabilisation of restored crops, per tracked face (between restore and blend).

A one-step restorer sees every frame alone, so what it outputs flickers a little from frame to
frame (the live eval's *temporal error*). :class:`CropFilter` keeps, per ``track_id``, the last
stabilised crop and the input crop it was made from, and mixes it into the new restored crop
where the face has not moved -- a motion-adaptive recursive filter in crop space, where the
aligner already holds eyes, nose and mouth in place:

    w          = weight * exp(-(|blur(input_t - input_prev)| / motion)^2)     per pixel
    restored'_t = (1 - w) * restored_t + w * restored'_prev

Where the input changed (the mouth opens, the head turns, a hand passes) ``w`` falls to 0 and
the new crop is used as it is, so nothing smears; a new or lost face starts fresh.
``weight = 0`` turns the filter off. Measured with the shipped model (×3 + VP8 100 kbit/s),
``weight 0.3, motion 4`` lowered the temporal error on two of four training clips by 2.7 and
5.4 points of the input's (±0.1 on the others) at −0.02…+0.00 dB face PSNR (BENCHMARKS.md §0.2).

Used by :meth:`FaceEnhancer.process` (``enhance``, ``eval``). Live calls leave it off: their
late frames re-warp the last restoration's change, which must not carry an older frame's pixels.

Contract: :meth:`CropFilter.apply` takes the input crops and the restorer's crops of one frame
(same rows, same ``track_ids``) and returns crops of the same shape and ``track_ids``; one
filter per stream (like the face tracker), fed that stream's restorations in order.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .types import AlignedFaces


@dataclass
class TemporalConfig:
    weight: float = 0.3  # share of the previous crop kept where the face is still (0 = off)
    motion: float = 4.0  # input change (grey levels, after the blur) where w has fallen to w/e
    blur: float = 0.015  # blur sigma of the motion map, fraction of the crop side

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"temporal weight must be in [0, 1), got {self.weight}")
        if self.motion <= 0 or self.blur < 0:
            raise ValueError(f"temporal motion must be > 0 and blur >= 0, got {self.motion}, {self.blur}")


class CropFilter:
    """Per-track motion-adaptive recursive filter of restored crops (see the module docstring)."""

    def __init__(self, config: TemporalConfig | None = None):
        self.config = config or TemporalConfig()
        self._state: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (input, output) float32

    def reset(self) -> None:
        self._state = {}

    def apply(self, original: AlignedFaces, restored: AlignedFaces) -> AlignedFaces:
        c = self.config
        if c.weight <= 0 or len(restored) == 0:
            self._state = {}
            return restored
        if len(original) != len(restored) or list(original.track_ids) != list(restored.track_ids):
            raise ValueError("original and restored crops must have the same rows and track_ids")
        sigma = c.blur * restored.crops.shape[1]
        out = np.empty_like(restored.crops)
        state: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, tid in enumerate(restored.track_ids):
            inp = original.crops[i].astype(np.float32)
            crop = restored.crops[i].astype(np.float32)
            prev = self._state.get(tid)
            if prev is not None and prev[0].shape == inp.shape:
                moved = (inp - prev[0]).mean(axis=2)
                if sigma > 0:
                    moved = cv2.GaussianBlur(moved, (0, 0), sigma)
                w = (c.weight * np.exp(-np.square(moved / c.motion)))[..., None]
                crop = (1.0 - w) * crop + w * prev[1]
            if tid >= 0:  # untracked faces (id -1) are never matched to a previous crop
                state[tid] = (inp, crop)
            out[i] = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
        self._state = state  # faces not in this frame are forgotten
        return AlignedFaces(out, restored.affines, list(restored.track_ids))
