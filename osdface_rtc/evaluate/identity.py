"""Identity distance with dlib's pretrained ResNet face embedding (optional dependency).

``pip install "osdface-rtc[eval]"`` (= ``dlib-bin face-recognition-models "setuptools<81"``).
The 128-d embedding's Euclidean distance is ~0.03 / 0.08 / 0.31 for the same face after x2 /
x4 / x8 down-up sampling and ~0.72 between different people; dlib's same-person threshold is
0.6. Each image is embedded from a chip cut with the 5-point landmarks of its **ground truth**
(so every method is compared at identical alignment and a degraded face cannot fail landmark
detection). ~20-75 ms per face on a CPU: an evaluation metric, not a training loss.
"""
from __future__ import annotations

import warnings

import numpy as np

#: What to tell a user whose environment lacks dlib.
INSTALL_HINT = 'identity metric needs dlib: pip install dlib-bin face-recognition-models "setuptools<81"'

#: dlib's same-person decision threshold on the embedding distance.
SAME_PERSON_THRESHOLD = 0.6

#: Face box (fractions of the crop) used when dlib's detector misses the ground truth face:
#: the median detection on 128^2 val crops (8, 8, 115, 116).
FALLBACK_BOX = (0.06, 0.06, 0.90, 0.91)


class DlibIdentity:
    """Embeds faces with dlib and measures distances to their ground truth."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
            import dlib
            import face_recognition_models as frm
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def shape(self, face: np.ndarray):
        """5-point landmarks of one RGB uint8 face (detector box, else :data:`FALLBACK_BOX`)."""
        face = np.ascontiguousarray(face)
        boxes = self._detector(face, 1)
        if boxes:
            box = max(boxes, key=lambda r: r.area())
        else:
            s = face.shape[0]
            box = self._dlib.rectangle(*(int(round(v * s)) for v in FALLBACK_BOX))
        return self._landmarks(face, box)

    def embed(self, faces: np.ndarray, shapes: list) -> np.ndarray:
        """``N x 128`` embeddings of ``faces`` cut at the given landmark ``shapes``."""
        chips = [self._dlib.get_face_chip(np.ascontiguousarray(f), s, size=150, padding=0.25)
                 for f, s in zip(faces, shapes)]
        return np.array(self._net.compute_face_descriptor(chips), dtype=np.float64)

    def distances(self, faces: np.ndarray, gt_embeddings: np.ndarray, shapes: list) -> np.ndarray:
        """Embedding distance of each face to its ground truth embedding."""
        return np.linalg.norm(self.embed(faces, shapes) - gt_embeddings, axis=1)


def load_identity() -> DlibIdentity | None:
    """The dlib identity metric, or None when dlib / its models are not installed."""
    try:
        return DlibIdentity()
    except ImportError:
        return None
