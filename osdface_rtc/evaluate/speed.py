"""Restorer speed: ms per face at fixed batch sizes, warmed up, median of repeats.

Restorers return host uint8 arrays, so each timed call already includes the device sync and the
copies in and out. On CUDA a model is timed eager and replaying CUDA graphs (see
:func:`graph_variants`).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..restore import Restorer
from ..restorers import load_restorer

log = logging.getLogger("osdface_rtc")


@dataclass
class SpeedRow:
    method: str
    restorer: str
    device: str
    steps: int | None
    accel: str
    batch: int
    ms_per_call: float
    ms_per_face: float


def time_restorer(restorer: Restorer, faces: np.ndarray, batch: int, warmup: int = 3,
                  repeats: int = 10) -> float:
    """Median wall time (ms) of ``restorer.restore`` on ``batch`` faces."""
    x = np.ascontiguousarray(np.resize(faces, (batch, *faces.shape[1:])))
    for _ in range(warmup):
        restorer.restore(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        restorer.restore(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def device_of(restorer: Restorer) -> str:
    dev = getattr(restorer, "device", None)
    return str(dev) if dev is not None else "cpu"


def graph_variants(loaded: Restorer) -> list[tuple[str, Restorer]]:
    """``(accel, restorer)`` to time for a loaded model: eager and CUDA graph where possible.

    Both model restorers (trained folders and the OSDFace release) share the accelerator's
    per-instance ``use_graph`` switch (:mod:`osdface_rtc.model.accel`). Off CUDA only the eager
    model is timed.
    """
    if getattr(getattr(loaded, "device", None), "type", "cpu") != "cuda":
        return [("eager", loaded)]
    if hasattr(loaded, "use_graph"):
        eager, graph = copy.copy(loaded), copy.copy(loaded)  # share the network and graph cache
        eager.use_graph, graph.use_graph = False, True
        return [("eager", eager), ("cuda_graph", graph)]
    log.info("%s has no CUDA-graph switch; timing it as loaded", loaded.name)
    return [("as loaded", loaded)]


def measure_speed(
    entries: list[tuple[str, Restorer, int | None, str]],
    faces: np.ndarray,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 10,
) -> list[SpeedRow]:
    """Time each ``(label, restorer, steps, accel)`` at every batch size on ``faces``."""
    rows = []
    for label, r, steps, accel in entries:
        for b in batches:
            try:
                ms = time_restorer(r, faces, b, repeats=repeats)
            except Exception as e:  # noqa: BLE001 - e.g. a graph capture failing: report, go on
                log.warning("timing %s (accel=%s, batch %d) failed: %s", label, accel, b, e)
                continue
            if accel == "cuda_graph" and not getattr(r, "use_graph", True):
                accel = "eager (graph capture failed)"
            rows.append(SpeedRow(label, r.name, device_of(r), steps, accel, b, ms, ms / b))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m osdface_rtc.evaluate.speed MODEL [--device cuda] [--out x.json]``: ms/face at
    batch 1 and 8, eager and (on CUDA) replaying a CUDA graph; needs no face data."""
    import argparse
    import json
    from dataclasses import asdict

    p = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    p.add_argument("model")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    restorer = load_restorer(a.model, device=a.device)
    faces = np.random.default_rng(0).integers(0, 256, (8, restorer.face_size, restorer.face_size, 3), np.uint8)
    entries = [("model", r, 1, accel) for accel, r in graph_variants(restorer)]
    rows = measure_speed(entries, faces)
    for r in rows:
        print(f"{r.method} {r.device} {r.accel} batch {r.batch}: {r.ms_per_face:.2f} ms/face")
    if a.out:
        with open(a.out, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
