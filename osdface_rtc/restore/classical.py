"""Classical restorer: the baseline every learned model must beat.

Two steps per crop, at ``face_size`` as aligned by the pipeline: OpenCV's colour non-local-means
denoise (``fastNlMeansDenoisingColored``: removes codec/sensor noise), then an unsharp mask
(the denoised crop plus ``unsharp_amount`` times its difference from a Gaussian blur of
``unsharp_sigma``: recovers edge contrast lost to blur and downscaling). Nothing else: no
upsampling here (crops arrive at ``face_size`` from alignment) and no deblocking filter.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .base import check_batch


@dataclass
class ClassicalConfig:
    face_size: int = 128
    denoise_h: float = 5.0  # NLM filter strength on luma
    denoise_h_color: float = 5.0
    unsharp_sigma: float = 1.2
    unsharp_amount: float = 0.6


class ClassicalRestorer:
    name = "classical"

    def __init__(self, config: ClassicalConfig | None = None, face_size: int | None = None):
        self.config = config or ClassicalConfig()
        if face_size is not None:
            self.config.face_size = int(face_size)
        self.face_size = self.config.face_size

    def restore_one(self, face: np.ndarray) -> np.ndarray:
        c = self.config
        bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
        den = cv2.fastNlMeansDenoisingColored(bgr, None, c.denoise_h, c.denoise_h_color, 5, 11)
        blur = cv2.GaussianBlur(den, (0, 0), c.unsharp_sigma)
        sharp = cv2.addWeighted(den, 1.0 + c.unsharp_amount, blur, -c.unsharp_amount, 0)
        return cv2.cvtColor(sharp, cv2.COLOR_BGR2RGB)

    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        return np.stack([self.restore_one(f) for f in faces]) if len(faces) else faces.copy()


class IdentityRestorer:
    """Returns the crops unchanged (tests, and measuring the pipeline without a model)."""

    name = "identity"

    def __init__(self, face_size: int = 128):
        self.face_size = int(face_size)

    def restore(self, faces: np.ndarray) -> np.ndarray:
        return check_batch(faces, self.face_size).copy()
