"""Webcam-like clips made from still face photos: the face placed in a frame, moving a little.

A face photo (a square, roughly aligned crop such as UTKFace's 200×200 ones) is placed in a
``width × height`` frame at a webcam size (``face_px``: the photo's side in frame pixels),
over a background, with a feathered edge, and drifts and breathes slightly from frame to frame
(a talking head is never still, so the codec predicts from a moved reference). The result is a
clean clip and, per frame, the affine that maps photo pixels into the frame — so the face region
is known exactly, whatever any detector later finds on a damaged copy.

Backgrounds are procedural (smooth colour gradients plus soft blobs and a little texture:
a room, out of focus) or any frames the caller passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .regions import FACE_ELLIPSE


@dataclass(frozen=True)
class SceneConfig:
    width: int = 640
    height: int = 480
    face_px: tuple[float, float] = (150.0, 300.0)  # photo side in the frame, drawn log-uniformly
    frames: int = 24  # clip length (the codec's rate control settles in well under a second)
    drift_px: float = 1.2  # head motion per frame (px, random walk of the velocity)
    breathe: float = 0.004  # relative size change per frame (std)
    feather: float = 0.08  # feathered photo edge, fraction of its side


@dataclass
class SceneClip:
    frames: list[np.ndarray]  # clean H×W×3 uint8 RGB frames
    photo_to_frame: list[np.ndarray]  # per frame, 2×3 affine: photo pixels -> frame pixels
    photo_size: int

    def face_mask(self, k: int) -> np.ndarray:
        """Boolean H×W mask of the face ellipse (see :mod:`.regions`) in frame ``k``."""
        h, w = self.frames[k].shape[:2]
        cx, cy, ax, ay = FACE_ELLIPSE
        m = self.photo_to_frame[k]
        s = self.photo_size
        centre = m @ np.array([cx * s, cy * s, 1.0])
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        angle = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                    (int(round(ax * s * scale)), int(round(ay * s * scale))), angle, 0, 360, 1, -1)
        return mask.astype(bool)

    def face_box(self, k: int) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of the face ellipse in frame ``k`` (clipped to the frame)."""
        ys, xs = np.nonzero(self.face_mask(k))
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def procedural_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A room behind the caller: a colour gradient and soft light, a random amount of clutter
    (shelves, frames, furniture edges) and fine texture -- from a plain wall to a busy room, so
    the codec has to spend a realistic share of its bits outside the face."""
    sw, sh = max(2, width // 8), max(2, height // 8)  # smooth parts at 1/8 size, then upscaled
    y, x = np.mgrid[:sh, :sw].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    a = rng.uniform(0, 2 * np.pi)
    t = ((x / sw - 0.5) * np.cos(a) + (y / sh - 0.5) * np.sin(a)) + 0.5
    img = c0 + (c1 - c0) * t[..., None]
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, sw), rng.uniform(0, sh)
        r = rng.uniform(0.05, 0.3) * sw
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        img += rng.uniform(-80, 80, 3) * blob[..., None]
    img = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 40))):  # clutter: filled and outlined boxes, lines
        x0, y0 = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        x1, y1 = x0 + int(rng.uniform(5, width / 3)), y0 + int(rng.uniform(3, height / 3))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
    blur = rng.uniform(0.0, 2.5)  # depth of field: sharp room to soft
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    amp = rng.uniform(3, 25)
    noise = rng.standard_normal((height // 2, width // 2)).astype(np.float32)
    noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 0.7), (width, height))
    img += amp * noise[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _edge_alpha(size: int, feather: float) -> np.ndarray:
    a = np.zeros((size, size), np.float32)
    pad = max(1, int(round(feather * size)))
    a[pad:-pad, pad:-pad] = 1.0
    return cv2.GaussianBlur(a, (0, 0), max(0.5, feather * size / 2))


def make_scene(photo: np.ndarray, rng: np.random.Generator, cfg: SceneConfig | None = None,
               background: np.ndarray | None = None) -> SceneClip:
    """A clean clip of ``photo`` (S×S×3 uint8 RGB) in a webcam frame (see the module docstring)."""
    c = cfg or SceneConfig()
    s = photo.shape[0]
    if photo.ndim != 3 or photo.shape[1] != s or photo.shape[2] != 3:
        raise ValueError(f"expected a square S x S x 3 photo, got {photo.shape}")
    if background is None:
        background = procedural_background(c.width, c.height, rng)
    elif background.shape[:2] != (c.height, c.width):
        background = cv2.resize(background, (c.width, c.height), interpolation=cv2.INTER_AREA)
    lo, hi = np.log(c.face_px[0]), np.log(c.face_px[1])
    side = float(np.exp(rng.uniform(lo, hi)))
    side = min(side, 0.95 * min(c.width, c.height))
    margin = side / 2 + 4
    pos = np.array([rng.uniform(margin, c.width - margin), rng.uniform(margin, min(c.height - margin,
                    max(margin, 0.45 * c.height + rng.normal(0, 0.05 * c.height))))])
    vel = rng.normal(0, c.drift_px, 2)
    alpha = _edge_alpha(s, c.feather)[..., None]
    rgba = np.concatenate([photo.astype(np.float32) * alpha, alpha], axis=2)  # premultiplied
    frames, affines = [], []
    for _ in range(c.frames):
        vel = 0.8 * vel + rng.normal(0, c.drift_px * 0.6, 2)
        pos = np.clip(pos + vel, margin, [c.width - margin, c.height - margin])
        side = float(np.clip(side * (1 + rng.normal(0, c.breathe)), c.face_px[0] * 0.8,
                             0.95 * min(c.width, c.height)))
        k = side / s
        m = np.array([[k, 0, pos[0] - k * s / 2], [0, k, pos[1] - k * s / 2]], np.float64)
        # Only the photo's bounding box in the frame changes: warp into that region.
        x0, y0 = max(0, int(m[0, 2]) - 2), max(0, int(m[1, 2]) - 2)
        x1, y1 = min(c.width, int(m[0, 2] + side) + 3), min(c.height, int(m[1, 2] + side) + 3)
        local = m.copy()
        local[:, 2] -= (x0, y0)
        src = rgba if k >= 0.5 else cv2.GaussianBlur(rgba, (0, 0), 0.4 / k)
        warped = cv2.warpAffine(src, local, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_CONSTANT)
        a = np.clip(warped[..., 3:], 0, 1)
        frame = background.copy()
        roi = warped[..., :3] + frame[y0:y1, x0:x1].astype(np.float32) * (1 - a)
        frame[y0:y1, x0:x1] = np.clip(np.rint(roi), 0, 255).astype(np.uint8)
        frames.append(frame)
        affines.append(m)
    return SceneClip(frames, affines, s)
