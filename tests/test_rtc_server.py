"""Server endpoints: health/metrics/config, bad offers, token, session cap, peer disconnect."""
from __future__ import annotations

import asyncio
import gc
import threading

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from osdface_rtc.rtc.client import PeerClient
from osdface_rtc.rtc.ice import parse_ice_server, rtc_configuration
from osdface_rtc.rtc.metrics import parse_prometheus
from osdface_rtc.rtc.server import ServerConfig
from osdface_rtc.rtc.session import SessionConfig
from osdface_rtc.rtc.track import TrackConfig
from rtc_util import StripeRestorer, clip_track, running_server, vanish, wait_until

SIZE = (480, 360)


async def real_offer() -> tuple[RTCPeerConnection, dict]:
    """A genuine aiortc offer with a video track (not connected to anything)."""
    from aiortc.mediastreams import VideoStreamTrack

    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


async def test_health_metrics_config_and_page():
    cfg = ServerConfig(port=0, session=SessionConfig(track=TrackConfig(budget_ms=30)))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
                assert r.status == 200 and r.content_type == "text/plain"
            m = parse_prometheus(text)
            assert m["osdface_sessions_active"] == 0
            for name in ("osdface_frames_in_total", "osdface_fallbacks_total", "osdface_restore_errors_total"):
                assert name in text
            async with http.get(f"{base}/config") as r:
                cfg = await r.json()
                assert cfg["budget_ms"] == 30 and cfg["token_required"] is False and cfg["codec"] == "vp8"
            async with http.get(f"{base}/") as r:
                assert r.status == 200 and "<video" in await r.text()
            async with http.get(f"{base}/static/app.js") as r:
                assert r.status == 200


BAD_OFFERS = [
    (b"not json", "JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"type": "offer"}', "sdp"),
    (b'{"sdp": "v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\n", "type": "answer"}', "type must be"),
    (b'{"sdp": "hello", "type": "offer"}', "sdp"),
    (b'{"sdp": "v=0\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 0\\r\\n", "type": "offer"}', "no video"),
    (b'{"sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\nbroken", "type": "offer"}',
     "invalid SDP"),
    (b'{"sdp": "v=0' + b"a" * 70_000 + b'", "type": "offer"}', "too large"),  # 413: over max_offer_bytes
]


async def test_bad_offers_get_4xx_with_reason():
    async with running_server(ServerConfig(port=0), StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            for body, reason in BAD_OFFERS:
                async with http.post(f"{base}/offer", data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    assert r.status == (413 if reason == "too large" else 400), (body[:60], r.status)
                    err = (await r.json())["error"]
                    assert reason.lower() in err.lower(), (body[:60], err)
        assert server.sessions == {}
        assert server.metrics.value("osdface_sessions_rejected_total", reason="bad_offer") == len(BAD_OFFERS)


async def test_token_required_off_loopback_and_checked():
    with pytest.raises(ValueError, match="token"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", token="s3cret").validate()
    from osdface_rtc.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--passthrough"]) == 2

    cfg = ServerConfig(port=0, token="s3cret", session=SessionConfig(connect_timeout_s=2.0))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        pc, offer = await real_offer()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 401
            async with http.post(f"{base}/offer", json=offer, headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
            async with http.post(f"{base}/offer", json={**offer, "token": "s3cret"}) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{base}/config") as r:
                assert (await r.json())["token_required"] is True
        await pc.close()
        assert await wait_until(lambda: not server.sessions, 8)  # never connects: connect timeout
        assert server.metrics.value("osdface_sessions_rejected_total", reason="auth") == 2


def test_ice_server_urls():
    s = parse_ice_server("turn:alice:pw@turn.example.org:3478?transport=tcp")
    assert (s.urls, s.username, s.credential) == ("turn:turn.example.org:3478?transport=tcp", "alice", "pw")
    assert parse_ice_server("stun:stun.example.org:3478").username is None
    for bad in ("http://x", "turn:host:3478", "stun:", "turn:user@host"):
        with pytest.raises(ValueError):
            parse_ice_server(bad)


async def test_session_cap_and_clean_close(clip):
    cfg = ServerConfig(port=0, max_sessions=1)
    async with running_server(cfg, StripeRestorer()) as (base, server):
        track, _ = clip_track(SIZE, max_frames=30)
        client = PeerClient(base)
        streaming = asyncio.ensure_future(client.stream(track, duration_s=3.0))
        assert await wait_until(lambda: len(server.sessions) == 1, 15)
        pc, offer = await real_offer()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 503
                assert "full" in (await r.json())["error"]
        await pc.close()
        result = await streaming
        assert len(result.received) > 10
        # the client closed its peer connection: the session goes within seconds
        assert await wait_until(lambda: not server.sessions, 8), server.sessions
        assert server.metrics.value("osdface_sessions_rejected_total", reason="full") == 1


async def test_vanished_peer_is_released(clip):
    cfg = ServerConfig(port=0, session=SessionConfig(media_timeout_s=1.5))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        threads_after: list[int] = []
        for _ in range(2):  # twice: nothing may accumulate
            track, _ = clip_track(SIZE, max_frames=30)
            client = PeerClient(base)
            streaming = asyncio.ensure_future(client.stream(track, duration_s=4.0))
            assert await wait_until(lambda: len(server.sessions) == 1, 15)
            session = next(iter(server.sessions.values()))
            enhanced = session.track
            await asyncio.sleep(1.0)
            vanish(client.pc)
            assert await wait_until(lambda: not server.sessions, 6), "session not released"
            assert "vanished" in session.close_reason or "failed" in session.close_reason, session.close_reason
            assert enhanced.readyState == "ended" and session.track is None
            del enhanced
            assert session.pc.connectionState == "closed"
            await streaming
            await asyncio.sleep(0.5)
            # the event loop's default executor is a bounded pool shared by all calls (it may
            # grow by a thread while aiortc encodes); per-session threads must all be gone
            threads_after.append(sum(not t.name.startswith("asyncio_") for t in threading.enumerate()))
        assert threads_after[1] <= threads_after[0], threads_after  # per-session threads are gone
        await asyncio.sleep(0.5)
        gc.collect()
        assert len(asyncio.all_tasks()) <= tasks_before + 2, [t.get_coro() for t in asyncio.all_tasks()]
        m = parse_prometheus(server.metrics.render())
        assert m["osdface_sessions_active"] == 0 and m["osdface_sessions_total"] == 2


def test_metrics_text_format():
    from osdface_rtc.rtc.metrics import ServerMetrics

    m = ServerMetrics()
    m.fallbacks.labels(kind="cached").inc()
    m.stage_seconds.labels(stage="detect").observe(0.004)
    m.stage_seconds.labels(stage="detect").observe(0.2)
    text = m.render()
    assert "# TYPE osdface_stage_seconds histogram" in text
    v = parse_prometheus(text)
    assert v['osdface_fallbacks_total{kind="cached"}'] == 1
    assert v['osdface_stage_seconds_bucket{stage="detect",le="0.005"}'] == 1
    assert v['osdface_stage_seconds_bucket{stage="detect",le="+Inf"}'] == 2
    assert v['osdface_stage_seconds_count{stage="detect"}'] == 2


def test_frame_ids_survive_vp8():
    import av
    import numpy as np

    from osdface_rtc.rtc import frameid

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt, codec.bit_rate = 640, 480, "yuv420p", 300_000
    codec.time_base = __import__("fractions").Fraction(1, 30)
    dec = av.CodecContext.create("libvpx", "r")
    rng = np.random.default_rng(0)
    ids = [0, 1, 255, 4097, 65535, 12345]
    got = []
    for n, fid in enumerate(ids):
        yuv = rng.integers(0, 255, (720, 640), dtype=np.uint8)  # noise: worst case for the codec
        frameid.stamp_yuv420(yuv, 480, fid)
        f = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        f.pts = n
        for pkt in codec.encode(f):
            got += [frameid.read_frame(d) for d in dec.decode(pkt)]
    for pkt in codec.encode(None):
        got += [frameid.read_frame(d) for d in dec.decode(pkt)]
    assert got == ids
    assert frameid.read_luma(np.full((480, 640), 128, np.uint8)) is None
