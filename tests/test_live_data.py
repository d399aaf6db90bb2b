"""Call damage on whole frames (real codecs), webcam scenes from stills, live-path training pairs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from osdface_rtc.data.call import PRESETS, CallDamage, damage_clip, parse_damage
from osdface_rtc.data.livepairs import LivePairConfig, random_damage, read_photo, scene_pairs
from osdface_rtc.data.regions import FACE_ELLIPSE
from osdface_rtc.data.scenes import SceneConfig, make_scene
from osdface_rtc.io.media import read_video
from osdface_rtc.pipeline.detect import DetectorConfig, FaceDetector
from osdface_rtc.data.pairs import ConcatPairs, FixedPairs

from conftest import psnr


@pytest.fixture(scope="module")
def clip_frames(clip) -> list[np.ndarray]:
    """The first 60 frames (2 s) of d9.mp4, 512x480."""
    return [f for _, f in zip(range(60), read_video(clip))]


# ----------------------------------------------------------------------------- call damage

def test_parse_damage_names_and_errors():
    assert parse_damage("x3-vp8-120k") == CallDamage(3.0, "vp8", 120.0)
    assert parse_damage("x2.5-h264-200k") == CallDamage(2.5, "h264", 200.0)
    assert parse_damage("x2.5-h264-200k").name == "x2p5-h264-200k"
    assert parse_damage("x2p5-h264-200k").scale == 2.5
    for name, d in PRESETS.items():
        assert parse_damage(name) == d and d.name == name
    for bad in ("x3-av1-120k", "3-vp8-120k", "x3-vp8", ""):
        with pytest.raises(ValueError, match="call condition"):
            parse_damage(bad)
    with pytest.raises(ValueError):
        CallDamage(0.5, "vp8", 100)


@pytest.mark.parametrize("name", ["x3-vp8-120k", "x3-h264-150k"])
def test_damage_holds_the_bitrate_and_frame_size(clip_frames, name):
    d = parse_damage(name)
    stats: dict = {}
    out = damage_clip(clip_frames, d, stats)
    assert len(out) == len(clip_frames)
    assert all(o.shape == f.shape and o.dtype == np.uint8 for o, f in zip(out, clip_frames))
    assert stats["sent_size"] == (170, 160)  # 512x480 / 3, even sides
    steady = np.array(stats["bytes"][30:]) * 8 * d.fps / 1000  # kbit/s after rate control settles
    assert 0.6 * d.kbps < steady.mean() < 1.3 * d.kbps, steady.mean()
    assert stats["bytes"][0] > 3 * np.median(stats["bytes"][1:])  # one keyframe, then inter frames


def test_less_bandwidth_is_more_damage_and_runs_are_deterministic(clip_frames):
    frames = clip_frames[:40]
    q = {}
    for name in ("x2-vp8-300k", "x3-vp8-120k", "x4-vp8-80k"):
        out = damage_clip(frames, parse_damage(name))
        q[name] = np.mean([psnr(o, f) for o, f in zip(out[20:], frames[20:])])
    assert q["x2-vp8-300k"] > q["x3-vp8-120k"] + 1.0 > q["x4-vp8-80k"] + 1.0, q
    a = damage_clip(frames[:10], parse_damage("x3-h264-150k"))
    b = damage_clip(frames[:10], parse_damage("x3-h264-150k"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_damage_rejects_bad_frames():
    with pytest.raises(ValueError, match="uint8"):
        damage_clip([np.zeros((64, 64), np.uint8)], PRESETS["x2-vp8-300k"])
    with pytest.raises(ValueError, match="earlier frames"):
        damage_clip([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8)], PRESETS["x2-vp8-300k"])


# ----------------------------------------------------------------------------- scenes

def test_scene_places_the_photo_at_its_affine(utk_faces):
    photo = read_photo(utk_faces[0])
    cfg = SceneConfig(frames=5, face_px=(180, 180))
    clip = make_scene(photo, np.random.default_rng(3), cfg)
    assert len(clip.frames) == 5 and clip.frames[0].shape == (480, 640, 3)
    s = photo.shape[0]
    for k in range(5):
        back = cv2.warpAffine(clip.frames[k], cv2.invertAffineTransform(clip.photo_to_frame[k]), (s, s),
                              flags=cv2.INTER_AREA)
        assert psnr(back[40:-40, 40:-40], photo[40:-40, 40:-40]) > 26  # inside the feathered edge
        side = np.sqrt(abs(np.linalg.det(clip.photo_to_frame[k][:, :2]))) * s
        area = clip.face_mask(k).sum()
        expected = np.pi * FACE_ELLIPSE[2] * FACE_ELLIPSE[3] * side**2
        assert abs(area - expected) < 0.05 * expected
    moved = [np.abs(clip.photo_to_frame[k][:, 2] - clip.photo_to_frame[k - 1][:, 2]).max() for k in range(1, 5)]
    assert max(moved) > 0.05  # the head is never still


def test_scene_rejects_non_square_photos():
    with pytest.raises(ValueError, match="square"):
        make_scene(np.zeros((100, 80, 3), np.uint8), np.random.default_rng(0))


# ----------------------------------------------------------------------------- live pairs

def test_scene_pairs_are_crops_of_the_damaged_and_clean_frame_at_one_affine(utk_faces):
    cfg = LivePairConfig(face_size=96, crops_per_scene=2, scene=SceneConfig(frames=10))
    det = FaceDetector(DetectorConfig(mode="both", min_face=16))
    try:
        pairs = []
        for i, p in enumerate(utk_faces[:6]):
            photo = read_photo(p)
            got = scene_pairs(photo, np.random.default_rng(i), cfg, det, parse_damage("x3-vp8-120k"))
            assert len(got) <= 2
            for lq, hq in got:
                assert lq.shape == hq.shape == (96, 96, 3)
                # HQ is framed like the photo itself (the template is measured on these photos):
                # the photo's centre is found in the HQ crop close to where it is in the photo
                ref = cv2.resize(photo, (96, 96), interpolation=cv2.INTER_AREA)
                score = cv2.matchTemplate(hq, ref[24:72, 24:72], cv2.TM_CCOEFF_NORMED)
                _, best, _, (x, y) = cv2.minMaxLoc(score)
                assert best > 0.45 and abs(x - 24) <= 12 and abs(y - 24) <= 12, (best, x, y)
            pairs += got
    finally:
        det.close()
    assert len(pairs) >= 10  # the detector finds the face on damaged frames
    gaps = [psnr(lq, hq) for lq, hq in pairs]
    assert 22 < np.mean(gaps) < 40  # damaged, but the same face at the same place


def test_random_damage_scales_the_bitrate_with_frame_area():
    cfg = LivePairConfig()
    rng = np.random.default_rng(0)
    small = [random_damage(rng, cfg, 320 * 240).kbps for _ in range(200)]
    big = [random_damage(rng, cfg, 1280 * 720).kbps for _ in range(200)]
    assert np.median(big) > 5 * np.median(small)
    ds = [random_damage(rng, cfg, 640 * 480) for _ in range(200)]
    assert {d.codec for d in ds} == {"vp8", "h264"}
    assert all(cfg.scale[0] <= d.scale <= cfg.scale[1] + 0.01 for d in ds)


def test_fixed_and_concat_pairs():
    a = FixedPairs(np.zeros((3, 4, 4, 3), np.uint8), np.ones((3, 4, 4, 3), np.uint8), flip=False)
    b = FixedPairs(np.full((2, 4, 4, 3), 7, np.uint8), np.full((2, 4, 4, 3), 9, np.uint8))
    both = ConcatPairs([a, FixedPairs(np.zeros((0, 4, 4, 3), np.uint8), np.zeros((0, 4, 4, 3), np.uint8)), b])
    assert len(both) == 5
    assert both[2][1][0, 0, 0] == 1 and both[3][0][0, 0, 0] == 7 and both[4][1][0, 0, 0] == 9
    both.set_epoch(3)
    assert a.epoch == b.epoch == 3
    with pytest.raises(ValueError):
        FixedPairs(np.zeros((3, 4, 4, 3), np.uint8), np.zeros((2, 4, 4, 3), np.uint8))
