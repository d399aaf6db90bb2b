"""Running per-stage timing statistics (for summaries and benchmarks)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .enhancer import STAGES


@dataclass
class RunStats:
    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    errors: int = 0
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in STAGES})

    def add(self, timings: dict[str, float], n_faces: int) -> None:
        self.frames += 1
        self.faces += n_faces
        self.frames_with_faces += int(n_faces > 0)
        for k in STAGES:
            self.samples[k].append(float(timings.get(k, 0.0)))

    def summary(self) -> dict:
        """Mean / p50 / p95 milliseconds per stage, plus counts."""
        stages = {}
        for k, v in self.samples.items():
            if v:
                a = np.asarray(v)
                stages[k] = {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                             "p95": float(np.percentile(a, 95))}
        return {"frames": self.frames, "faces": self.faces, "frames_with_faces": self.frames_with_faces,
                "errors": self.errors, "ms": stages}

    def format(self) -> str:
        s = self.summary()
        ms = "  ".join(f"{k} {v['mean']:.1f}" for k, v in s["ms"].items())
        return (f"frames {s['frames']}, faces found {s['faces']} "
                f"(in {s['frames_with_faces']} frames), errors {s['errors']}\n"
                f"ms per frame (mean): {ms}")
