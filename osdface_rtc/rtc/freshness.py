"""How fresh the enhanced faces are: restorations per second and the age of what is shown.

The **age** of a face in a sent frame is the time from the frame its restoration was made from
to the frame it is shown on (0 when restored on time; a late frame shows the last restoration
re-warped to its landmarks, so its age is how old that restoration's source frame is). A face
shown without any restoration (late, nothing recent cached; or a restorer error) has no age and
counts as not fresh. On CPU the age, not the added latency, is what the user sees as "lag" of
expressions in the enhanced face.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .slots import RateMeter

#: A face shown with a restoration at most this old counts as fresh (the project's live goal).
FRESH_MS = 50.0


@dataclass
class FreshnessConfig:
    window_faces: int = 300  # ages kept for the percentiles (10 s of one face at 30 fps)
    rate_window_s: float = 2.0
    fresh_ms: float = FRESH_MS


class Freshness:
    """Per-track freshness: ``restored()`` for every finished restoration, ``shown()`` for every
    sent frame with faces; ``snapshot()`` gives the JSON fields of ``/stats``."""

    def __init__(self, config: FreshnessConfig | None = None):
        self.config = config or FreshnessConfig()
        self.restores = RateMeter(self.config.rate_window_s)
        self._ages: deque[float] = deque(maxlen=self.config.window_faces)  # nan: no restoration
        self.restorations = 0

    def restored(self, now: float | None = None) -> None:
        self.restorations += 1
        self.restores.tick(time.monotonic() if now is None else now)

    def shown(self, faces: int, restored_faces: int, age_ms: float | None) -> None:
        """A sent frame with ``faces`` faces, ``restored_faces`` of them showing a restoration
        ``age_ms`` old (all faces of a frame come from one restoration call)."""
        if age_ms is None:
            self._ages.extend([float("nan")] * faces)
            return
        n = max(0, min(restored_faces, faces))
        self._ages.extend([max(0.0, float(age_ms))] * n + [float("nan")] * (faces - n))

    def snapshot(self, now: float | None = None) -> dict[str, float | None]:
        ages = np.array(self._ages, np.float64)
        have = ages[~np.isnan(ages)]
        fresh = float(np.mean(np.nan_to_num(ages, nan=np.inf) <= self.config.fresh_ms)) if len(ages) else None
        pct = (lambda q: round(float(np.percentile(have, q)), 1)) if len(have) else (lambda q: None)
        return {
            "restores_per_s": round(self.restores.rate(now), 2),
            "age_p50_ms": pct(50),
            "age_p95_ms": pct(95),
            "fresh_share": None if fresh is None else round(fresh, 3),
            "fresh_ms": self.config.fresh_ms,
            "unrestored_share": round(float(np.mean(np.isnan(ages))), 3) if len(ages) else None,
        }


def freshness_between(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """Freshness over a measured window from two parsed ``/metrics`` snapshots (the bench):
    restorations/s, age p50/p95 (interpolated in the age histogram's buckets) and the share of
    faces shown with a restoration at most ``FRESH_MS`` old (exact: 50 ms is a bucket edge)."""
    from .metrics import histogram_quantile

    name = "osdface_restoration_age_seconds"
    diff = {k: v - before.get(k, 0.0) for k, v in after.items()
            if k.startswith(name) or k.startswith("osdface_restorations_total")
            or k.startswith("osdface_faces_unrestored_total")}
    shown = sum(v for k, v in diff.items() if k.startswith(name + "_count"))
    unrestored = sum(v for k, v in diff.items() if k.startswith("osdface_faces_unrestored_total"))
    fresh = sum(v for k, v in diff.items() if k.startswith(name + "_bucket{") and f'le="{FRESH_MS / 1e3}"' in k)
    q = lambda p: None if shown <= 0 else round(histogram_quantile(diff, name, p) * 1e3, 1)  # noqa: E731
    faces = shown + unrestored
    return {
        "restores_per_s": round(sum(v for k, v in diff.items() if k.startswith("osdface_restorations_total"))
                                / max(seconds, 1e-6), 2),
        "age_p50_ms": q(0.5), "age_p95_ms": q(0.95),
        "fresh_share": round(fresh / faces, 3) if faces else None,
        "unrestored_share": round(unrestored / faces, 3) if faces else None,
        "faces_shown": int(faces),
    }
