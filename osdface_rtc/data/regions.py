"""The face region the quality numbers are measured in.

Face crops here are framed like UTKFace's aligned crops (the live pipeline's alignment template
is measured on them). On the mean val face the eyes sit at y = 0.31 S, the nose tip at 0.58 S
and the mouth at ~0.72 S, with the outer eye corners at x = 0.2 S / 0.77 S. The region is the
ellipse centred at (0.5 S, 0.53 S) with semi-axes (0.38 S, 0.45 S): eyes, brows, nose, mouth,
cheeks and chin, without most hair and background (54 % of the crop) -- background and hair are
not what the restorer is for, and there the paste-back blend keeps the original frame.
"""
from __future__ import annotations

from functools import lru_cache

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
