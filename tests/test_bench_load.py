"""``osdface-rtc bench --sessions N --faces K``: real servers in child processes, real peers."""
from __future__ import annotations

import json

import numpy as np

from osdface_rtc.cli import main
from osdface_rtc.io.clips import tile_faces


def test_tile_faces_keeps_face_scale():
    frames = [np.full((480, 640, 3), i, np.uint8) for i in range(40)]
    tiled = tile_faces(frames, 3, (640, 480))
    assert len(tiled) == 40 and tiled[0].shape == (480, 640, 3)
    # tile j shows frame i + 17 j
    assert [int(tiled[5][0, x, 0]) for x in (10, 320, 630)] == [5, 22, 39]


def test_bench_two_sessions_three_faces(clip, tmp_path):
    out = tmp_path / "load.json"
    rc = main(["bench", str(clip), "--model", "identity", "--sessions", "2", "--faces", "3", "--only", "enhance",
               "--duration", "3", "--warmup", "1.5", "--budget-ms", "200", "--out", str(out),
               "--plot", str(tmp_path / "load.png")])
    assert rc == 0
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    e = row["report"]["enhance"]
    sessions = e["load"]["sessions"]
    assert len(sessions) == 2 and all(s["fps_out"] > 3 for s in sessions), sessions
    assert all(s["faces"] >= 2 for s in sessions), sessions  # the tiles' faces are found
    assert e["freshness"]["faces_shown"] > 20 and e["freshness"]["restores_per_s"] > 0, e["freshness"]
    assert len(e["load"]["latencies_ms"]) == e["frames_matched"]
    assert (tmp_path / "load.png").stat().st_size > 10_000  # the CDF plot
