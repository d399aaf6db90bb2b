"""Hardening of the live server (issue 10): real aiortc peers over loopback against the real app.

One bad DataChannel message never ends a call; a closed call frees its objects and threads
without the garbage collector; call slots cannot be taken by other origins, slow bodies,
never-connecting offers or peers that only ping; offers are capped; answers never leak other
interfaces; the token is never printed.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import weakref

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack

from osdface_rtc.rtc.bench import free_port, wait_healthy
from osdface_rtc.rtc.client import PeerClient
from osdface_rtc.rtc.ice import rtc_configuration
from osdface_rtc.rtc.httpguard import HttpGuardConfig
from osdface_rtc.rtc.offer import OfferLimits
from osdface_rtc.rtc.server import ServerConfig
from osdface_rtc.rtc.session import SessionConfig
from rtc_util import StripeRestorer, clip_track, running_server, wait_until

SIZE = (480, 360)


async def offer_with(n_video: int = 1) -> tuple[RTCPeerConnection, dict]:
    pc = RTCPeerConnection(rtc_configuration([]))
    for _ in range(n_video):
        pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def executor_threads() -> int:
    """Threads of asyncio's default executor (a pool that grows on demand up to its cap, e.g.
    for the client's DNS lookups: not per-call state)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("asyncio_"))


# -- 1. DataChannel messages --------------------------------------------------------------------


def test_message_schema_unit():
    from osdface_rtc.rtc.messages import MessageError, parse_message

    assert parse_message('{"type":"config","enabled":false,"strength":0.5}') == (
        "config", {"enabled": False, "strength": 0.5})
    assert parse_message('{"type":"ping","t":12}') == ("ping", {"t": 12.0})
    bad = {
        '{"type":"config","enabled":"false"}': "boolean",
        '{"type":"config","strength":' + "9" * 400 + "}": "between 0 and 1",
        '{"type":"config","strength":' + "9" * 5000 + "}": "valid JSON",  # int digit limit
        '{"type":"config","strength":1e400}': "finite",
        '{"type":"config","strength":NaN}': "NaN",
        '{"type":"config","strength":true}': "number",
        '{"type":"config","budget_ms":-1}': "between",
        '{"type":"config","strenght":0.5}': "unknown field",
        '{"type":"nope"}': "unknown message type",
        '{"type":["config"]}': "unknown message type",
        "[1]": "JSON objects",
        "[" * 30000 + "]" * 30000: "nested",
        '{"a":' * 5 + "1" + "}" * 5: "nested",
        "not json": "valid JSON",
    }
    for text, reason in bad.items():
        with pytest.raises(MessageError, match=re.escape(reason)):
            parse_message(text, max_bytes=100_000)
    with pytest.raises(MessageError, match="too large"):
        parse_message(json.dumps({"type": "ping", "pad": "x" * 5000}))
    with pytest.raises(MessageError, match="binary"):
        parse_message(b'{"type":"ping"}')


async def test_bad_datachannel_messages_never_end_the_call(clip):
    replies: list[dict] = []
    script_ok: dict = {}

    async def scenario(client: PeerClient) -> None:
        ch = client.channel
        ch.on("message", lambda m: replies.append(json.loads(m)))
        assert await wait_until(lambda: ch.readyState == "open", 10)
        server_session = next(iter(server.sessions.values()))

        async def expect_error(payload, reason: str) -> None:
            n = len(replies)
            ch.send(payload)
            assert await wait_until(lambda: any(r.get("type") == "error" for r in replies[n:]), 5), payload[:60]
            msg = next(r for r in replies[n:] if r.get("type") == "error")["message"]
            assert reason.lower() in msg.lower(), (payload[:60], msg)

        await expect_error('{"type":"config","strength":' + "9" * 400 + "}", "between 0 and 1")
        await expect_error('{"type":"config","enabled":"false"}', "boolean")
        await expect_error(json.dumps({"type": "config", "pad": "x" * 200_000}), "too large")
        await expect_error("[" * 2000 + "]" * 2000, "nested")
        await expect_error(b"\x00\x01binary", "binary")
        await expect_error('{"type":"config","strength":1e400}', "finite")
        await expect_error('{"type":"bogus"}', "unknown message type")
        assert server_session.track.enabled is True  # nothing was applied

        # a handler that raises anyway (a bug): caught, the call goes on
        def broken(fields):
            raise OverflowError("int too large to convert to float")
        server_session.apply_config = broken
        ch.send('{"type":"config","strength":0.5}')
        assert await wait_until(lambda: server_session.handler_errors == 1, 5)
        assert server.metrics.value("osdface_messages_rejected_total", reason="handler") == 1
        del server_session.apply_config

        # a burst: rate-limited, answered with at most one notice per second
        n = len(replies)
        for i in range(500):
            ch.send(json.dumps({"type": "ping", "t": i}))
        await asyncio.sleep(1.5)
        pongs = [r for r in replies[n:] if r.get("type") == "pong"]
        notices = [r for r in replies[n:] if r.get("type") == "error"]
        assert 30 <= len(pongs) <= 120, len(pongs)  # burst 40 + 20/s
        assert 1 <= len(notices) <= 3 and "rate limit" in notices[0]["message"]
        assert server.metrics.value("osdface_messages_rejected_total", reason="rate") >= 300

        await asyncio.sleep(2.5)  # the bucket refills: valid messages work again
        n = len(replies)
        ch.send('{"type":"config","enabled":false,"strength":0.25}')
        assert await wait_until(lambda: any(r.get("type") == "stats" and r.get("strength") == 0.25
                                            and r.get("enabled") is False for r in replies[n:]), 5)
        # DataChannels per call are capped (2 by default): the third is closed by the server
        extra = [client.pc.createDataChannel(f"extra{i}") for i in range(2)]
        assert await wait_until(lambda: extra[1].readyState == "closed", 5)
        assert extra[0].readyState == "open"
        assert server.metrics.value("osdface_messages_rejected_total", reason="channels") == 1
        script_ok["t"] = time.monotonic()
        script_ok["sessions"] = len(server.sessions)

    async with running_server(ServerConfig(port=0), StripeRestorer()) as (base, server):
        track, _ = clip_track(SIZE, max_frames=30)
        client = PeerClient(base)
        result = await client.stream(track, duration_s=2.0, on_connected=scenario)
        assert script_ok.get("sessions") == 1
        after = [t for _, t in result.received if t > script_ok["t"]]
        assert len(after) > 20, len(after)  # video kept flowing after all of it
        assert await wait_until(lambda: not server.sessions, 8)


# -- 2. a closed call frees what it held, without the garbage collector --------------------------


async def test_closed_calls_free_objects_and_threads_without_gc(clip):
    async with running_server(ServerConfig(port=0), StripeRestorer()) as (base, server):
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            refs: list[dict] = []
            threads: list[tuple[int, int]] = []

            def grab(_client) -> None:
                s = next(iter(server.sessions.values()))
                refs.append({k: weakref.ref(v) for k, v in {
                    "Session": s, "RTCPeerConnection": s.pc, "EnhanceTrack": s.track,
                    "FaceEnhancer": s.enhancer, "FaceDetector": s.enhancer.detector}.items()})

            base_threads = (threading.active_count(), native_threads())
            for _ in range(3):
                track, _ = clip_track(SIZE, max_frames=30)
                await PeerClient(base).stream(track, duration_s=2.0, on_connected=grab)
                assert await wait_until(lambda: not server.sessions, 8)
                await asyncio.sleep(0.5)
                pool = executor_threads()
                threads.append((threading.active_count() - pool, native_threads() - pool))
            # offers refused after the session was built (aiortc cannot parse the SDP) too
            closed_refs: list[weakref.ref] = []
            on_closed = server._session_closed
            server._session_closed = lambda s: (closed_refs.append(weakref.ref(s)), on_closed(s))
            bad = {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN\r\n", "type": "offer"}
            async with aiohttp.ClientSession() as http:
                for _ in range(3):
                    async with http.post(f"{base}/offer", json=bad) as r:
                        assert r.status == 400
            del server._session_closed
            assert len(closed_refs) == 3 and all(r() is None for r in closed_refs)
            alive = [[k for k, r in d.items() if r() is not None] for d in refs]
            assert alive == [[], [], []], alive
            # the first call starts the shared restore worker; after that no call may leave a
            # thread behind (python or native), not counting the default executor's pool
            assert threads[-1][0] <= threads[0][0], (base_threads, threads)
            assert threads[-1][1] <= threads[0][1] + 1, (base_threads, threads)
        finally:
            if enabled:
                gc.enable()


# -- 3. call slots ---------------------------------------------------------------------------------


async def test_origin_host_and_content_type_checked():
    cfg = ServerConfig(port=0, session=SessionConfig(connect_timeout_s=1.0),
                       guard=HttpGuardConfig(allowed_origins=["https://app.example.org"]))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            pc, offer = await offer_with()
            for headers, status in [
                ({"Origin": "https://evil.example"}, 403),
                ({"Origin": "null"}, 403),
                ({"Origin": base.replace("127.0.0.1", "localhost")}, 403),  # another origin
                ({"Host": "attacker.example:8080"}, 403),  # DNS rebinding
            ]:
                async with http.post(f"{base}/offer", json=offer, headers=headers) as r:
                    assert r.status == status, (headers, r.status)
                    assert "not allowed" in (await r.json())["error"]
            async with http.get(f"{base}/healthz", headers={"Host": "attacker.example"}) as r:
                assert r.status == 403
            async with http.post(f"{base}/offer", data=json.dumps(offer),
                                 headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415 and "application/json" in (await r.json())["error"]
            assert not server.sessions
            for origin in (base, "https://app.example.org"):  # the page itself, a configured one
                async with http.post(f"{base}/offer", json=offer, headers={"Origin": origin}) as r:
                    assert r.status == 200, await r.text()
            await pc.close()
        assert server.metrics.value("osdface_http_rejected_total", reason="host_origin") == 5
        assert await wait_until(lambda: not server.sessions, 5)


async def test_unconnected_offer_frees_its_slot_quickly():
    cfg = ServerConfig(port=0, max_sessions=1)  # default connect timeout
    async with running_server(cfg, StripeRestorer()) as (base, server):
        pc, offer = await offer_with()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 200
            t0 = time.monotonic()
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 503
            assert await wait_until(lambda: not server.sessions, 10)
            assert time.monotonic() - t0 < 9, "slot held too long by an offer that never connects"
            pc2, offer2 = await offer_with()
            async with http.post(f"{base}/offer", json=offer2) as r:
                assert r.status == 200  # the slot is usable again
        await pc.close()
        await pc2.close()


class _StallingTrack(VideoStreamTrack):
    """Sends ``frames`` frames, then never another one (the camera stopped)."""

    def __init__(self, frames: int):
        super().__init__()
        self.left = frames

    async def recv(self):
        if self.left <= 0:
            await asyncio.sleep(3600)
        self.left -= 1
        return await super().recv()


async def test_pings_without_video_do_not_hold_the_slot():
    cfg = ServerConfig(port=0, session=SessionConfig(media_timeout_s=1.5))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        client = PeerClient(base)
        closed_by_server: dict = {}

        async def ping_forever(c: PeerClient) -> None:
            assert await wait_until(lambda: c.channel.readyState == "open", 10)
            session = next(iter(server.sessions.values()))
            for i in range(40):  # 6 s of pings, 4x the media timeout
                c.channel.send(json.dumps({"type": "ping", "t": i}))
                await asyncio.sleep(0.15)
                if session.closed:
                    closed_by_server["reason"] = session.close_reason
                    closed_by_server["after_pings"] = i
                    return

        stalling = _StallingTrack(frames=20)
        stalling.sent = {}  # PeerClient's StreamResult reads it
        await client.stream(stalling, duration_s=0.1, on_connected=ping_forever)
        assert "no video" in closed_by_server.get("reason", ""), closed_by_server


async def test_slow_body_is_timed_out():
    cfg = ServerConfig(port=0, guard=HttpGuardConfig(body_timeout_s=1.0))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        await writer.drain()
        t0 = time.monotonic()
        head = await asyncio.wait_for(reader.read(200), 6)  # the server answers, not the client
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - t0 < 4
        writer.close()
        assert server.metrics.value("osdface_http_rejected_total", reason="body") == 1


async def test_slow_headers_and_idle_connections_are_closed():
    """A client that trickles its request headers (or opens a connection and sends nothing)
    loses the connection after header_timeout_s; a normal request on the same server works."""
    cfg = ServerConfig(port=0, guard=HttpGuardConfig(header_timeout_s=1.0))
    async with running_server(cfg, StripeRestorer()) as (base, _server):
        port = int(base.rsplit(":", 1)[1])
        idle = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-Slow: 1\r\n", b"X-Slow: 2\r\n"):
            writer.write(part)  # one header line every 0.6 s: never a complete request
            await writer.drain()
            await asyncio.sleep(0.6)
            if reader.at_eof():
                break
        rest = await asyncio.wait_for(reader.read(), 6)  # EOF: the server closed it
        assert rest == b"" and time.monotonic() - t0 < 4, rest
        assert await asyncio.wait_for(idle[0].read(), 6) == b""
        for w in (writer, idle[1]):
            w.close()
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as r:
            assert r.status == 200


async def test_video_tracks_capped_per_call():
    cfg = ServerConfig(port=0, session=SessionConfig(connect_timeout_s=1.0))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            pc, offer = await offer_with(20)
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 400
                assert "20 video tracks" in (await r.json())["error"]
            await pc.close()
        assert not server.sessions
    cfg = ServerConfig(port=0, session=SessionConfig(connect_timeout_s=1.0,
                                                     offer_limits=OfferLimits(max_video_tracks=2)))
    async with running_server(cfg, StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            pc, offer = await offer_with(2)
            async with http.post(f"{base}/offer", json=offer) as r:
                assert r.status == 200, await r.text()
            await pc.close()


# -- 4. what the server shows and where it listens -------------------------------------------------


async def test_bad_json_and_sdp_get_clear_400():
    async with running_server(ServerConfig(port=0), StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            cases = [
                ("[" * 30000 + "]" * 30000, "nested"),
                ('{"sdp": "v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\nc=IN\\r\\n", "type": "offer"}', "invalid SDP offer: "),
                ('{"sdp": "v=0\\r\\nm=video\\r\\n", "type": "offer"}', "m=<media>"),
                ('{"sdp": "v=0\\r\\nm=video 9 RTP 96\\r\\n", "type": "offer", "x": ' + "1" * 5000 + "}", "JSON"),
            ]
            for body, reason in cases:
                async with http.post(f"{base}/offer", data=body, headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400, (body[:50], r.status)
                    err = (await r.json())["error"]
                    assert reason in err and not err.endswith(": "), (body[:50], err)
                    if reason.startswith("invalid SDP"):
                        assert len(err) > len(reason) + 3, err


async def test_stats_needs_the_token_metrics_do_not():
    async with running_server(ServerConfig(port=0, token="s3cret"), StripeRestorer()) as (base, server):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/stats") as r:
                assert r.status == 401
            async with http.get(f"{base}/stats", headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
            for public in ("/metrics", "/healthz", "/config"):
                async with http.get(f"{base}{public}") as r:
                    assert r.status == 200, public


def _serve(*args: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "osdface_rtc.cli", "serve", "--port", str(port), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def test_serve_log_hides_token_and_answers_only_with_the_bound_address():
    port = free_port()
    proc = _serve("--passthrough", "--token", "s3cret", port=port)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc, 60)
        pc, offer = await offer_with()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json=offer, headers={"X-Token": "s3cret"}) as r:
                assert r.status == 200, await r.text()
                answer = (await r.json())["sdp"]
        await pc.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    cands = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", answer)
    assert cands and set(cands) == {"127.0.0.1"}, cands  # not 192.0.2.x / fd00:: / other interfaces
    assert "s3cret" not in out, out
    lines = [ln for ln in out.splitlines() if "osdface_rtc" in ln]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ln) for ln in lines), lines
    assert any("serving on" in ln for ln in lines), out


def test_serve_broken_model_is_one_line_exit_2(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    proc = _serve("--model", str(broken), port=free_port())
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert "cannot load the restorer" in out


def test_host_candidates_follow_the_bind_address():
    import aioice.ice

    from osdface_rtc.rtc.ice import host_candidate_addresses, restrict_host_candidates

    assert host_candidate_addresses("127.0.0.1") == ["127.0.0.1"]
    assert host_candidate_addresses("localhost") == ["127.0.0.1"]
    assert host_candidate_addresses("::1") == ["::1"]
    assert host_candidate_addresses("192.0.2.2") == ["192.0.2.2"]
    assert host_candidate_addresses("0.0.0.0") is None and host_candidate_addresses("::") is None
    assert host_candidate_addresses("127.0.0.1", "all") is None
    previous = aioice.ice.get_host_addresses
    try:
        restrict_host_candidates(["192.0.2.2", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["192.0.2.2"]
        assert aioice.ice.get_host_addresses(True, True) == ["192.0.2.2", "::1"]
    finally:
        aioice.ice.get_host_addresses = previous
