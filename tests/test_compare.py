"""Frame-exact before/after composed by the server (issue 9 §2); the browser view is tested in
tests/test_rtc_browser.py with frame-id stamps."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.rtc.compare import check_position, compose_split, split_column
from osdface_rtc.rtc.track import EnhanceTrack, TrackConfig
from rtc_util import ListSource, StripeRestorer, clip_path, load_clip_rgb


def test_positions_and_composition():
    assert check_position(None) is None and check_position(False) is None
    assert check_position(0.25) == 0.25 and check_position(1) == 1.0
    for bad in (-0.1, 1.5, "0.5", True, [0.5]):
        with pytest.raises(ValueError):
            check_position(bad)
    assert split_column(640, 0.5) == 320 and split_column(641, 0.5) % 2 == 0 and split_column(640, 1.0) == 640
    before, after = np.zeros((4, 10, 3), np.uint8), np.full((4, 10, 3), 9, np.uint8)
    out = compose_split(before, after, 0.4)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 9).all()


async def test_track_sends_before_and_after_of_the_same_frame():
    p = clip_path()
    if p is None:
        pytest.skip("shared clip d9.mp4 not found (set OSDFACE_RTC_DATA)")
    frames = load_clip_rgb(p, (640, 480), 20)
    enh = FaceEnhancer(restorer=StripeRestorer(), detector="short", max_faces=1)
    track = EnhanceTrack(ListSource(frames, fps=15), enh, config=TrackConfig(budget_ms=1000, compare=0.5),
                         close_enhancer=True)
    with pytest.raises(ValueError):
        track.compare = 2.0
    out = []
    try:
        for _ in range(10):
            out.append(await asyncio.wait_for(track.recv(), 30))
    finally:
        track.stop()
    checked = 0
    for vf in out:
        got = vf.to_ndarray(format="rgb24").astype(int)
        src = frames[vf.pts // 3000].astype(int)
        left = np.abs(got[100:400, 180:310] - src[100:400, 180:310]).mean()  # the face's left half
        right = np.abs(got[100:400, 330:460] - src[100:400, 330:460]).mean()  # the face's right half
        if right > 8:  # enhanced (the stripes) on the right, untouched on the left
            assert left < 4 and right > 5 * left, (vf.pts, left, right)  # yuv round trips: ~2.5
            checked += 1
    assert checked >= 5
