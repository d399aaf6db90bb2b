"""The evaluation loop: val faces -> fixed degradations -> restorers -> face-region metrics.

For every level in ``EvalConfig.levels`` each val face ``i`` is degraded with the preset and
``default_rng([seed, LEVELS.index(level), i])`` (the same input whichever levels are run), then
scored for the degraded input itself, the baseline restorer and the model (once per IDM step
count), with :func:`~osdface_rtc.evaluate.metrics.mean_scores` (per-face PSNR capped at
``PSNR_CAP`` dB, so an identical face cannot make a mean infinite).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.degrade import LEVELS, degrade_level
from ..data.faces import load_faces
from ..restore import Restorer
from ..restorers import load_restorer
from .identity import SAME_PERSON_THRESHOLD, DlibIdentity
from .metrics import face_mask, mean_scores

log = logging.getLogger("osdface_rtc")

#: Specs that are built-in restorers rather than trained models (no steps / accel options).
BUILTIN_SPECS = ("classical", "identity")


@dataclass
class EvalConfig:
    """What to evaluate and how (mirrors the ``osdface-rtc eval`` options)."""

    model: str | None = None  # load_restorer spec; None = the shipped model
    baseline: str | None = "classical"  # None = no baseline row
    levels: tuple[str, ...] = LEVELS
    limit: int | None = 200
    seed: int = 0
    device: str = "auto"
    steps: tuple[int, ...] = (1,)
    batch_size: int = 16
    face_size: int = 128  # only for built-in model specs; trained models bring their own
    data_dir: Path | None = None
    grid_faces: int = 4
    progress: bool = True


@dataclass
class Method:
    """One row family of the table: a restorer (None = the degraded input itself)."""

    label: str
    restorer: Restorer | None
    steps: int | None = None


@dataclass
class Row:
    """Mean scores of one method at one level."""

    level: str
    method: str
    restorer: str
    steps: int | None
    n: int
    psnr: float
    ssim: float
    id_dist: float | None
    id_match: float | None  # share of faces with id_dist < SAME_PERSON_THRESHOLD
    ms_per_face: float | None  # restore time in the quality loop (batch_size faces per call)


@dataclass
class EvalResult:
    rows: list[Row]
    #: level -> {"faces": ground truth, method label -> images} for the first grid_faces faces
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    face_size: int = 128


def is_builtin(spec: str | None) -> bool:
    return spec in BUILTIN_SPECS


def load_methods(cfg: EvalConfig) -> list[Method]:
    """Input + baseline + one model per step count (raises RestorerError for a missing model)."""
    methods: list[Method] = []
    if is_builtin(cfg.model):
        if cfg.steps != (1,):
            log.warning("--steps applies to model restorers only; ignored for %r", cfg.model)
        methods.append(Method(cfg.model, load_restorer(cfg.model, face_size=cfg.face_size)))
    else:
        for n in cfg.steps:
            label = "model" if len(cfg.steps) == 1 else f"model-s{n}"
            methods.append(Method(label, load_restorer(cfg.model, device=cfg.device, steps=n), n))
    face_size = methods[0].restorer.face_size
    if cfg.baseline and cfg.baseline != cfg.model:
        methods.insert(0, Method(cfg.baseline, load_restorer(cfg.baseline, face_size=face_size)))
    return [Method("input", None), *methods]


def restore_timed(restorer: Restorer, faces: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Restore in batches; returns the output and the mean wall time per face in ms."""
    outs, t0 = [], time.perf_counter()
    for s in range(0, len(faces), batch_size):
        outs.append(restorer.restore(faces[s:s + batch_size]))
    return np.concatenate(outs), (time.perf_counter() - t0) * 1e3 / max(1, len(faces))


def score(
    out: np.ndarray,
    hq: np.ndarray,
    identity: DlibIdentity | None,
    gt_emb: np.ndarray | None,
    shapes: list | None,
) -> tuple[float, float, float | None, float | None]:
    """Mean masked PSNR, SSIM and (if available) identity distance / match rate."""
    p, s = mean_scores(out, hq, face_mask(hq.shape[1]))
    if identity is None:
        return p, s, None, None
    d = identity.distances(out, gt_emb, shapes)
    return p, s, float(d.mean()), float((d < SAME_PERSON_THRESHOLD).mean())


def run_eval(cfg: EvalConfig, identity: DlibIdentity | None = None,
             methods: list[Method] | None = None) -> EvalResult:
    """Run the quality evaluation (see the module docstring)."""
    from tqdm import tqdm

    methods = methods or load_methods(cfg)
    size = next(m.restorer.face_size for m in methods if m.restorer is not None)
    hq = load_faces("val", size, limit=cfg.limit, data_dir=cfg.data_dir)
    gt_emb = shapes = None
    if identity is not None:
        shapes = [identity.shape(f) for f in hq]
        gt_emb = identity.embed(hq, shapes)
    result = EvalResult(rows=[], face_size=size)
    bar = tqdm(total=len(cfg.levels) * len(methods), desc="eval", unit="run",
               disable=not cfg.progress)
    for level in cfg.levels:
        bar.set_postfix_str(f"{level}: degrading")
        lq = degrade_level(hq, level, cfg.seed)
        samples = {"ground truth": hq[: cfg.grid_faces].copy()}
        for m in methods:
            bar.set_postfix_str(f"{level}: {m.label}")
            if m.restorer is None:
                out, ms = lq, None
            else:
                out, ms = restore_timed(m.restorer, lq, cfg.batch_size)
            p, s, d, match = score(out, hq, identity, gt_emb, shapes)
            result.rows.append(Row(level, m.label, m.restorer.name if m.restorer else "-",
                                   m.steps, len(hq), p, s, d, match, ms))
            samples[m.label] = out[: cfg.grid_faces].copy()
            bar.update(1)
        result.samples[level] = samples
    bar.close()
    return result
