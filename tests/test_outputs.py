"""Outputs are complete or absent (disk full, SIGTERM), and oversized inputs are refused clearly."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from osdface_rtc.cli import main

NOISE = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)  # ~480 KB as PNG


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "64k"):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_disk_full_on_a_real_tmpfs_leaves_nothing_partial(tmp_path):
    from osdface_rtc.io.media import MediaError, write_image

    with small_tmpfs(tmp_path / "full") as d:
        old = d / "out.png"
        old.write_bytes(b"previous result")  # an earlier output of the same name survives
        with pytest.raises(MediaError, match="No space left"):
            write_image(old, NOISE)
        assert old.read_bytes() == b"previous result"
        assert sorted(p.name for p in d.iterdir()) == ["out.png"]  # no partial, no 0-byte file
        with pytest.raises(MediaError, match="nothing was written"):
            write_image(d / "new.png", NOISE)
        assert not (d / "new.png").exists()


def test_write_error_leaves_nothing_partial(tmp_path, monkeypatch):
    """The same without root: the write fails with ENOSPC half-way."""
    from osdface_rtc.io import atomic
    from osdface_rtc.io.media import MediaError, write_image

    real_write, calls = os.write, []

    def failing_write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data)[:1000])  # a short write first

    monkeypatch.setattr(atomic.os, "write", failing_write)
    with pytest.raises(MediaError, match="No space left"):
        write_image(tmp_path / "a.png", NOISE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_image(tmp_path / "a.png", NOISE)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_enhance_image_to_a_full_disk_fails_cleanly(tmp_path, utk_faces, caplog):
    import cv2

    src = tmp_path / "in.png"
    face = cv2.imread(str(utk_faces[0]))
    cv2.imwrite(str(src), cv2.resize(face, (400, 400)) // 2 + NOISE[..., ::-1] // 2)
    with small_tmpfs(tmp_path / "full", "16k") as d:
        rc = main(["enhance", str(src), "-o", str(d / "out.png"), "--model", "classical"])
        assert rc == 1
        assert list(d.iterdir()) == []
    assert "No space left" in caplog.text


def test_sigterm_mid_video_removes_the_partial_output(tmp_path, clips_dir):
    src = clips_dir / "d6.mp4"  # 33 s: still running when the signal comes
    if not src.is_file():
        pytest.skip(f"{src} not found")
    out = tmp_path / "out" / "enhanced.mp4"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "osdface_rtc.cli", "enhance", str(src), "-o", str(out),
                             "--model", "classical", "--detector", "short"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list(out.parent.glob(".enhanced.partial*")) if out.parent.is_dir() else []
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "finished before the signal: use a longer clip"
        assert partial, "no partial output appeared"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert list(out.parent.iterdir()) == [], output[-2000:]


def test_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path, caplog):
    from PIL import Image

    from osdface_rtc.io.media import MediaError, read_image

    huge = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(huge)  # 100 MP, a few KB on disk
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"10000x10000 is 100.0 MP, over the limit of 40 MP"):
        read_image(huge)
    assert time.monotonic() - t0 < 1.0  # refused from the header, not after a 300 MB decode

    small = tmp_path / "in.png"
    Image.fromarray(NOISE).resize((1200, 1000)).save(small)
    rc = main(["enhance", str(small), "-o", str(tmp_path / "o" / "x.png"), "--model", "classical",
               "--max-pixels", "1e6"])
    assert rc == 1 and not (tmp_path / "o" / "x.png").exists()
    assert "over the limit of 1 MP" in caplog.text
