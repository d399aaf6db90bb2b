"""The live track's frame-size cap: a peer's oversized frames are scaled down before any work.

A 4K (or larger) camera would otherwise make the server convert, detect, blend and encode
every frame at full size -- many times the cost of a webcam frame, for one call. The track
scales such frames down (area interpolation, aspect kept, even sides) on arrival and sends
them back at that size; :class:`~.track.TrackConfig` ``max_pixels`` sets the cap.
"""
from __future__ import annotations

from av import VideoFrame


def capped_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int] | None:
    """``(w, h)`` (even, aspect kept, at most ``max_pixels``) for an oversized frame, else None."""
    if not max_pixels or width * height <= max_pixels:  # None or 0: no cap
        return None
    k = (max_pixels / (width * height)) ** 0.5
    return max(2, int(width * k) // 2 * 2), max(2, int(height * k) // 2 * 2)


def scale_frame(frame: VideoFrame, width: int, height: int) -> VideoFrame:
    """``frame`` as yuv420p at ``width`` x ``height``, with the same timestamps."""
    out = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA",
                         threads=1)
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out
