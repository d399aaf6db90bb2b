"""Freshness of the shown faces: restorations/s and restoration age (issue 9 §3)."""
from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.rtc.freshness import Freshness
from osdface_rtc.rtc.metrics import ServerMetrics, histogram_quantile, parse_prometheus
from osdface_rtc.rtc.track import EnhanceTrack, FrameReport
from rtc_util import ListSource, StripeRestorer, clip_path, load_clip_rgb


@pytest.fixture(scope="module")
def clip480() -> list[np.ndarray]:
    p = clip_path()
    if p is None:
        pytest.skip("shared clip d9.mp4 not found (set OSDFACE_RTC_DATA)")
    return load_clip_rgb(p, (640, 480), 60)


def test_freshness_window():
    f = Freshness()
    assert f.snapshot()["age_p50_ms"] is None and f.snapshot()["fresh_share"] is None
    for age in (0, 0, 40, 120):
        f.shown(faces=1, restored_faces=1, age_ms=age)
    f.shown(faces=2, restored_faces=0, age_ms=None)  # two faces without a restoration
    s = f.snapshot()
    assert s["age_p50_ms"] == 20.0 and s["fresh_share"] == round(3 / 6, 3)
    assert s["unrestored_share"] == round(2 / 6, 3)
    for t in np.arange(0, 2.0, 0.1):
        f.restored(now=100 + t)
    assert 9 <= f.snapshot(now=102.0)["restores_per_s"] <= 11


def test_metrics_age_histogram_and_quantile():
    m = ServerMetrics()
    for age in [0.0] * 5 + [80.0] * 5:
        m.observe_freshness(FrameReport("cached", faces=1, restored_faces=1, age_ms=age, restores_ms=[30.0]))
    m.observe_freshness(FrameReport("original", faces=1))
    m.observe_freshness(FrameReport("off", faces=1))
    v = parse_prometheus(m.render())
    assert v["osdface_restorations_total"] == 12 - 2  # restores_ms of the 10 reports
    assert v["osdface_restoration_age_seconds_count"] == 10
    assert v['osdface_restoration_age_seconds_bucket{le="0.05"}'] == 5
    assert v["osdface_faces_unrestored_total"] == 1
    assert histogram_quantile(v, "osdface_restoration_age_seconds", 0.25) == 0.0
    assert 0.067 <= histogram_quantile(v, "osdface_restoration_age_seconds", 0.95) <= 0.1
    assert histogram_quantile({}, "osdface_restoration_age_seconds", 0.5) is None


async def run(frames, restorer, budget_ms, n):
    reports: list[FrameReport] = []
    enh = FaceEnhancer(restorer=restorer, detector="short", max_faces=1)
    track = EnhanceTrack(ListSource(frames, fps=30, loops=3), enh, budget_ms=budget_ms,
                         on_frame=reports.append, close_enhancer=True)
    try:
        for _ in range(n):
            await asyncio.wait_for(track.recv(), 30)
        snap = track.snapshot()
    finally:
        track.stop()
    return snap, reports


async def test_on_time_restorations_are_zero_ms_old(clip480):
    snap, reports = await run(clip480, StripeRestorer(), budget_ms=1000, n=30)
    enhanced = [r for r in reports if r.outcome == "enhanced"]
    assert len(enhanced) >= 25 and all(r.age_ms == 0 and r.restored_faces == 1 for r in enhanced)
    assert snap["age_p50_ms"] == 0 and snap["fresh_share"] >= 0.8, snap
    assert snap["restores_per_s"] > 10, snap


async def test_slow_restorer_shows_its_age(clip480):
    """~150 ms per restoration: late frames show a restoration 150..400 ms old, ~5/s."""
    snap, reports = await run(clip480, StripeRestorer(delay_s=0.15), budget_ms=10, n=60)
    ages = [r.age_ms for r in reports if r.outcome == "cached"]
    assert len(ages) >= 30 and min(ages) >= 100, ages
    assert 130 <= snap["age_p50_ms"] <= 400 and snap["age_p95_ms"] >= snap["age_p50_ms"], snap
    assert snap["fresh_share"] < 0.2, snap
    assert 2 <= snap["restores_per_s"] <= 7.5, snap
    assert not math.isnan(snap["age_p95_ms"])


async def test_stats_endpoint_has_freshness(clip):
    """GET /stats during a real loopback call carries the freshness fields of the session."""
    import aiohttp

    from osdface_rtc.rtc.client import PeerClient
    from osdface_rtc.rtc.server import ServerConfig
    from osdface_rtc.rtc.session import SessionConfig
    from osdface_rtc.rtc.track import TrackConfig
    from rtc_util import clip_track, running_server

    got: dict = {}
    cfg = ServerConfig(port=0, session=SessionConfig(track=TrackConfig(budget_ms=25)))
    async with running_server(cfg, StripeRestorer(delay_s=0.08)) as (base, _):
        async def poll() -> None:
            await asyncio.sleep(3.0)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/stats") as r:
                    got.update(await r.json())

        tasks = []
        track, _ = clip_track((480, 360), fps=30, max_frames=45)
        await PeerClient(base).stream(track, duration_s=4.0, on_connected=lambda c: tasks.append(
            asyncio.ensure_future(poll())))
        await asyncio.gather(*tasks)
    (session,) = got.values()
    for key in ("restores_per_s", "age_p50_ms", "age_p95_ms", "fresh_share", "unrestored_share"):
        assert key in session, session
    assert session["restores_per_s"] > 1 and session["age_p50_ms"] >= 60, session
