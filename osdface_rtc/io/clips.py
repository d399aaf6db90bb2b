"""Clip frames at a fixed size, for the live benches and the tests: the one clip reader.

- :func:`read_clip`: the first ``max_frames`` frames of a video (decoded by
  :func:`.media.read_video`) cover-resized and centre-cropped to ``size`` = (W, H), or with
  ``faces`` = K > 1, K time-shifted copies side by side (:func:`tile_faces`); and the clip's
  frame rate (:func:`.media.probe_video`). Frames larger than needed are shrunk while decoding,
  so a long 4K clip does not fill the memory.
- :func:`load_clip_yuv`: the same frames as yuv420p arrays (what a WebRTC source track sends).
- :func:`fit_frame`, :func:`tile_faces`, :func:`parse_resolution`: the pieces, also used alone.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .media import MediaError, probe_video, read_video

RESOLUTIONS = {"360p": (640, 360), "480p": (640, 480), "720p": (1280, 720)}


def parse_resolution(text: str) -> tuple[int, int]:
    """``480p``/``720p``/``360p`` or ``WxH`` (even numbers) -> (W, H)."""
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)} or WxH, got {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise ValueError(f"resolution {text!r}: even sizes >= 64 expected")
    return w, h


def _cover_scale(shape: tuple[int, ...], size: tuple[int, int]) -> float:
    return max(size[0] / shape[1], size[1] / shape[0])


def _cover(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (aspect kept) to the smallest image that covers ``size`` = (W, H)."""
    w, h = size
    ih, iw = rgb.shape[:2]
    s = _cover_scale(rgb.shape, size)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    if (nw, nh) == (iw, ih):
        return rgb
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def fit_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cover-resize and centre-crop an RGB image to ``size`` = (W, H)."""
    w, h = size
    img = _cover(rgb, size)
    nh, nw = img.shape[:2]
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


def tile_faces(frames_rgb: list[np.ndarray], k: int, size: tuple[int, int], shift: int = 17) -> list[np.ndarray]:
    """``k`` tiles side by side (``size`` = (W, H) of the result), each a centre crop of the
    clip at its full scale (so each face keeps its webcam size), tile j ``j*shift`` frames later
    (so the faces move differently)."""
    if k < 1:
        raise ValueError(f"faces must be >= 1, got {k}")
    w, h = size
    if k == 1:
        return [fit_frame(f, size) for f in frames_rgb]
    edges = [round(j * w / k / 2) * 2 for j in range(k + 1)]
    out = []
    n = len(frames_rgb)
    for i in range(n):
        img = np.empty((h, w, 3), np.uint8)
        for j in range(k):
            x0, x1 = edges[j], edges[j + 1]
            img[:, x0:x1] = fit_frame(frames_rgb[(i + j * shift) % n], (x1 - x0, h))
        out.append(img)
    return out


def read_clip(path: Path, size: tuple[int, int], max_frames: int = 150,
              faces: int = 1) -> tuple[list[np.ndarray], float]:
    """Up to ``max_frames`` RGB frames at ``size`` = (W, H) (``faces`` > 1: that many tiles, see
    :func:`tile_faces`) and the clip's frame rate. Raises :class:`.media.MediaError` for a file
    without frames."""
    fps = float(probe_video(Path(path)).fps)
    raw: list[np.ndarray] = []
    for rgb in read_video(Path(path)):
        # no larger than needed to cover the output (each tile needs less than that)
        raw.append(_cover(rgb, size) if _cover_scale(rgb.shape, size) < 1 else rgb)
        if len(raw) >= max_frames:
            break
    if not raw:
        raise MediaError(f"{path}: no video frames")
    return tile_faces(raw, faces, size), fps


def to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame (even sizes) as a planar yuv420p array of shape (H * 3 / 2, W)."""
    import av

    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def load_clip_yuv(path: Path, size: tuple[int, int], max_frames: int = 150,
                  faces: int = 1) -> tuple[list[np.ndarray], float]:
    """:func:`read_clip` as yuv420p arrays; also the clip's frame rate."""
    frames, fps = read_clip(path, size, max_frames, faces)
    return [to_yuv420(f) for f in frames], fps
