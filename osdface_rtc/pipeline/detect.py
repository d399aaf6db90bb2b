"""Face detection + keypoints with mediapipe's bundled BlazeFace models (no download).

mediapipe 0.10.21 is the last wheel that ships the legacy ``face_detection`` models inside the
package. The short-range model (faces within ~2 m, e.g. a webcam) is fast and very reliable on
close faces; the full-range model also finds small, distant faces. ``mode="both"`` runs the two
and merges them with non-maximum suppression (the default: several people, far and near).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from .types import Face

log = logging.getLogger(__name__)


@dataclass
class DetectorConfig:
    mode: str = "both"  # "short" | "full" | "both" | "auto" (short, then full if none found)
    min_confidence: float = 0.5
    min_face: int = 32  # ignore faces smaller than this (box side, input pixels)
    max_faces: int = 8  # keep the largest N
    nms_iou: float = 0.3


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(faces: list[Face], iou: float) -> list[Face]:
    """Keep the highest-scoring face of each overlapping group."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(box_iou(f.box, k.box) < iou for k in kept):
            kept.append(f)
    return kept


class FaceDetector:
    """mediapipe BlazeFace detector returning :class:`Face` objects in pixel coordinates."""

    def __init__(self, config: DetectorConfig | None = None):
        import mediapipe as mp

        self.config = config or DetectorConfig()
        if self.config.mode not in ("short", "full", "both", "auto"):
            raise ValueError(f"detector mode must be short|full|both|auto, got {self.config.mode!r}")
        fd = mp.solutions.face_detection
        conf = self.config.min_confidence
        self._short = fd.FaceDetection(model_selection=0, min_detection_confidence=conf)
        self._full = fd.FaceDetection(model_selection=1, min_detection_confidence=conf)
        # mediapipe graphs are not re-entrant: one call at a time per detector.
        self._lock = threading.Lock()

    def _run(self, model, frame: np.ndarray) -> list[Face]:
        h, w = frame.shape[:2]
        result = model.process(frame)
        faces = []
        for d in result.detections or []:
            rb = d.location_data.relative_bounding_box
            box = np.array(
                [rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h]
            )
            kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints])
            faces.append(Face(box=box, landmarks=kps, score=float(d.score[0])))
        return faces

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Detect faces in an H x W x 3 uint8 RGB frame, largest first."""
        c = self.config
        frame = np.ascontiguousarray(frame)
        with self._lock:
            if c.mode == "short":
                faces = self._run(self._short, frame)
            elif c.mode == "full":
                faces = self._run(self._full, frame)
            else:
                faces = self._run(self._short, frame)
                if c.mode == "both" or not faces:
                    faces = nms(faces + self._run(self._full, frame), c.nms_iou)
        faces = [f for f in faces if f.size >= c.min_face]
        faces.sort(key=lambda f: -f.size)
        return faces[: c.max_faces]

    def close(self) -> None:
        self._short.close()
        self._full.close()
