"""The restorer contract: a batch of aligned face crops in, the same batch restored out."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Restorer(Protocol):
    """Anything that restores aligned faces.

    ``restore`` takes ``N x S x S x 3`` uint8 RGB crops aligned to the pipeline's template at
    ``face_size = S`` and returns the same shape and dtype.

    Threads: a Restorer is *not* required to be thread-safe. ``restore`` is called from one
    thread at a time; a caller that shares one restorer between threads serialises the calls
    itself (the live server does it in its restore worker, the restorer pool runs one batch at a
    time). The model restorers take no locks; ``RemoteRestorer`` locks only its one HTTP
    connection, which its ``info``/``stats`` calls share.
    """

    face_size: int
    name: str

    def restore(self, faces: np.ndarray) -> np.ndarray: ...


class RestorerError(RuntimeError):
    """A restorer could not be loaded (missing, corrupt or mismatched files)."""


def check_batch(faces: np.ndarray, face_size: int) -> np.ndarray:
    """Validate a batch of crops and return it as a contiguous uint8 array."""
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.shape[1:3] != (face_size, face_size):
        raise ValueError(f"expected N x {face_size} x {face_size} x 3 faces, got {faces.shape}")
    if faces.dtype != np.uint8:
        raise ValueError(f"expected uint8 faces, got {faces.dtype}")
    return np.ascontiguousarray(faces)
