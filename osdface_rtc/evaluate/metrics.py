"""Image metrics: PSNR and SSIM, optionally inside a mask (the face region, see
:mod:`osdface_rtc.data.regions`) -- the one scoring path of every quality number.

:func:`psnr` caps at :data:`PSNR_CAP` (identical images), so a mean over faces stays finite;
:func:`mean_scores` is the mean PSNR / SSIM over a batch of faces that ``osdface-rtc eval``,
the live eval and the trainer's validation and model card all report.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..data.regions import FACE_ELLIPSE, face_mask

__all__ = ["FACE_ELLIPSE", "PSNR_CAP", "face_mask", "psnr", "luma", "ssim_map", "ssim", "mean_scores"]

#: Largest PSNR (dB) reported: what identical images score instead of infinity.
PSNR_CAP = 100.0


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two uint8 images over the RGB pixels where ``mask``, at most
    :data:`PSNR_CAP` (identical images)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    se = diff**2 if mask is None else (diff**2)[mask]
    mse = float(se.mean())
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, float(10 * np.log10(255.0**2 / mse)))


def luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma (Y of YCbCr, 0..255 float64) of an RGB uint8 image."""
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of the luma (Wang et al. 2004: Gaussian window sigma 1.5, K = 0.01 / 0.03)."""
    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean luma SSIM over ``mask`` (whole image when None)."""
    m = ssim_map(a, b)
    return float(m.mean() if mask is None else m[mask].mean())


def mean_scores(outs: np.ndarray, refs: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Mean :func:`psnr` and mean :func:`ssim` of ``outs[i]`` against ``refs[i]`` inside ``mask``."""
    if len(outs) != len(refs) or not len(outs):
        raise ValueError(f"need as many outputs as references (and some), got {len(outs)} and {len(refs)}")
    p = np.mean([psnr(a, b, mask) for a, b in zip(outs, refs)])
    s = np.mean([ssim(a, b, mask) for a, b in zip(outs, refs)])
    return float(p), float(s)
