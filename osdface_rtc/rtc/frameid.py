"""Frame ids embedded in the picture (top-left corner), so every frame can be matched end to end.

16 bits in a 8 x 4 grid of ``cell``-pixel blocks: rows 0-1 hold the bits (white = 1), rows 2-3
their complement, so a damaged pattern reads as ``None`` instead of a wrong id. Blocks are big
and flat, so the id survives VP8/H.264 at call bitrates, an RGB round trip and rescaling.
"""
from __future__ import annotations

import numpy as np

BITS = 16
COLS, ROWS = 8, 4
HI, LO = 235, 16  # studio-range white / black


def cell_size(height: int) -> int:
    """Block side in pixels for a frame of this height (16 px at 480p, 24 at 720p)."""
    return max(8, int(round(height / 30)))


def pattern_box(height: int) -> tuple[int, int]:
    """(width, height) of the stamped area; keep it out of comparisons."""
    c = cell_size(height)
    return COLS * c, ROWS * c


def _bits(frame_id: int) -> np.ndarray:
    return (int(frame_id) >> np.arange(BITS)) & 1


def stamp_luma(y: np.ndarray, frame_id: int) -> None:
    """Stamp into a luma (or gray) plane in place."""
    c = cell_size(y.shape[0])
    bits = _bits(frame_id)
    for i in range(BITS):
        r, col = divmod(i, COLS)
        v = HI if bits[i] else LO
        y[r * c:(r + 1) * c, col * c:(col + 1) * c] = v
        y[(r + 2) * c:(r + 3) * c, col * c:(col + 1) * c] = LO if bits[i] else HI


def stamp_yuv420(planes: np.ndarray, height: int, frame_id: int) -> None:
    """Stamp into a yuv420p array as returned by ``VideoFrame.to_ndarray()`` (H*3/2 x W)."""
    stamp_luma(planes[:height], frame_id)
    w, h = pattern_box(height)
    width = planes.shape[1]
    # neutral chroma under the pattern (U and V quarter planes follow Y, two rows per line)
    u = planes[height:height + height // 4].reshape(height // 2, width // 2)
    v = planes[height + height // 4:].reshape(height // 2, width // 2)
    u[: h // 2, : w // 2] = 128
    v[: h // 2, : w // 2] = 128


def stamp_rgb(rgb: np.ndarray, frame_id: int, x0: int = 0, y0: int = 0) -> None:
    """Stamp into an H x W x 3 RGB image in place (gray blocks), top-left at (x0, y0)."""
    c = cell_size(rgb.shape[0])
    bits = _bits(frame_id)
    for i in range(BITS):
        r, col = divmod(i, COLS)
        x = x0 + col * c
        rgb[y0 + r * c:y0 + (r + 1) * c, x:x + c] = HI if bits[i] else LO
        rgb[y0 + (r + 2) * c:y0 + (r + 3) * c, x:x + c] = LO if bits[i] else HI


def read_luma(y: np.ndarray, min_contrast: float = 60.0, x0: int = 0, y0: int = 0) -> int | None:
    """Read the id back from a luma/gray plane (pattern's top-left at (x0, y0)); ``None`` when
    absent or damaged."""
    c = cell_size(y.shape[0])
    q = max(1, c // 4)
    frame_id = 0
    for i in range(BITS):
        r, col = divmod(i, COLS)
        xa, xb = x0 + col * c + q, x0 + (col + 1) * c - q
        a = float(y[y0 + r * c + q:y0 + (r + 1) * c - q, xa:xb].mean())
        b = float(y[y0 + (r + 2) * c + q:y0 + (r + 3) * c - q, xa:xb].mean())
        if abs(a - b) < min_contrast:
            return None
        if a > b:
            frame_id |= 1 << i
    return frame_id


def read_frame(frame) -> int | None:
    """Read the id from an ``av.VideoFrame`` (any format; yuv420p is read without conversion)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12", "gray"):
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        return read_luma(buf[:, : plane.width])
    return read_luma(frame.to_ndarray(format="gray"))
