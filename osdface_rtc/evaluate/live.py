"""Quality the way a call shows it: whole frames, real codecs, through the full face pipeline.

Two sources of clean video:

- **stills in frames** (``photos``): each val face photo is placed in a 640×480 webcam frame
  and moves slightly for ``SceneConfig.frames`` frames (:mod:`osdface_rtc.data.scenes`); the
  face region is known exactly (the face ellipse carried through the placement);
- **clips** (``videos``): real talking-head clips; the face region is the box the detector
  finds on the *clean* frame (smoothed over time).

Each clean clip is damaged as a call damages it (:mod:`osdface_rtc.data.call`: the whole frame
downscaled, real VP8/H.264 with inter prediction at a call bitrate, upscaled back), then every
method runs through the same :class:`~osdface_rtc.pipeline.enhancer.FaceEnhancer` path —
detect and smooth on the damaged frame, align, restore, stabilise, paste back — exactly as
``FaceEnhancer.process`` does (detection is shared between methods: it does not depend on the
restorer; each method has its own temporal filter, as a stream of its own). ``input`` is the
damaged frame itself. Scores inside the face region against the
clean frame: PSNR, SSIM, dlib identity distance (optional) and, for clips, the **temporal
error** — RMS of (output change from the previous frame − clean change), i.e. flicker.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data.call import DEFAULT_CONDITIONS, parse_damage, damage_clip
from ..data.scenes import SceneConfig, make_scene
from ..pipeline.enhancer import FaceEnhancer
from ..pipeline.temporal import CropFilter, TemporalConfig
from ..pipeline.types import AlignedFaces
from .metrics import psnr, ssim
from .runner import Method

log = logging.getLogger("osdface_rtc")


@dataclass
class LiveEvalConfig:
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    limit: int = 100  # val photos (stills mode)
    scored_frames: int = 3  # stills: the last N frames of each clip are scored
    warmup_frames: int = 3  # stills: restored before them (not scored) for the temporal filter
    max_frames: int = 150  # clips: frames read from each video
    seed: int = 0
    detector: str = "both"
    temporal: TemporalConfig = field(default_factory=TemporalConfig)  # the pipeline's filter (weight 0: off)
    identity_every: int = 10  # clips: identity on every Nth scored frame
    grid_faces: int = 4
    scene: SceneConfig = field(default_factory=SceneConfig)
    progress: bool = True


@dataclass
class LiveRow:
    source: str  # "stills" or the clip's name
    condition: str
    method: str
    n: int  # scored frames
    psnr: float
    ssim: float
    id_dist: float | None
    temporal: float | None  # clips only; lower is better


@dataclass
class LiveResult:
    rows: list[LiveRow] = field(default_factory=list)
    #: (source, condition) -> method -> per-frame PSNR
    curves: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    #: condition -> method (and "clean") -> face crops for the grid
    samples: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)


def face_square(box: tuple[int, int, int, int], shape: tuple[int, int], margin: float = 0.15) -> tuple[int, int, int, int]:
    """A square around ``box`` (x0, y0, x1, y1) with a margin, clipped to the frame."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = shape
    return (int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
            int(min(w, cx + side / 2)), int(min(h, cy + side / 2)))


def chip(frame: np.ndarray, box: tuple[int, int, int, int], size: int = 150) -> np.ndarray:
    x0, y0, x1, y1 = box
    return cv2.resize(frame[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def enhance_through(damaged: list[np.ndarray], methods: list[Method], enh: FaceEnhancer,
                    scored: set[int], fps: float = 30.0, warmup: int = 0) -> dict[str, dict[int, np.ndarray]]:
    """Run every method over ``damaged`` through the pipeline; outputs at the ``scored`` frames.

    Each method has its own temporal filter (the enhancer's settings), as a stream of its own;
    ``warmup`` frames before the first scored one are restored too (not scored), so the filter
    holds the state it would have in a running stream."""
    enh.reset()
    filters = {m.label: CropFilter(enh.config.temporal) for m in methods}
    start = min(scored, default=0) - warmup
    outs: dict[str, dict[int, np.ndarray]] = {m.label: {} for m in methods}
    for k, frame in enumerate(damaged):
        faces = enh.detect(frame, k / fps)
        if k < start:
            continue
        aligned = enh.align(frame, faces)
        for m in methods:
            if m.restorer is None or len(aligned) == 0:
                out = frame
            else:
                restored = AlignedFaces(m.restorer.restore(aligned.crops), aligned.affines, aligned.track_ids)
                out = enh.blend(frame, filters[m.label].apply(aligned, restored), original=aligned)
            if k in scored:
                outs[m.label][k] = out
    return outs


class _Scorer:
    """Accumulates per-method scores for one (source, condition)."""

    def __init__(self, methods: list[Method], identity) -> None:
        self.labels = [m.label for m in methods]
        self.identity = identity
        self.psnr = {m: [] for m in self.labels}
        self.ssim = {m: [] for m in self.labels}
        self.ids = {m: [] for m in self.labels}
        self.temporal = {m: [] for m in self.labels}

    def frame(self, outs: dict[str, np.ndarray], clean: np.ndarray, mask: np.ndarray,
              box: tuple[int, int, int, int] | None) -> None:
        for m in self.labels:
            self.psnr[m].append(psnr(outs[m], clean, mask))
            self.ssim[m].append(ssim(outs[m], clean, mask))
        if self.identity is not None and box is not None:
            ref = chip(clean, box)
            shape = self.identity.shape(ref)
            emb = self.identity.embed(ref[None], [shape])
            for m in self.labels:
                self.ids[m].append(float(self.identity.distances(chip(outs[m], box)[None], emb, [shape])[0]))

    def step(self, outs: dict[str, np.ndarray], prev: dict[str, np.ndarray], clean: np.ndarray,
             clean_prev: np.ndarray, mask: np.ndarray) -> None:
        dc = clean.astype(np.float32) - clean_prev
        for m in self.labels:
            d = outs[m].astype(np.float32) - prev[m] - dc
            self.temporal[m].append(float(np.sqrt(np.mean(d[mask] ** 2))))

    def rows(self, source: str, condition: str) -> list[LiveRow]:
        def mean(v: list[float]) -> float | None:
            return float(np.mean(v)) if v else None
        return [LiveRow(source, condition, m, len(self.psnr[m]), float(np.mean(self.psnr[m])),
                        float(np.mean(self.ssim[m])), mean(self.ids[m]), mean(self.temporal[m]))
                for m in self.labels if self.psnr[m]]


def eval_stills(photos: list[np.ndarray], methods: list[Method], cfg: LiveEvalConfig,
                identity=None, result: LiveResult | None = None) -> LiveResult:
    """Val photos placed in webcam frames, through each call condition and the pipeline."""
    from tqdm import tqdm

    result = result or LiveResult()
    enh = FaceEnhancer(next(m.restorer for m in methods if m.restorer is not None), detector=cfg.detector,
                       temporal=cfg.temporal)
    scenes = [make_scene(p, np.random.default_rng([cfg.seed, i]), cfg.scene) for i, p in enumerate(photos)]
    n = cfg.scene.frames
    scored = set(range(n - cfg.scored_frames, n))
    bar = tqdm(total=len(cfg.conditions) * len(scenes), desc="live eval (stills)", disable=not cfg.progress)
    for cond in cfg.conditions:
        damage = parse_damage(cond)
        scorer = _Scorer(methods, identity)
        samples = result.samples.setdefault(cond, {})
        for i, clip in enumerate(scenes):
            outs = enhance_through(damage_clip(clip.frames, damage), methods, enh, scored,
                                   warmup=cfg.warmup_frames)
            for k in sorted(scored):
                box = face_square(clip.face_box(k), clip.frames[k].shape[:2])
                scorer.frame({m: o[k] for m, o in outs.items()}, clip.frames[k], clip.face_mask(k),
                             box if k == n - 1 else None)
            if i < cfg.grid_faces:
                box = face_square(clip.face_box(n - 1), clip.frames[n - 1].shape[:2])
                for m, o in outs.items():
                    samples.setdefault(m, []).append(chip(o[n - 1], box, 160))
                samples.setdefault("clean", []).append(chip(clip.frames[n - 1], box, 160))
            bar.update(1)
        result.rows += scorer.rows("stills", cond)
    bar.close()
    enh.close()
    return result


def clean_face_regions(frames: list[np.ndarray], detector: str) -> list[tuple[np.ndarray, tuple] | None]:
    """Per clean frame: (mask of all face boxes, the largest box) or None when no face."""
    from ..restore.classical import IdentityRestorer

    enh = FaceEnhancer(IdentityRestorer(), detector=detector)
    out = []
    for k, f in enumerate(frames):
        faces = enh.detect(f, k / 30.0)
        if not faces:
            out.append(None)
            continue
        mask = np.zeros(f.shape[:2], bool)
        h, w = mask.shape
        for face in faces:
            x0, y0, x1, y1 = np.round(face.box).astype(int)
            mask[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
        big = max(faces, key=lambda fc: fc.size).box
        out.append((mask, face_square(tuple(np.round(big).astype(int)), (h, w))))
    enh.close()
    return out


def eval_video(path: Path, methods: list[Method], cfg: LiveEvalConfig, identity=None,
               result: LiveResult | None = None) -> LiveResult:
    """One real clip through each call condition and the pipeline (every frame scored)."""
    from tqdm import tqdm

    from ..io.media import probe_video, read_video

    result = result or LiveResult()
    fps = float(probe_video(path).fps or 30)
    frames = [f for _, f in zip(range(cfg.max_frames), read_video(path))]
    if len(frames) < 2:
        raise ValueError(f"{path}: need at least 2 frames, got {len(frames)}")
    regions = clean_face_regions(frames, cfg.detector)
    enh = FaceEnhancer(next(m.restorer for m in methods if m.restorer is not None), detector=cfg.detector,
                       temporal=cfg.temporal)
    for cond in tqdm(cfg.conditions, desc=f"live eval ({path.name})", disable=not cfg.progress):
        damage = parse_damage(cond)
        outs = enhance_through(damage_clip(frames, damage), methods, enh, set(range(len(frames))), fps)
        scorer = _Scorer(methods, identity)
        curves = result.curves.setdefault((path.stem, cond), {m.label: [] for m in methods})
        for k, region in enumerate(regions):
            if region is None:
                continue
            mask, box = region
            at_k = {m: o[k] for m, o in outs.items()}
            scorer.frame(at_k, frames[k], mask, box if k % cfg.identity_every == 0 else None)
            for m in curves:
                curves[m].append(scorer.psnr[m][-1])
            if k > 0 and regions[k - 1] is not None:
                scorer.step(at_k, {m: o[k - 1] for m, o in outs.items()}, frames[k], frames[k - 1],
                            mask & regions[k - 1][0])
        result.rows += scorer.rows(path.stem, cond)
        mid = len(frames) // 2
        if regions[mid] is not None:
            samples = result.samples.setdefault(f"{path.stem} {cond}", {})
            for m, o in outs.items():
                samples.setdefault(m, []).append(chip(o[mid], regions[mid][1], 160))
            samples.setdefault("clean", []).append(chip(frames[mid], regions[mid][1], 160))
    enh.close()
    return result
