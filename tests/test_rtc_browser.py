"""Real headless Chromium: opens the page with a fake camera (a shared clip as y4m), connects,
and checks decoded frames, DataChannel stats and a screenshot with both videos.

The browser and the server run in a child process inside a private network namespace
(``unshare -n`` + ``ip link set lo up``) when possible, so no traffic can leave loopback;
otherwise only on 127.0.0.1. This file is also that child's script (``--inner``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def write_y4m(src: Path, dst: Path, size: tuple[int, int] = (640, 480), seconds: float = 3.0) -> Path:
    """Convert the start of a clip to a y4m file Chromium can use as its fake camera; every
    frame carries its id twice: top-left and bottom-right (see :func:`read_split_ids`)."""
    import av

    from osdface_rtc.io.clips import read_clip
    from osdface_rtc.rtc import frameid

    pw, ph = frameid.pattern_box(size[1])
    frames, _ = read_clip(src, size, round(seconds * 30))
    with av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for n, rgb in enumerate(frames):
            frameid.stamp_rgb(rgb, n)
            frameid.stamp_rgb(rgb, n, x0=size[0] - pw, y0=size[1] - ph)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            for pkt in stream.encode(vf):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return dst


def read_split_ids(png: bytes, size: tuple[int, int] = (640, 480)) -> tuple[int | None, int | None]:
    """Frame ids of the left (top-left stamp) and right (bottom-right stamp) side of a
    screenshot of the displayed video, i.e. of what the user sees on each side of the divider."""
    import cv2
    import numpy as np

    from osdface_rtc.rtc import frameid

    gray = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    pw, ph = frameid.pattern_box(size[1])
    return frameid.read_luma(gray), frameid.read_luma(gray, x0=size[0] - pw, y0=size[1] - ph)


def netns_prefix() -> list[str]:
    """``unshare -n`` wrapper when this user may create a network namespace, else nothing."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return []
    ok = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True).returncode == 0
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] if ok else []


@pytest.mark.browser
def test_page_in_headless_chromium(tmp_path, clips_dir):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    pytest.importorskip("playwright.async_api", reason="playwright (Python) not installed")
    clip = clips_dir / "d9.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    y4m = write_y4m(clip, tmp_path / "camera.y4m")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = netns_prefix() + [sys.executable, str(Path(__file__)), "--inner", "--y4m", str(y4m),
                            "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    result_file = tmp_path / "result.json"
    assert proc.returncode == 0 and result_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(result_file.read_text())
    assert r["netns"] == bool(netns_prefix())
    assert r["local_frames"] > 30, r
    assert r["remote_frames"] > 30, r  # decoded enhanced frames
    assert r["remote_size"] == [640, 480], r
    assert r["stats_messages"] >= 3, r
    stats = r["stats"]
    assert stats["faces"] >= 1 and stats["fps_out"] > 5 and stats["frames_out"] > 30, stats
    assert abs(stats["strength"] - 0.5) < 1e-6, stats  # the slider reached the server
    assert r["server_sessions_after_stop"] == 0, r
    for name in ("side.png", "split.png"):
        shot = tmp_path / name
        assert shot.exists() and shot.stat().st_size > 20_000, shot
    # freshness in words on the overlay, and in the stats
    assert "face restored" in r["overlay"] and "ms old" in r["overlay"], r["overlay"]
    assert stats["age_p50_ms"] is not None and stats["restores_per_s"] > 0, stats
    # split before/after: both sides of the divider show one frame id, in every readable shot
    pairs = [tuple(p) for p in r["split_ids"] if None not in p]
    assert len(pairs) >= 8, r["split_ids"]
    assert all(a == b for a, b in pairs), pairs
    assert r["server_compare"] == 0.5, r  # (and back to null in side view: waited for in the child)
    print(f"screenshots in {tmp_path}")


# -- the child process ------------------------------------------------------------------------


async def inner(y4m: Path, out: Path) -> dict:
    from playwright.async_api import async_playwright

    from osdface_rtc.restore import ClassicalRestorer
    from osdface_rtc.rtc.server import ServerConfig
    from rtc_util import running_server, wait_until

    result: dict = {"netns": _in_private_netns()}
    async with running_server(ServerConfig(port=0), ClassicalRestorer()) as (base, server):
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
            page = await browser.new_page(viewport={"width": 1400, "height": 820})
            page.on("console", lambda m: print("console:", m.text))
            await page.goto(base + "/")
            await page.select_option("#resolution", "640x480")
            await page.click("#start")
            await page.wait_for_function("window.osdface.statsMessages >= 3", timeout=30_000)
            await page.wait_for_function(
                "document.getElementById('remote').getVideoPlaybackQuality().totalVideoFrames > 40",
                timeout=30_000)
            # change the blend strength live over the DataChannel
            await page.eval_on_selector(
                "#strength", "el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
            await page.wait_for_function("window.osdface.server && window.osdface.server.strength === 0.5",
                                         timeout=10_000)
            await asyncio.sleep(2.0)  # let the overlay show browser-side stats too
            await page.screenshot(path=str(out / "side.png"))
            await page.select_option("#view", "split")
            await page.wait_for_function("window.osdface.server && window.osdface.server.compare === 0.5",
                                         timeout=10_000)
            result["server_compare"] = await page.evaluate("window.osdface.server.compare")
            await asyncio.sleep(0.5)  # frames composed by the server reach the page
            await page.screenshot(path=str(out / "split.png"))
            ids = []
            for _ in range(12):  # what the user sees left and right of the divider, at once
                ids.append(read_split_ids(await page.locator("#remote").screenshot()))
                await asyncio.sleep(0.1)
            result["split_ids"] = ids
            await page.select_option("#view", "side")
            await page.wait_for_function("window.osdface.server && window.osdface.server.compare === null",
                                         timeout=10_000)
            info = await page.evaluate("""() => {
                const l = document.getElementById('local'), r = document.getElementById('remote');
                return {local_frames: l.getVideoPlaybackQuality().totalVideoFrames,
                        remote_frames: r.getVideoPlaybackQuality().totalVideoFrames,
                        remote_size: [r.videoWidth, r.videoHeight],
                        stats_messages: window.osdface.statsMessages,
                        stats: window.osdface.server, browser: window.osdface.browser,
                        overlay: document.getElementById('stats').textContent};
            }""")
            result.update(info)
            await page.click("#stop")
            result["server_sessions_after_stop"] = (
                0 if await wait_until(lambda: not server.sessions, 10) else len(server.sessions))
            await browser.close()
    return result


def _in_private_netns() -> bool:
    import socket

    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", action="store_true")
    ap.add_argument("--y4m", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result = asyncio.run(inner(args.y4m, args.out))
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "stats"}, indent=1))


if __name__ == "__main__":
    main()
