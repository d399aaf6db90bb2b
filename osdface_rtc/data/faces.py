"""UTKFace faces for training and evaluation.

- :func:`split_of`: fixed train/val split by a stable hash of the file name (~5 % val).
- :func:`list_faces` / :func:`read_face`: the face files of a split, one face as uint8 RGB.
- :func:`load_faces`: the 200x200 UTKFace crops of a split resized to ``face_size`` with
  ``INTER_AREA`` (the live aligner's template is measured on UTKFace, so a resized crop is what
  the model sees live), cached as ``.cache/utkface_<split>_<size>_<key>.npy``.
- :func:`laplacian_variance`: sharpness per face (the trainer keeps the sharpest as targets).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from ..paths import CACHE_DIR, faces_dir

log = logging.getLogger("osdface_rtc")

#: Share of files in the val split.
VAL_FRACTION = 0.05


def split_of(filename: str | Path) -> str:
    """``"train"`` or ``"val"`` for a face file, from a stable hash of its base name."""
    digest = hashlib.sha1(Path(filename).name.encode()).digest()
    return "val" if int.from_bytes(digest[:4], "big") < VAL_FRACTION * 2**32 else "train"


def list_faces(split: str, data_dir: Path | str | None = None) -> list[Path]:
    """Sorted face files of ``split`` ("train", "val" or "all") in ``data_dir``."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    d = Path(data_dir) if data_dir is not None else faces_dir()
    if not d.is_dir():
        raise FileNotFoundError(
            f"face folder {d} not found: set OSDFACE_RTC_DATA (folder with faces/utkface/) "
            "or pass data_dir"
        )
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no .jpg/.png faces in {d}")
    return files if split == "all" else [p for p in files if split_of(p) == split]


def read_face(path: Path, face_size: int) -> np.ndarray:
    """One face file as ``S x S x 3`` uint8 RGB, resized with ``INTER_AREA`` (or cubic if larger)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    interp = cv2.INTER_AREA if bgr.shape[0] >= face_size else cv2.INTER_CUBIC
    if bgr.shape[:2] != (face_size, face_size):
        bgr = cv2.resize(bgr, (face_size, face_size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_faces(
    split: str,
    face_size: int,
    limit: int | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = CACHE_DIR,
) -> np.ndarray:
    """All faces of ``split`` as ``N x S x S x 3`` uint8 RGB (first ``limit`` in name order).

    The whole split is resized once and cached (key = split, size, folder and its file list);
    ``limit`` slices the cached array. ``cache_dir=None`` disables the cache.
    """
    files = list_faces(split, data_dir)
    key = hashlib.sha1(
        ("\n".join(p.name for p in files) + str(files[0].parent.resolve())).encode()
    ).hexdigest()[:10]
    path = Path(cache_dir) / f"utkface_{split}_{face_size}_{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        faces = np.load(path, mmap_mode="r")
    elif path is None and limit is not None:
        return np.stack([read_face(p, face_size) for p in files[:limit]])
    else:
        faces = np.stack([read_face(p, face_size) for p in files])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, faces)
            tmp.replace(path)
            log.info("cached %d %s faces at %dpx in %s", len(faces), split, face_size, path)
    return np.ascontiguousarray(faces[:limit] if limit is not None else faces)


def laplacian_variance(faces: np.ndarray) -> np.ndarray:
    """Sharpness per face (variance of the Laplacian of the grey image); filter HQ targets by it."""
    return np.array([
        cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in faces
    ])
