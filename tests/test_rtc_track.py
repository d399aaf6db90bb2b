"""EnhanceTrack without a network: budget, fallbacks, errors, resolution change, 0/10 faces."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.rtc.track import EnhanceTrack, FrameReport
from rtc_util import FailingRestorer, ListSource, StripeRestorer, clip_path, face_mosaic, load_clip_rgb


@pytest.fixture(scope="module")
def clip480() -> list[np.ndarray]:
    p = clip_path()
    if p is None:
        pytest.skip("shared clip d9.mp4 not found (set OSDFACE_RTC_DATA)")
    return load_clip_rgb(p, (640, 480), 30)


async def pull(track: EnhanceTrack, n: int, timeout: float = 30.0) -> list:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(track.recv(), timeout))
    return out


def make(source, restorer, budget_ms: float, **kw) -> tuple[EnhanceTrack, list[FrameReport]]:
    reports: list[FrameReport] = []
    enh = FaceEnhancer(restorer=restorer, max_faces=10, detector="auto")
    track = EnhanceTrack(source, enh, budget_ms=budget_ms, on_frame=reports.append, close_enhancer=True, **kw)
    return track, reports


async def test_enhances_faces_and_keeps_timestamps(clip480):
    src = ListSource(clip480, fps=15, loops=3)
    track, reports = make(src, StripeRestorer(), budget_ms=500)
    frames = await pull(track, 15)
    track.stop()
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and all(p % 3000 == 0 for p in pts)
    assert all(f.time_base.denominator == 90000 for f in frames)
    outcomes = [r.outcome for r in reports]
    assert outcomes.count("enhanced") >= 10, outcomes
    # the face (centre of d9) changed, the top-left corner did not
    idx = pts[-1] // 3000
    out = frames[-1].to_ndarray(format="rgb24").astype(int)
    src_rgb = clip480[idx].astype(int)
    centre = np.abs(out[140:340, 220:420] - src_rgb[140:340, 220:420]).mean()
    corner = np.abs(out[:80, :80] - src_rgb[:80, :80]).mean()
    assert centre > 5 * max(corner, 0.5), (centre, corner)


async def test_slow_restorer_falls_back_within_budget(clip480):
    src = ListSource(clip480, fps=30, loops=6)
    track, reports = make(src, StripeRestorer(delay_s=0.2), budget_ms=20)
    t0 = time.monotonic()
    await pull(track, 45)
    elapsed = time.monotonic() - t0
    track.stop()
    outcomes = [r.outcome for r in reports]
    assert track.stats.fallbacks >= 30, outcomes
    assert outcomes.count("cached") >= 20, outcomes  # last restored faces re-warped
    assert outcomes.count("enhanced") <= 2
    # never waits for the 200 ms model: the stream keeps (nearly) its rate and latency stays low
    assert elapsed < 45 / 30 * 2.5, elapsed  # loose: the 2-core CI box is shared
    lat = sorted(r.latency_ms for r in reports[5:])
    assert lat[len(lat) // 2] < 150, lat


async def test_restorer_errors_pass_frames_through(clip480):
    src = ListSource(clip480, fps=30, loops=4)
    track, reports = make(src, FailingRestorer(fail_every=1), budget_ms=200)
    frames = await pull(track, 20)
    track.stop()
    assert len(frames) == 20
    assert track.stats.errors >= 5
    assert "RuntimeError" in (track.stats.last_error or "")
    assert {r.outcome for r in reports} <= {"error", "original", "noface"}


async def test_resolution_change_mid_stream(clip480):
    import cv2

    small = [cv2.resize(f, (480, 360), interpolation=cv2.INTER_AREA) for f in clip480[:12]]
    src = ListSource(clip480[:12] + small * 4, fps=20)
    track, reports = make(src, StripeRestorer(), budget_ms=300)
    frames = await pull(track, 20)
    track.stop()
    sizes = [(f.width, f.height) for f in frames]
    assert sizes[0] == (640, 480) and sizes[-1] == (480, 360)
    assert track.stats.errors == 0
    assert [r.outcome for r in reports[-6:]].count("enhanced") >= 3, [r.outcome for r in reports]


async def test_zero_and_ten_faces(utk_faces):
    from conftest import read_rgb

    faces = [read_rgb(p) for p in utk_faces[:10]]
    mosaic = face_mosaic(faces, cols=5, cell=150)  # 750 x 300, ten faces
    blank = np.full_like(mosaic, 128)
    src = ListSource([blank] * 4 + [mosaic] * 30, fps=10)
    track, reports = make(src, StripeRestorer(), budget_ms=1000)
    await pull(track, 14)
    track.stop()
    assert [r.outcome for r in reports[:3]] == ["noface"] * 3
    assert max(r.faces for r in reports) >= 7, [r.faces for r in reports]
    assert track.stats.errors == 0
    assert "enhanced" in [r.outcome for r in reports]


async def test_drains_to_newest_frame(clip480):
    src = ListSource(clip480[:10], fps=300, loops=40)  # 10x faster than the consumer
    track = EnhanceTrack(src, None)  # pass-through: same plumbing
    got = []
    for _ in range(8):
        got.append(await track.recv())
        await asyncio.sleep(0.03)
    track.stop()
    assert track.stats.frames_skipped > 10
    pts = [f.pts for f in got]
    assert pts == sorted(pts) and pts[-1] - pts[0] > 7 * 3000  # skipped ahead, never queued


async def test_toggle_and_strength_live(clip480):
    src = ListSource(clip480, fps=30, loops=5)
    track, reports = make(src, StripeRestorer(), budget_ms=300)
    await pull(track, 5)
    track.enabled = False
    await pull(track, 3)
    assert reports[-1].outcome == "off"
    track.enabled = True
    track.strength = 0.0
    await pull(track, 2)
    assert reports[-1].outcome == "off"
    track.strength = 0.5
    await pull(track, 4)
    track.stop()
    assert reports[-1].outcome in ("enhanced", "cached")
    assert abs(track.strength - 0.5) < 1e-6


def test_public_exports():
    import osdface_rtc

    assert osdface_rtc.EnhanceTrack is EnhanceTrack
    assert osdface_rtc.FaceEnhancer is FaceEnhancer


def test_budget_has_one_way_in():
    """The documented ``EnhanceTrack(track, enhancer, budget_ms=25)`` sets the budget; a config
    carries it otherwise; both at once is an error, not a silently ignored argument."""
    from osdface_rtc.rtc.track import TrackConfig

    enh = FaceEnhancer(restorer=StripeRestorer())
    try:
        assert EnhanceTrack(ListSource([]), enh, budget_ms=25).budget_ms == 25
        assert EnhanceTrack(ListSource([]), enh, config=TrackConfig(budget_ms=7)).budget_ms == 7
        assert EnhanceTrack(ListSource([]), enh).budget_ms == TrackConfig().budget_ms
        with pytest.raises(TypeError):
            EnhanceTrack(ListSource([]), enh, budget_ms=25, config=TrackConfig(budget_ms=7))
    finally:
        enh.close()


async def test_budget_argument_is_used(clip480):
    """A 100 ms restorer within ``budget_ms=600`` (the argument): frames wait for it and are
    restored on time (the default 25 ms budget would re-warp them all)."""
    src = ListSource(clip480, fps=15, loops=3)
    track, reports = make(src, StripeRestorer(delay_s=0.1), budget_ms=600)
    await pull(track, 8)
    track.stop()
    outcomes = [r.outcome for r in reports]
    assert outcomes.count("enhanced") >= 6, outcomes
    assert all(r.stages_ms["wait"] >= 50 for r in reports if r.outcome == "enhanced"), reports


def test_restore_worker_batches_queued_jobs():
    """Jobs of several tracks that queue up while the restorer is busy go in one batched call."""
    from osdface_rtc.pipeline.types import AlignedFaces
    from osdface_rtc.rtc.worker import RestoreWorker

    r = StripeRestorer(delay_s=0.15)
    worker = RestoreWorker(r)
    rng = np.random.default_rng(0)

    def job(n: int) -> AlignedFaces:
        crops = rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8)
        return AlignedFaces(crops=crops, affines=np.zeros((n, 2, 3)), track_ids=list(range(n)))

    first = worker.submit(job(1))
    time.sleep(0.05)  # the worker is now busy with `first`
    jobs = [job(2), job(1), job(3)]
    futures = [worker.submit(j) for j in jobs]
    outs = [f.result(timeout=5) for f in futures]
    first.result(timeout=5)
    assert worker.calls == 2 and worker.batched_calls == 1 and r.calls == 2
    for j, o in zip(jobs, outs):
        assert o.crops.shape == j.crops.shape and o.track_ids == j.track_ids
        np.testing.assert_array_equal(o.crops, r.restore(j.crops))
    worker.close()


async def test_oversized_frames_are_scaled_down_before_any_work(clip480):
    """A peer sending frames over ``max_pixels`` gets them back scaled down (aspect kept), still
    enhanced; frames at or under the cap keep their size."""
    big = [np.ascontiguousarray(np.repeat(np.repeat(f, 2, axis=0), 2, axis=1)) for f in clip480[:40]]
    src = ListSource(big, fps=15, loops=2)  # 1280x960
    track, reports = make(src, StripeRestorer(), budget_ms=500)
    track.config.max_pixels = 640 * 480
    frames = await pull(track, 12)
    track.stop()
    assert {(f.width, f.height) for f in frames} == {(640, 480)}
    assert track.stats.frames_downscaled >= 12
    assert [r.outcome for r in reports].count("enhanced") >= 6, [r.outcome for r in reports]
    assert all((r.width, r.height) == (640, 480) for r in reports)
    # the sent frame is the scaled-down input with the face enhanced; outside the face unchanged
    out = frames[-1].to_ndarray(format="rgb24").astype(int)
    ref = clip480[(frames[-1].pts // 3000) % 40].astype(int)  # ListSource: pts = index * 3000
    assert np.abs(out[:80, :80] - ref[:80, :80]).mean() < 4
    assert np.abs(out[140:340, 220:420] - ref[140:340, 220:420]).mean() > 5


def test_capped_size():
    from osdface_rtc.rtc.framecap import capped_size

    assert capped_size(3840, 2160, 1920 * 1080) == (1920, 1080)
    assert capped_size(1920, 1080, 1920 * 1080) is None
    assert capped_size(4000, 3000, None) is None and capped_size(4000, 3000, 0) is None
    w, h = capped_size(1001, 777, 300_000)
    assert w % 2 == h % 2 == 0 and w * h <= 300_000 and abs(w / h - 1001 / 777) < 0.01
