"""Frame-exact before/after: the server composes the split view from one frame.

With ``EnhanceTrack.compare = x`` (0..1, from the page's ``{"type": "config", "compare": x}``
DataChannel message) every sent frame shows, left of ``x`` × width, the frame exactly as the
server received it and, right of it, the same frame enhanced -- one frame id, one moment. (The
page's own camera beside the returned video would show two moments ~60-100 ms apart.) The
"before" half therefore includes the uplink's codec damage: what the far end of a call sees
without enhancement. ``None`` turns it off.
"""
from __future__ import annotations

import numpy as np


def check_position(value) -> float | None:
    """A split position from a control message: None/False = off, else a number in [0, 1]."""
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"compare must be a number in [0, 1] or null, got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"compare must be in [0, 1], got {v}")
    return v


def split_column(width: int, position: float) -> int:
    """The first column of the "after" half (even, so yuv420p chroma does not mix the halves)."""
    return min(width, max(0, int(round(position * width / 2)) * 2))


def compose_split(before: np.ndarray, after: np.ndarray, position: float) -> np.ndarray:
    """``after`` with the columns left of the split replaced by ``before`` (same frame, in place)."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ")
    x = split_column(after.shape[1], position)
    after[:, :x] = before[:, :x]
    return after
