"""Degradations (osdface_rtc.data.degrade, .pool) and face data (osdface_rtc.data.faces, .pairs)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from osdface_rtc.data.degrade import (
    LEVELS,
    PRESETS,
    apply_params,
    codec_roundtrip,
    degrade,
    degrade_level,
    sample_params,
)
from osdface_rtc.data.faces import laplacian_variance, load_faces, split_of
from osdface_rtc.data.pairs import PairDataset
from osdface_rtc.data.pool import build_lq_pool

from conftest import psnr, read_rgb


@pytest.fixture(scope="module")
def faces(utk_faces) -> np.ndarray:
    import cv2

    return np.stack([
        cv2.resize(read_rgb(p), (128, 128), interpolation=cv2.INTER_AREA) for p in utk_faces[:12]
    ])


def synthetic_face(size: int = 128) -> np.ndarray:
    """A smooth image with edges (no shared data needed)."""
    y, x = np.mgrid[:size, :size] / size
    img = np.stack([128 + 100 * np.sin(6 * x), 128 + 80 * np.cos(5 * y), 255 * x * y], -1)
    img[size // 3: size // 2, size // 4: 3 * size // 4] = 30
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [None, *LEVELS])
@pytest.mark.parametrize("size", [96, 127, 128])
def test_degrade_shape_dtype_and_determinism(level, size):
    hq = synthetic_face(size)
    a = degrade(hq, np.random.default_rng(7), level)
    b = degrade(hq, np.random.default_rng(7), level)
    assert a.shape == hq.shape and a.dtype == np.uint8
    assert np.array_equal(a, b), "same seed must give the same image (codec included)"
    assert not np.array_equal(a, hq)


def test_training_mix_varies_and_covers_codecs():
    rng = np.random.default_rng(0)
    params = [sample_params(rng) for _ in range(300)]
    codecs = {p.codec for p in params}
    assert codecs == {None, "vp8", "h264"}
    assert any(p.jpeg_quality for p in params)
    scales = np.array([p.scale for p in params])
    assert scales.min() >= 1.0 and scales.max() <= 8.0 and scales.max() > 5.0
    hq = synthetic_face()
    outs = [degrade(hq, np.random.default_rng(s)) for s in range(3)]
    assert not np.array_equal(outs[0], outs[1])


def test_levels_are_ordered_on_real_faces(faces):
    scores = {
        lv: np.mean([psnr(degrade(f, np.random.default_rng(i), lv), f) for i, f in enumerate(faces)])
        for lv in LEVELS
    }
    assert scores["mild"] > scores["medium"] + 2 > scores["severe"] + 4, scores
    assert scores["mild"] < 40, "mild must still damage the face"


def test_degrade_level_is_the_fixed_eval_input(faces):
    """Every caller (eval, the trainer's validation, the pack) gets the same input per level."""
    a = degrade_level(faces[:3], "medium", seed=5)
    assert np.array_equal(a, degrade_level(faces[:3], "medium", seed=5))
    rng = np.random.default_rng([5, LEVELS.index("medium"), 1])
    assert np.array_equal(a[1], degrade(faces[1], rng, "medium"))


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_codec_really_encodes(codec, faces):
    face = faces[0]
    stats: dict = {}
    out = codec_roundtrip(face, codec, quantizer=30, rng=np.random.default_rng(0), stats=stats)
    assert out.shape == face.shape and out.dtype == np.uint8
    assert len(stats["packet_bytes"]) == 3 and all(n > 0 for n in stats["packet_bytes"])
    assert not np.array_equal(out, face)
    assert psnr(out, face) > 28, "a moderate quantizer keeps the face recognisable"
    high_q = 60 if codec == "vp8" else 48
    low = codec_roundtrip(face, codec, quantizer=high_q, rng=np.random.default_rng(0), stats=stats)
    assert psnr(low, face) < psnr(out, face) - 3, "coarse quantizer (low bitrate) must cost PSNR"
    assert sum(stats["packet_bytes"]) < 0.5 * face.shape[0] * face.shape[1]


def test_codec_path_differs_from_no_codec():
    hq = synthetic_face()
    with_codec = apply_params(hq, PRESETS["medium"], np.random.default_rng(1))
    without = apply_params(hq, replace(PRESETS["medium"], codec=None), np.random.default_rng(1))
    assert not np.array_equal(with_codec, without)


def test_bad_input_rejected():
    with pytest.raises(ValueError):
        degrade(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError):
        degrade(synthetic_face(), np.random.default_rng(0), level="extreme")


def test_split_is_stable_and_disjoint(utk_dir):
    names = sorted(p.name for p in utk_dir.glob("*.jpg"))
    splits = [split_of(n) for n in names]
    assert splits == [split_of(n) for n in names]
    assert split_of("/some/where/" + names[0]) == splits[0], "only the base name counts"
    val = {n for n, s in zip(names, splits) if s == "val"}
    train = {n for n, s in zip(names, splits) if s == "train"}
    assert val and train and not (val & train) and len(val) + len(train) == len(names)
    assert 0.03 < len(val) / len(names) < 0.07


def test_load_faces(utk_dir, tmp_path):
    faces = load_faces("val", 64, limit=5, data_dir=utk_dir, cache_dir=tmp_path)
    assert faces.shape == (5, 64, 64, 3) and faces.dtype == np.uint8
    again = load_faces("val", 64, limit=5, data_dir=utk_dir, cache_dir=tmp_path)
    assert np.array_equal(faces, again) and list(tmp_path.glob("utkface_val_64_*.npy"))
    assert laplacian_variance(faces).shape == (5,)
    with pytest.raises(FileNotFoundError):
        load_faces("val", 64, data_dir=tmp_path / "missing")


def test_lq_pool_and_pair_dataset(tmp_path):
    hq = np.stack([synthetic_face(64)] * 5)
    pool = build_lq_pool(hq, n_variants=2, seed=3, workers=1, cache_dir=tmp_path, chunk=2,
                         progress=False)
    assert pool.shape == (2, *hq.shape) and pool.dtype == np.uint8
    assert not np.array_equal(pool[0], pool[1])
    assert np.array_equal(pool[1, 4], degrade(hq[4], np.random.default_rng([3, 1, 4])))
    cached = build_lq_pool(hq, n_variants=2, seed=3, workers=1, cache_dir=tmp_path, chunk=2,
                           progress=False)
    assert np.array_equal(pool, cached) and len(list(tmp_path.glob("lq_pool_*.npy"))) == 1

    ds = PairDataset(hq, pool=pool, flip=False)
    lq0, hq0 = ds[0]
    ds.set_epoch(1)
    lq1, _ = ds[0]
    assert np.array_equal(lq0, pool[0, 0]) and np.array_equal(lq1, pool[1, 0])
    assert np.array_equal(hq0, hq[0])

    # repeat: each face twice per epoch, each time another variant (and every epoch moves on)
    twice = PairDataset(hq, pool=pool, flip=False, repeat=2)
    assert len(twice) == 2 * len(hq)
    for epoch in (0, 1):
        twice.set_epoch(epoch)
        seen = [twice[3][0], twice[len(hq) + 3][0]]
        assert {int(np.argmax([np.array_equal(s, v) for v in pool[:, 3]])) for s in seen} == {0, 1}
        assert np.array_equal(twice[len(hq) + 3][1], hq[3])
    with pytest.raises(ValueError, match="repeat"):
        PairDataset(hq, pool=pool, repeat=0)

    inline = PairDataset(hq, seed=1)
    a, b = inline[2], inline[2]
    assert len(inline) == 5 and np.array_equal(a[0], b[0]) and a[0].shape == (64, 64, 3)
