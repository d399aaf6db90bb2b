"""Temporal smoothing of keypoints: a simple IoU face tracker + a One Euro filter per track.

The One Euro filter (Casiez et al., CHI 2012) is a low-pass filter whose cutoff rises with
speed: a still face gets heavy smoothing (no crop jitter), a moving face little lag. Speeds are
measured in face sizes per second, so the same settings work for near and far faces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .detect import box_iou
from .types import Face


@dataclass
class SmoothConfig:
    enabled: bool = True
    min_cutoff: float = 0.4  # Hz, cutoff when still (lower = steadier)
    beta: float = 10.0  # cutoff gain per (face size / s) of speed (higher = less lag)
    d_cutoff: float = 1.0  # Hz, for the speed estimate
    match_iou: float = 0.3  # a detection continues a track if boxes overlap this much
    max_missed: int = 5  # frames a track survives without a detection


def _alpha(cutoff, dt: float):
    """Smoothing factor of an exponential filter with the given cutoff (scalar or array)."""
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))


@dataclass
class OneEuroFilter:
    """One Euro filter over an array of coordinates, speed normalised by ``scale``."""

    config: SmoothConfig
    x: np.ndarray | None = None
    dx: np.ndarray | None = None

    def __call__(self, value: np.ndarray, dt: float, scale: float) -> np.ndarray:
        c = self.config
        if self.x is None:
            self.x, self.dx = value.astype(np.float64), np.zeros_like(value, np.float64)
            return self.x.copy()
        dt = max(dt, 1e-3)
        dx = (value - self.x) / dt / max(scale, 1.0)
        a_d = _alpha(c.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = c.min_cutoff + c.beta * np.abs(self.dx)
        a = _alpha(cutoff, dt)
        self.x = a * value + (1 - a) * self.x
        return self.x.copy()


@dataclass
class _Track:
    track_id: int
    filter: OneEuroFilter
    box: np.ndarray
    missed: int = 0


@dataclass
class FaceTracker:
    """Gives detections stable ids across frames and smooths their keypoints and boxes."""

    config: SmoothConfig = field(default_factory=SmoothConfig)
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0
    _last_t: float | None = None

    def reset(self) -> None:
        self._tracks.clear()
        self._last_t = None

    def update(self, faces: list[Face], t: float) -> list[Face]:
        """Match ``faces`` (time ``t`` in seconds) to tracks; return smoothed copies with ids."""
        dt = 1 / 30 if self._last_t is None else max(t - self._last_t, 1e-3)
        self._last_t = t
        unmatched = list(self._tracks)
        out: list[Face] = []
        for face in faces:
            best = max(unmatched, key=lambda tr: box_iou(tr.box, face.box), default=None)
            if best is None or box_iou(best.box, face.box) < self.config.match_iou:
                best = _Track(self._next_id, OneEuroFilter(self.config), face.box)
                self._next_id += 1
                self._tracks.append(best)
            else:
                unmatched.remove(best)
            best.missed, best.box = 0, face.box
            if self.config.enabled:
                state = np.concatenate([face.landmarks.ravel(), face.box])
                sm = best.filter(state, dt, face.size)
                lms, box = sm[:-4].reshape(-1, 2), sm[-4:]
            else:
                lms, box = face.landmarks, face.box
            out.append(Face(box=box, landmarks=lms, score=face.score, track_id=best.track_id))
        for tr in unmatched:
            tr.missed += 1
        self._tracks = [tr for tr in self._tracks if tr.missed <= self.config.max_missed]
        return out
