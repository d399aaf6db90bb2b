"""Face-region image metrics: PSNR and SSIM inside an elliptical face mask.

Face region: the eval faces are UTKFace crops resized to ``S x S`` (the same framing as the live
pipeline's aligned crops). On the mean val face the eyes sit at y = 0.31 S, the nose tip at
0.58 S and the mouth at ~0.72 S, with the outer eye corners at x = 0.2 S / 0.77 S. The mask is
the ellipse centred at (0.5 S, 0.53 S) with semi-axes (0.38 S, 0.45 S): eyes, brows, nose,
mouth, cheeks and chin, without most hair and background (54 % of the crop). Background and
hair are not what the restorer is for, and there the paste-back blend keeps the original frame.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

#: Ellipse (centre x, centre y, semi-axis x, semi-axis y) as fractions of the crop size.
FACE_ELLIPSE: tuple[float, float, float, float] = (0.5, 0.53, 0.38, 0.45)


@lru_cache(maxsize=8)
def face_mask(size: int) -> np.ndarray:
    """Boolean ``S x S`` mask of the face region (read-only, cached per size)."""
    cx, cy, ax, ay = FACE_ELLIPSE
    y, x = (np.mgrid[:size, :size] + 0.5) / size
    mask = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
    mask.setflags(write=False)
    return mask


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two uint8 images over the RGB pixels where ``mask`` (inf if identical)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    se = diff**2 if mask is None else (diff**2)[mask]
    mse = float(se.mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


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
