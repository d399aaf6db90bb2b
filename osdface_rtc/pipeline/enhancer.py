"""FaceEnhancer: one frame in, one frame out (detect -> smooth -> align -> restore -> stabilise
-> blend).

One ``FaceEnhancer`` per stream (it keeps the face tracker's and the temporal filter's state).
A restorer is called from one thread at a time: share one between streams through its restore
worker (:mod:`osdface_rtc.rtc.worker`, what the live server does), not by calling ``restore``
from several threads.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

from ..restore.base import Restorer
from .align import align_faces, face_affine, scale_affine, warp_crop
from .blend import BlendConfig, paste_faces
from .detect import DetectorConfig, FaceDetector
from .smooth import FaceTracker, SmoothConfig
from .temporal import CropFilter, TemporalConfig
from .types import AlignedFaces, Face

log = logging.getLogger(__name__)

STAGES = ("detect", "align", "restore", "blend", "total")

@dataclass
class EnhancerConfig:
    strength: float = 1.0  # 0 = original face, 1 = fully restored
    upscale: int = 1  # output frame scale (1 or 2); faces are pasted at the larger size
    max_faces: int = 8
    min_face: int = 32  # pixels (input frame)
    detector: str = "both"  # short | full | both | auto
    min_confidence: float = 0.5
    smooth: SmoothConfig = field(default_factory=SmoothConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)  # weight 0 = off


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Accept H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA) uint8; return H x W x 3 RGB."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(frame).__name__} "
                         f"{getattr(frame, 'dtype', '')}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2RGB)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2RGB)
    raise ValueError(f"expected H x W, H x W x 3 or H x W x 4 image, got shape {frame.shape}")


class FaceEnhancer:
    """Enhance every face in RGB frames with a loaded :class:`Restorer`.

    >>> enh = FaceEnhancer(load_restorer())      # the shipped model, CUDA if available
    >>> out = enh.process(frame)                 # H x W x 3 uint8 RGB -> same size
    >>> enh.last_timings["restore"], len(enh.last_faces)

    ``osdface_rtc.load_enhancer(spec)`` loads the restorer from a ``--model`` spec and builds one.
    """

    def __init__(self, restorer: Restorer, config: EnhancerConfig | None = None, **overrides: Any):
        if restorer is None or isinstance(restorer, str):
            raise TypeError("FaceEnhancer takes a loaded Restorer: FaceEnhancer(load_restorer(spec)), "
                            "or osdface_rtc.load_enhancer(spec)")
        self.restorer: Restorer = restorer
        cfg = config or EnhancerConfig()
        known = {f.name for f in fields(EnhancerConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown FaceEnhancer options: {sorted(unknown)}")
        self.config = replace(cfg, **overrides)
        if self.config.upscale not in (1, 2):
            raise ValueError("upscale must be 1 or 2")
        self.detector = FaceDetector(
            DetectorConfig(
                mode=self.config.detector,
                min_confidence=self.config.min_confidence,
                min_face=self.config.min_face,
                max_faces=self.config.max_faces,
            )
        )
        self.tracker = FaceTracker(self.config.smooth)
        self.temporal = CropFilter(self.config.temporal)
        self._frame_index = 0
        self.last_timings: dict[str, float] = {k: 0.0 for k in STAGES}
        self.last_faces: list[Face] = []
        self.errors = 0
        self.last_error: str | None = None

    # -- live-settable options -------------------------------------------------------------
    @property
    def face_size(self) -> int:
        return int(self.restorer.face_size)

    @property
    def strength(self) -> float:
        return self.config.strength

    @strength.setter
    def strength(self, value: float) -> None:
        self.config.strength = float(np.clip(value, 0.0, 1.0))

    def reset(self) -> None:
        """Forget tracked faces and the temporal filter's crops (call when a new stream starts)."""
        self.tracker.reset()
        self.temporal.reset()
        self._frame_index = 0

    # -- split API (the live server budgets these separately) ------------------------------
    def detect(self, frame: np.ndarray, t: float | None = None) -> list[Face]:
        """Detect faces and smooth their keypoints over time (``t`` in seconds, default 30 fps)."""
        if t is None:
            t = self._frame_index / 30.0
        self._frame_index += 1
        return self.tracker.update(self.detector.detect(frame), t)

    def align(self, frame: np.ndarray, faces: list[Face]) -> AlignedFaces:
        return align_faces(frame, faces, self.face_size)

    def restore(self, aligned: AlignedFaces) -> AlignedFaces:
        """Restore all crops in one batched call."""
        if len(aligned) == 0:
            return aligned
        crops = self.restorer.restore(aligned.crops)
        return AlignedFaces(crops=crops, affines=aligned.affines, track_ids=list(aligned.track_ids))

    def stabilize(self, aligned: AlignedFaces, restored: AlignedFaces) -> AlignedFaces:
        """Temporal filter of this stream's restorations (:mod:`.temporal`; feed them in order)."""
        return self.temporal.apply(aligned, restored)

    def blend(
        self,
        frame: np.ndarray,
        restored: AlignedFaces,
        faces: list[Face] | None = None,
        original: AlignedFaces | None = None,
    ) -> np.ndarray:
        """Paste ``restored`` crops into ``frame`` (upscaled by ``config.upscale``).

        ``original`` is the aligned input the crops were restored from (row for row, same
        ``track_ids``); only the change restored - original is pasted. Without it the input
        crops are cut again from ``frame`` at the paste affines.

        With ``faces``, cached crops are re-warped to those faces' current keypoints (matched by
        ``track_id``; crops without a current face are dropped) -- the live fallback when the
        model misses its deadline. With ``original`` the *change* moves with the face and the
        current frame's eyes and mouth stay; without it the old restored face itself is pasted
        over the current one (``restored - current crop``).
        """
        s = self.face_size
        if original is not None and len(restored) and list(original.track_ids) != list(restored.track_ids):
            raise ValueError(f"original track_ids {list(original.track_ids)} do not match "
                             f"restored {list(restored.track_ids)}")
        if faces is not None:
            by_id = {tid: i for i, tid in enumerate(restored.track_ids)}
            keep = [(by_id[f.track_id], f) for f in faces if f.track_id in by_id]
            rows = [i for i, _ in keep]
            affines = np.stack([face_affine(f, s) for _, f in keep]) if keep else np.zeros((0, 2, 3))
            ids = [f.track_id for _, f in keep]
            restored = AlignedFaces(restored.crops[rows].reshape(-1, s, s, 3), affines, ids)
            if original is not None:  # the change (restored - its own input) moves with the face
                original = AlignedFaces(original.crops[rows].reshape(-1, s, s, 3), affines, ids)
        if original is None:  # the input crops at the paste affines
            original = AlignedFaces(
                crops=np.stack([warp_crop(frame, m, s) for m in restored.affines]) if len(restored)
                else restored.crops,
                affines=restored.affines,
                track_ids=restored.track_ids,
            )
        up = self.config.upscale
        if up != 1:
            h, w = frame.shape[:2]
            frame = cv2.resize(frame, (w * up, h * up), interpolation=cv2.INTER_LANCZOS4)
            affines = np.stack([scale_affine(m, up) for m in restored.affines]) if len(restored) else restored.affines
            restored = AlignedFaces(restored.crops, affines, restored.track_ids)
            original = AlignedFaces(original.crops, affines, original.track_ids)
        return paste_faces(frame, restored, original, self.config.strength, self.config.blend)

    # -- one call ---------------------------------------------------------------------------
    def process(self, frame: np.ndarray, t: float | None = None) -> np.ndarray:
        """Enhance all faces in one frame. Successive calls are frames of one stream (faces are
        tracked and their restorations stabilised over time): call :meth:`reset` between
        unrelated images. On a restorer error the frame passes through (counted in ``errors``,
        message in ``last_error``)."""
        frame = as_rgb(frame)
        timings = {k: 0.0 for k in STAGES}
        t0 = time.perf_counter()
        faces = self.detect(frame, t)
        t1 = time.perf_counter()
        aligned = self.align(frame, faces)
        t2 = time.perf_counter()
        try:
            restored = self.stabilize(aligned, self.restore(aligned))
        except Exception as exc:  # noqa: BLE001 - keep the stream going (e.g. CUDA OOM)
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("restorer failed, passing the frame through: %s", self.last_error)
            restored = AlignedFaces.empty(self.face_size)
        t3 = time.perf_counter()
        out = self.blend(frame, restored, original=aligned)
        t4 = time.perf_counter()
        timings.update(
            detect=(t1 - t0) * 1e3, align=(t2 - t1) * 1e3, restore=(t3 - t2) * 1e3,
            blend=(t4 - t3) * 1e3, total=(t4 - t0) * 1e3,
        )
        self.last_timings = timings
        self.last_faces = faces
        return out

    def close(self) -> None:
        self.detector.close()
