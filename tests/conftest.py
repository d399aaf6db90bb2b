"""Shared fixtures: paths to ../shared data (skip with a reason when absent), small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from osdface_rtc.paths import faces_dir, videos_dir

# Keep the 2-core CI box responsive: torch uses at most 2 threads in tests.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def utk_dir() -> Path:
    d = faces_dir()
    if not d.is_dir():
        pytest.skip(f"shared faces not found at {d} (set OSDFACE_RTC_DATA)")
    return d


@pytest.fixture(scope="session")
def utk_faces(utk_dir) -> list[Path]:
    """A fixed, sorted handful of real UTKFace files."""
    files = sorted(utk_dir.glob("*.jpg"))
    return files[:: max(1, len(files) // 64)][:64]


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    d = videos_dir()
    if not d.is_dir():
        pytest.skip(f"shared clips not found at {d} (set OSDFACE_RTC_DATA)")
    return d


@pytest.fixture(scope="module")
def clip(clips_dir) -> Path:
    """d9.mp4, the webcam-at-desk clip the streaming tests send (skips when absent)."""
    p = clips_dir / "d9.mp4"
    if not p.is_file():
        pytest.skip(f"shared clip {p} not found (set OSDFACE_RTC_DATA)")
    return p


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
