"""Small data types passed between pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Order of mediapipe's face-detection keypoints (subject's right eye first).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass
class Face:
    """One detected face in frame pixel coordinates."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray  # (6, 2) mediapipe keypoints, see KEYPOINT_NAMES
    score: float
    track_id: int = -1

    @property
    def size(self) -> float:
        """Face size in pixels (the larger box side)."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class AlignedFaces:
    """Face crops aligned to the restorer's template, with the warps that made them."""

    crops: np.ndarray  # N x S x S x 3 uint8 RGB
    affines: np.ndarray  # N x 2 x 3, frame (input resolution) -> crop
    track_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.crops)

    @classmethod
    def empty(cls, face_size: int) -> "AlignedFaces":
        return cls(np.zeros((0, face_size, face_size, 3), np.uint8), np.zeros((0, 2, 3)), [])
