"""`osdface-rtc enhance` end to end on real clips and images, including bad input."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import read_rgb
from osdface_rtc.cli import main
from osdface_rtc.io.media import probe_video, read_image, read_video


def cut_clip(src: Path, dst: Path, seconds: float) -> None:
    """Copy the first ``seconds`` of a clip (video + audio packets, no re-encode)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
            if packet.dts is None or packet.pts is None:
                continue
            if float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


@pytest.fixture(scope="module")
def short_clip(clips_dir, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("clip") / "d9_2s.mp4"
    cut_clip(clips_dir / "d9.mp4", p, 2.0)
    return p


def audio_duration(path: Path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return float(sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate)


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_video_roundtrip_keeps_frames_fps_and_audio(short_clip, tmp_path, ext):
    out = tmp_path / f"out{ext}"
    assert main(["enhance", str(short_clip), "-o", str(out), "--model", "classical",
                 "--json", str(tmp_path / "s.json")]) == 0
    a, b = probe_video(short_clip), probe_video(out)
    n_in = sum(1 for _ in read_video(short_clip))
    n_out = sum(1 for _ in read_video(out))
    assert n_out == n_in and b.fps == a.fps and (b.width, b.height) == (a.width, a.height)
    assert b.has_audio and abs(audio_duration(out) - audio_duration(short_clip)) < 0.1
    first_in, first_out = next(iter(read_video(short_clip))), next(iter(read_video(out)))
    assert np.abs(first_in.astype(int) - first_out).mean() < 8  # same picture, faces enhanced


def test_video_upscale_and_y4m(short_clip, tmp_path):
    out = tmp_path / "out.y4m"
    assert main(["enhance", str(short_clip), "-o", str(out), "--model", "identity", "--upscale", "2"]) == 0
    info = probe_video(out)
    assert (info.width, info.height) == (1024, 960) and info.fps == Fraction(30)


def test_temporal_filter_option(short_clip, tmp_path):
    """--temporal 0: an identity restorer gives the input back; the default filter stabilises
    the faces (changes them a little from frame 2 on); a weight outside [0, 1) is refused."""
    outs = {}
    for w, extra in (("0", []), ("0.6", []), ("pass", ["--strength", "0"])):
        out = tmp_path / f"t{w}.y4m"
        args = ["enhance", str(short_clip), "-o", str(out), "--model", "identity"]
        assert main(args + (["--temporal", w] if w != "pass" else []) + extra) == 0
        outs[w] = list(read_video(out))
    for a, b in zip(outs["0"], outs["pass"]):  # the frames as they came (same output encoding)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(outs["0"][0], outs["0.6"][0])  # nothing to mix with at frame 1
    mixed = max(np.abs(a.astype(int) - b).max() for a, b in zip(outs["0"][1:], outs["0.6"][1:]))
    assert mixed > 3, mixed  # the filter mixed earlier frames' faces in
    with pytest.raises(SystemExit, match="temporal"):
        main(["enhance", str(short_clip), "-o", str(tmp_path / "x.y4m"), "--temporal", "1.5"])


def test_console_script_prints_a_summary(short_clip, tmp_path):
    out = tmp_path / "o.mp4"
    r = subprocess.run([sys.executable, "-m", "osdface_rtc.cli", "enhance", str(short_clip), "-o", str(out),
                        "--model", "identity"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "faces found" in r.stdout and "ms per frame" in r.stdout and "detect" in r.stdout
    assert "frame" in r.stderr  # tqdm progress bar


def test_images_and_a_folder_with_bad_files(utk_faces, d9_dir_images, tmp_path):
    src = d9_dir_images
    (src / "empty.jpg").write_bytes(b"")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("hello")
    noface = np.full((120, 160, 3), 90, np.uint8)
    cv2.imwrite(str(src / "noface.png"), noface)
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--model", "classical", "--json", str(tmp_path / "r.json")]) == 0
    import json

    results = {Path(r["input"]).name: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert not results["empty.jpg"]["ok"] and not results["corrupt.png"]["ok"]
    assert results["noface.png"]["ok"] and results["noface.png"]["faces"] == 0
    assert np.array_equal(read_image(out / "noface.png"), noface[..., ::-1])  # untouched (BGR file)
    for name in ("odd.png", "gray.png", "rgba.png", "big.jpg"):
        assert results[name]["ok"] and results[name]["faces"] >= 1, name
        assert read_image(out / name).shape[:2] == read_image(src / name).shape[:2]


@pytest.fixture
def d9_dir_images(clips_dir, tmp_path) -> Path:
    frame = next(iter(read_video(clips_dir / "d9.mp4")))
    d = tmp_path / "in"
    d.mkdir()
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(d / "odd.png"), cv2.resize(bgr, (641, 479)))
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(d / "big.jpg"), cv2.resize(bgr, (3840, 2160)))
    return d


def test_refuses_to_overwrite_the_input(utk_faces, tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(utk_faces[0].read_bytes())
    before = img.read_bytes()
    assert main(["enhance", str(img), "-o", str(img)]) == 2
    assert main(["enhance", str(tmp_path), "-o", str(tmp_path / "sub")]) == 2
    assert img.read_bytes() == before


def test_nothing_done_is_a_failure(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["enhance", str(bad), "-o", str(tmp_path / "o.mp4"), "--model", "identity"]) == 1
    assert not (tmp_path / "o.mp4").exists()
    assert main(["enhance", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4")]) == 2


def test_single_image(utk_faces, tmp_path):
    out = tmp_path / "face.png"
    assert main(["enhance", str(utk_faces[0]), "-o", str(out), "--model", "classical"]) == 0
    assert read_image(out).shape == read_rgb(utk_faces[0]).shape
