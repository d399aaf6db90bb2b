"""Restorer factories for pool tests (``restorer-serve --model py:scale_util:NAME``)."""
from __future__ import annotations

import time

import numpy as np

from rtc_util import StripeRestorer


class SlowStripes(StripeRestorer):
    """Visible stripes on every face; 10 ms per call + 6 ms per face, like a real model (so
    requests meet in the pool's queue, and a burst of large requests overflows it)."""

    name = "slow-stripes"

    def restore(self, faces: np.ndarray) -> np.ndarray:
        time.sleep(0.010 + 0.006 * len(faces))
        return super().restore(faces)


def slow_stripes() -> SlowStripes:
    return SlowStripes()
