"""Alignment: a similarity warp of the face's keypoints onto the restorer's template.

The template is the median position of mediapipe's keypoints on the training faces
(UTKFace "crop_part1", 200 x 200 aligned crops), measured with the same short-range detector
the pipeline uses, in units of the crop side. So an aligned live crop is framed like the
training crops, and a training crop is simply a UTKFace image resized to ``face_size``.
Re-measure with ``python -m osdface_rtc.pipeline.align`` (prints the numbers below).
"""
from __future__ import annotations

import cv2
import numpy as np

from .types import AlignedFaces, Face

#: Median keypoints on 1,032 UTKFace crops (every 9th file), crop side = 1.
#: Rows: right eye, left eye, nose tip, mouth centre (ears are not used: unreliable on turned heads).
TEMPLATE_UNIT = np.array(
    [[0.2859, 0.3040], [0.6960, 0.2942], [0.4848, 0.5240], [0.4928, 0.7287]], dtype=np.float64
)
#: Which of the detector's 6 keypoints are matched to the template rows.
ALIGN_POINTS = (0, 1, 2, 3)
#: Eyes count more than nose/mouth (the mouth moves when talking).
ALIGN_WEIGHTS = np.array([1.0, 1.0, 0.6, 0.6])


def template(face_size: int) -> np.ndarray:
    """Template keypoints in pixels of a ``face_size`` crop."""
    return TEMPLATE_UNIT * face_size


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (2x3).

    Weighted Umeyama: closed form, deterministic, no outlier rejection (4 points).
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    cov = (d * w[:, None]).T @ s
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    corr = np.diag([1.0, sign])
    rot = u @ corr @ vt
    var_s = float((w * (s**2).sum(1)).sum())
    scale = float(np.trace(np.diag(sig) @ corr)) / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def face_affine(face: Face, face_size: int) -> np.ndarray:
    """Frame -> crop warp for one face."""
    src = face.landmarks[list(ALIGN_POINTS)]
    return similarity_transform(src, template(face_size), ALIGN_WEIGHTS)


def warp_crop(frame: np.ndarray, affine: np.ndarray, face_size: int) -> np.ndarray:
    """Cut one aligned crop. Large faces are pre-smoothed to avoid aliasing when shrunk."""
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    src = frame
    if scale < 0.5:  # shrinking more than 2x: area-like prefilter
        sigma = 0.4 / scale
        src = cv2.GaussianBlur(frame, (0, 0), sigma)
    interp = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        src, affine, (face_size, face_size), flags=interp, borderMode=cv2.BORDER_REPLICATE
    )


def align_faces(frame: np.ndarray, faces: list[Face], face_size: int) -> AlignedFaces:
    """Crops for every face, in the order given."""
    if not faces:
        return AlignedFaces.empty(face_size)
    affines = np.stack([face_affine(f, face_size) for f in faces])
    crops = np.stack([warp_crop(frame, m, face_size) for m in affines])
    return AlignedFaces(crops=crops, affines=affines, track_ids=[f.track_id for f in faces])


def scale_affine(affine: np.ndarray, factor: float) -> np.ndarray:
    """The same warp for a frame resized by ``factor`` (crop = A · (x_big / factor))."""
    out = affine.copy()
    out[:, :2] = affine[:, :2] / factor
    return out


def measure_template(paths, detector) -> np.ndarray:  # pragma: no cover - maintenance tool
    """Median keypoints (unit crop side) of the first face found in each image."""
    pts = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            continue
        faces = detector.detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if faces:
            pts.append(faces[0].landmarks[list(ALIGN_POINTS)] / np.array(img.shape[1::-1]))
    return np.median(np.array(pts), axis=0)


if __name__ == "__main__":  # pragma: no cover
    from ..paths import faces_dir
    from .detect import DetectorConfig, FaceDetector

    files = sorted(faces_dir().glob("*.jpg"))[::9]
    det = FaceDetector(DetectorConfig(mode="short", min_face=0))
    print(np.round(measure_template(files, det), 4).tolist())
