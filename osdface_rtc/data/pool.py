"""Precomputed training LQ: degraded variants of a face array, built once and cached.

:func:`build_lq_pool` runs :func:`osdface_rtc.data.degrade.degrade` over every face ``V`` times
(in worker processes) and caches the ``V x N x S x S x 3`` result as ``.npy`` under ``.cache/``,
so a trainer reads LQ images instead of running the codec inline (a few ms per face).
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..paths import CACHE_DIR
from .degrade import DegradeConfig, degrade

log = logging.getLogger("osdface_rtc")

def _pool_key(faces: np.ndarray, n_variants: int, seed: int, level: str | None,
              cfg: DegradeConfig) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(faces[:: max(1, len(faces) // 64)]).tobytes())
    h.update(repr((faces.shape, n_variants, seed, level, asdict(cfg))).encode())
    return h.hexdigest()[:12]


def _degrade_chunk(args: tuple[np.ndarray, int, int, int, str | None, DegradeConfig]) -> np.ndarray:
    faces, start, variant, seed, level, cfg = args
    return np.stack([
        degrade(f, np.random.default_rng([seed, variant, start + i]), level, cfg)
        for i, f in enumerate(faces)
    ])


def build_lq_pool(
    faces: np.ndarray,
    n_variants: int = 2,
    seed: int = 0,
    workers: int = 2,
    level: str | None = None,
    cfg: DegradeConfig | None = None,
    cache_dir: Path | str | None = CACHE_DIR,
    chunk: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """Degraded variants of ``faces`` (``N x S x S x 3``) as a ``V x N x S x S x 3`` uint8 array.

    Face ``i`` of variant ``v`` uses ``default_rng([seed, v, i])``, so the result does not depend
    on ``workers``. With ``cache_dir`` the pool is saved as ``lq_pool_<key>.npy`` (key = hash of
    the faces, settings and config) and returned memory-mapped; a second call just opens it.
    """
    cfg = cfg or DegradeConfig()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"lq_pool_{_pool_key(faces, n_variants, seed, level, cfg)}.npy"
        if path.exists():
            return np.load(path, mmap_mode="r")
        path.parent.mkdir(parents=True, exist_ok=True)
    out = np.empty((n_variants, *faces.shape), np.uint8)
    jobs = [(faces[s:s + chunk], s, v, seed, level, cfg)
            for v in range(n_variants) for s in range(0, len(faces), chunk)]
    bar = _progress(n_variants * len(faces), progress, "degrading")
    if workers > 1:
        # spawn, not fork: the parent may run torch/mediapipe threads (fork then corrupts malloc)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            for job, res in zip(jobs, ex.map(_degrade_chunk, jobs)):
                out[job[2], job[1]:job[1] + len(res)] = res
                bar.update(len(res))
    else:
        for job in jobs:
            res = _degrade_chunk(job)
            out[job[2], job[1]:job[1] + len(res)] = res
            bar.update(len(res))
    bar.close()
    if path is None:
        return out
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    log.info("saved LQ pool %s (%s)", path, out.shape)
    return np.load(path, mmap_mode="r")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="face", disable=not enabled, leave=False)

