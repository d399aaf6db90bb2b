"""Training pairs cut the way the live path cuts them: (LQ, HQ) crops from whole damaged frames.

For each sample a clean clip is made (a face photo placed in a webcam frame, :mod:`.scenes`,
or a real talking-head clip), the **whole clip** is sent through a random call condition
(:mod:`.call`: downscale, real VP8/H.264 at a call bitrate, upscale), the pipeline's own
detector finds the face on the *damaged* frame, and the pipeline's aligner gives the affine.
LQ = the damaged frame warped by that affine, HQ = the clean frame warped by the same affine.
So the model trains on exactly what :class:`~osdface_rtc.pipeline.enhancer.FaceEnhancer`
feeds it: the framing errors of detection on damaged frames, whole-frame codec damage with
inter prediction, and faces of every size resampled to the crop.

:func:`build_live_pairs` runs this over many photos / clips in worker processes and caches
the result as ``.npz`` (``lq``, ``hq``: ``N x S x S x 3`` uint8).
"""
from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..pipeline.align import face_affine, warp_crop
from ..pipeline.detect import DetectorConfig, FaceDetector
from .call import CallDamage, damage_clip
from .scenes import SceneConfig, make_scene

log = logging.getLogger("osdface_rtc")

#: Reference frame area for bitrates (640 x 480): other sizes get proportionally more or less.
REF_PIXELS = 640 * 480


@dataclass(frozen=True)
class LivePairConfig:
    face_size: int = 128
    scale: tuple[float, float] = (1.5, 4.5)  # sender downscale, log-uniform
    kbps: tuple[float, float] = (50.0, 600.0)  # at 640x480, log-uniform
    p_h264: float = 0.4  # else VP8
    crops_per_scene: int = 2  # crops from the last N frames of each photo clip
    scene: SceneConfig = field(default_factory=lambda: SceneConfig(frames=16))
    clip_frames: int = 150  # frames read from each training clip
    clip_stride: int = 4  # crop every Nth frame after the first second
    detector: str = "both"  # the live pipeline's default detector


def random_damage(rng: np.random.Generator, cfg: LivePairConfig, pixels: int) -> CallDamage:
    """One call condition drawn from ``cfg`` (bitrate scaled to a frame of ``pixels``)."""
    def logu(lo: float, hi: float) -> float:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    codec = "h264" if rng.random() < cfg.p_h264 else "vp8"
    return CallDamage(round(logu(*cfg.scale), 2), codec, round(logu(*cfg.kbps) * pixels / REF_PIXELS, 1))


def crops_at(clean: np.ndarray, damaged: np.ndarray, detector: FaceDetector, size: int,
             near: np.ndarray | None = None, max_faces: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LQ, HQ) crops for the faces the detector finds on ``damaged`` (the one nearest ``near``
    when given, else up to ``max_faces``)."""
    faces = detector.detect(damaged)
    if near is not None and faces:
        faces = [min(faces, key=lambda f: np.hypot(*(f.box[:2] + f.box[2:]) / 2 - near))]
    out = []
    for f in faces[:max_faces]:
        m = face_affine(f, size)
        out.append((warp_crop(damaged, m, size), warp_crop(clean, m, size)))
    return out


def scene_pairs(photo: np.ndarray, rng: np.random.Generator, cfg: LivePairConfig,
                detector: FaceDetector, damage: CallDamage | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs from one photo placed in a frame and sent through a call."""
    clip = make_scene(photo, rng, cfg.scene)
    h, w = clip.frames[0].shape[:2]
    damage = damage or random_damage(rng, cfg, h * w)
    damaged = damage_clip(clip.frames, damage)
    pairs = []
    for k in range(len(damaged) - cfg.crops_per_scene, len(damaged)):
        centre = clip.photo_to_frame[k] @ np.array([clip.photo_size / 2, clip.photo_size / 2, 1.0])
        pairs += crops_at(clip.frames[k], damaged[k], detector, cfg.face_size, near=centre)
    return pairs


def clip_pairs(path: Path, rng: np.random.Generator, cfg: LivePairConfig,
               detector: FaceDetector) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs from a real clip: the whole clip through one random call condition."""
    from ..io.media import read_video

    frames = [f for _, f in zip(range(cfg.clip_frames), read_video(Path(path)))]
    if not frames:
        return []
    h, w = frames[0].shape[:2]
    damaged = damage_clip(frames, random_damage(rng, cfg, h * w))
    pairs = []
    for k in range(min(30, len(frames) - 1), len(frames), cfg.clip_stride):
        pairs += crops_at(frames[k], damaged[k], detector, cfg.face_size)
    return pairs


def read_photo(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _job(args: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
    kind, items, seed, cfg = args
    detector = FaceDetector(DetectorConfig(mode=cfg.detector, min_face=16, max_faces=4))
    try:
        out = []
        for index, item in items:
            rng = np.random.default_rng([seed, index])
            if kind == "photo":
                out += scene_pairs(read_photo(item), rng, cfg, detector)
            else:
                out += clip_pairs(item, rng, cfg, detector)
        return out
    finally:
        detector.close()


def build_live_pairs(photos: list[Path], clips: list[Path] = (), cfg: LivePairConfig | None = None,
                     seed: int = 0, workers: int = 2, cache_dir: Path | str | None = None,
                     clip_variants: int = 2, chunk: int = 64,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(LQ, HQ) arrays from ``photos`` (one scene each) and ``clips`` (``clip_variants``
    random call conditions each), cached under ``cache_dir`` by a key of the inputs."""
    from tqdm import tqdm

    cfg = cfg or LivePairConfig()
    key = hashlib.sha1(repr(([p.name for p in photos], [str(c) for c in clips], clip_variants,
                             seed, asdict(cfg))).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"live_pairs_{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        with np.load(path) as z:
            return z["lq"], z["hq"]
    jobs = [("photo", list(enumerate(photos))[s:s + chunk], seed, cfg) for s in range(0, len(photos), chunk)]
    jobs += [("clip", [(100_000 + i * clip_variants + v, c)], seed, cfg)
             for i, c in enumerate(clips) for v in range(clip_variants)]
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(jobs), desc="live pairs", unit="job", disable=not progress)
    # spawn, not fork: the parent may run torch/mediapipe threads (fork then corrupts malloc)
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn")) as ex:
        for res in ex.map(_job, jobs):
            pairs += res
            bar.update(1)
    bar.close()
    s = cfg.face_size
    lq = np.stack([a for a, _ in pairs]) if pairs else np.zeros((0, s, s, 3), np.uint8)
    hq = np.stack([b for _, b in pairs]) if pairs else np.zeros((0, s, s, 3), np.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, lq=lq, hq=hq)
        tmp.replace(path)
        log.info("saved %d live pairs in %s", len(lq), path)
    return lq, hq
