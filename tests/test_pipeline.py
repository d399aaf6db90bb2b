"""The frame pipeline on real faces and clips: detect, smooth, align, blend, FaceEnhancer."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import psnr, read_rgb
from osdface_rtc.io.media import read_video
from osdface_rtc.pipeline.align import TEMPLATE_UNIT, ALIGN_POINTS, similarity_transform, template
from osdface_rtc.pipeline.detect import DetectorConfig, FaceDetector
from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.restore import ClassicalRestorer, IdentityRestorer


def clip_frames(path, n: int, step: int = 1) -> list[np.ndarray]:
    frames = []
    for i, f in enumerate(read_video(path)):
        if i % step == 0:
            frames.append(f)
        if len(frames) >= n:
            break
    return frames


@pytest.fixture(scope="module")
def detector():
    d = FaceDetector(DetectorConfig())
    yield d
    d.close()


@pytest.fixture(scope="module")
def d9_frame(clips_dir):
    return clip_frames(clips_dir / "d9.mp4", 1)[0]


# --- detection --------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", ["d9", "d13", "d6", "s18"])
def test_detection_finds_the_face_in_every_frame(detector, clips_dir, clip):
    frames = clip_frames(clips_dir / f"{clip}.mp4", 60, step=5)  # 60 frames over 10 s
    found = [len(detector.detect(f)) for f in frames]
    assert all(n >= 1 for n in found), found


def test_detection_on_real_faces(detector, utk_faces):
    hits = sum(bool(detector.detect(read_rgb(p))) for p in utk_faces)
    assert hits >= 0.95 * len(utk_faces)


def test_no_face_tiny_and_odd_frames(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert isinstance(detector.detect(rng.integers(0, 255, (479, 641, 3), np.uint8)), list)
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []


def test_template_matches_training_faces(utk_faces):
    """The shipped template is what the detector measures on the training faces."""
    det = FaceDetector(DetectorConfig(mode="short", min_face=0))
    found = [det.detect(read_rgb(p)) for p in utk_faces]
    pts = [f[0].landmarks[list(ALIGN_POINTS)] / 200.0 for f in found if f]
    assert len(pts) >= 0.95 * len(utk_faces)
    assert np.abs(np.median(pts, axis=0) - TEMPLATE_UNIT).max() < 0.02


# --- alignment ----------------------------------------------------------------------------------
def test_similarity_transform_recovers_a_known_warp():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    ang, sc, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = sc * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ rot.T + t
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


def test_aligned_crop_puts_landmarks_on_the_template(d9_frame):
    enh = FaceEnhancer(IdentityRestorer(128))
    faces = enh.detect(d9_frame)
    aligned = enh.align(d9_frame, faces)
    assert aligned.crops.shape == (1, 128, 128, 3)
    pts = faces[0].landmarks[list(ALIGN_POINTS)]
    mapped = pts @ aligned.affines[0][:, :2].T + aligned.affines[0][:, 2]
    assert np.abs(mapped - template(128)).max() < 6  # px in a 128 crop


# --- paste back -----------------------------------------------------------------------------
def test_identity_restorer_roundtrip_leaves_frame_unchanged(d9_frame):
    enh = FaceEnhancer(IdentityRestorer(128))
    out = enh.process(d9_frame)
    assert len(enh.last_faces) == 1
    assert psnr(out, d9_frame) > 50


def test_classical_restorer_changes_only_the_face(d9_frame):
    enh = FaceEnhancer(ClassicalRestorer())
    out = enh.process(d9_frame)
    x0, y0, x1, y1 = enh.last_faces[0].box.astype(int)
    diff = np.abs(out.astype(int) - d9_frame).sum(-1)
    pad = (x1 - x0) // 2
    outside = diff.copy()
    outside[max(0, y0 - pad): y1 + pad, max(0, x0 - pad): x1 + pad] = 0
    assert outside.max() == 0, "pixels far from the face changed"
    assert diff[y0:y1, x0:x1].mean() > 0.5, "the face was not changed"
    assert enh.last_timings["total"] > 0 and set(enh.last_timings) >= {"detect", "align", "restore", "blend"}


def test_strength_zero_is_the_original(d9_frame):
    enh = FaceEnhancer(ClassicalRestorer(), strength=0.0)
    assert np.array_equal(enh.process(d9_frame), d9_frame)


class Brighten(IdentityRestorer):
    """Adds 40 to every crop pixel: a change that is easy to find in the output frame."""

    def restore(self, faces: np.ndarray) -> np.ndarray:
        return np.clip(super().restore(faces).astype(np.int16) + 40, 0, 255).astype(np.uint8)


def test_faces_at_the_frame_edge_and_overlapping(d9_frame):
    """Half a face outside the frame is restored and pasted where it is, up to the frame edge,
    and nothing else in the frame changes; two overlapping copies: no error."""
    h, w = d9_frame.shape[:2]
    edge = np.ascontiguousarray(d9_frame[:, w // 3:])  # face cut at the left edge
    enh = FaceEnhancer(Brighten(128), detector="full")
    out = enh.process(edge)
    assert out.shape == edge.shape
    assert len(enh.last_faces) == 1
    x0, y0, x1, y1 = enh.last_faces[0].box
    assert x0 < 0 < x1, "the face should be cut by the left edge"
    change = out.astype(np.int16) - edge
    pad = 0.1 * enh.last_faces[0].size  # the feathered paste reaches just past the box
    inside = np.zeros(edge.shape[:2], bool)
    inside[max(0, int(y0 - pad)):int(y1 + pad), :int(x1 + pad)] = True
    assert not change[~inside].any(), "pixels away from the face changed"
    box = change[max(0, int(y0)):int(y1), :int(x1)]
    assert box.mean() > 20, f"the face was not pasted where it is (mean change {box.mean():.1f} of 40)"
    mid = slice(int(y0 + 0.25 * (y1 - y0)), int(y1 - 0.25 * (y1 - y0)))
    assert change[mid, 0].mean() > 20, "the paste stops short of the frame edge"
    pair = np.concatenate([d9_frame[:, 60:400], d9_frame[:, 100:440]], axis=1)
    enh2 = FaceEnhancer(ClassicalRestorer())
    out2 = enh2.process(np.ascontiguousarray(pair))
    assert out2.shape == pair.shape and len(enh2.last_faces) >= 1


def test_upscale_two_doubles_the_frame(d9_frame):
    enh = FaceEnhancer(ClassicalRestorer(), upscale=2)
    out = enh.process(d9_frame)
    assert out.shape == (d9_frame.shape[0] * 2, d9_frame.shape[1] * 2, 3)
    ref = cv2.resize(d9_frame, out.shape[1::-1], interpolation=cv2.INTER_LANCZOS4)
    assert 25 < psnr(out, ref) < 60  # the face region differs, the rest is the Lanczos upscale


def test_odd_gray_rgba_and_4k_frames(d9_frame):
    enh = FaceEnhancer(IdentityRestorer(128))
    odd = cv2.resize(d9_frame, (641, 479))
    assert enh.process(odd).shape == (479, 641, 3)
    gray = cv2.cvtColor(odd, cv2.COLOR_RGB2GRAY)
    assert enh.process(gray).shape == (479, 641, 3)
    rgba = cv2.cvtColor(odd, cv2.COLOR_RGB2RGBA)
    assert enh.process(rgba).shape == (479, 641, 3)
    big = cv2.resize(d9_frame, (3840, 2160))
    assert enh.process(big).shape == (2160, 3840, 3) and len(enh.last_faces) == 1
    with pytest.raises(ValueError):
        enh.process(np.zeros((4, 4, 3), np.float32))


def test_ten_faces_are_capped_and_restored_in_one_batch(utk_faces):
    tiles = [cv2.copyMakeBorder(cv2.resize(read_rgb(p), (140, 140)), 50, 50, 50, 50, cv2.BORDER_CONSTANT,
                                value=(128, 128, 128)) for p in utk_faces[:10]]
    grid = np.concatenate([np.concatenate(tiles[:5], 1), np.concatenate(tiles[5:], 1)], 0)
    calls = []

    class Counting(IdentityRestorer):
        def restore(self, faces):
            calls.append(len(faces))
            return super().restore(faces)

    grid = np.ascontiguousarray(grid)
    enh = FaceEnhancer(Counting(128), max_faces=20)
    enh.process(grid)
    assert len(calls) == 1 and calls[0] >= 5, calls  # all found faces in one batched call
    capped = FaceEnhancer(Counting(128), max_faces=4)
    capped.process(grid)
    assert calls[1] == 4 and len(capped.last_faces) == 4


def test_restorer_error_passes_the_frame_through(d9_frame):
    class Broken(IdentityRestorer):
        def restore(self, faces):
            raise RuntimeError("CUDA out of memory (simulated)")

    enh = FaceEnhancer(Broken(128))
    out = enh.process(d9_frame)
    assert np.array_equal(out, d9_frame) and enh.errors == 1 and "out of memory" in enh.last_error


# --- temporal smoothing -------------------------------------------------------------------
def _still_clip(frame: np.ndarray, n: int = 40) -> list[np.ndarray]:
    """A still camera: the same frame with fresh sensor noise and JPEG damage every time."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        noisy = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 60])
        out.append(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
    return out


def _crop_jitter(enh: FaceEnhancer, frames) -> float:
    aff = []
    for i, f in enumerate(frames):
        faces = enh.detect(f, t=i / 30)
        aff.append(enh.align(f, faces).affines[0])
    # movement of the crop centre in frame pixels, frame to frame
    centres = np.array([cv2.invertAffineTransform(a) @ np.array([64, 64, 1.0]) for a in aff])
    return float(np.abs(np.diff(centres[5:], axis=0)).mean())


def test_smoothing_reduces_crop_jitter_on_a_still_clip(d9_frame):
    frames = _still_clip(d9_frame)
    raw = FaceEnhancer(IdentityRestorer(128))
    raw.tracker.config.enabled = False
    smooth = FaceEnhancer(IdentityRestorer(128))
    j_raw, j_smooth = _crop_jitter(raw, frames), _crop_jitter(smooth, frames)
    assert j_raw > 0.05, "the still clip should make the raw detector jitter"
    assert j_smooth < 0.5 * j_raw, (j_raw, j_smooth)


def test_smoothing_follows_a_moving_face(d9_frame):
    """A face panning 4 px/frame: the smoothed crop must not lag more than a few pixels."""
    h, w = d9_frame.shape[:2]
    canvas = np.zeros((h, w + 200, 3), np.uint8)
    enh = FaceEnhancer(IdentityRestorer(128))
    lags = []
    for i in range(40):
        canvas[:] = 0
        canvas[:, 4 * i: 4 * i + w] = d9_frame
        faces = enh.detect(canvas, t=i / 30)
        raw = enh.detector.detect(canvas)[0]
        lags.append(abs(faces[0].landmarks[0, 0] - raw.landmarks[0, 0]))
    assert np.mean(lags[10:]) < 4.0, lags
