"""The temporal filter of restored crops (pipeline/temporal.py): exact mixing where the face is
still, none where it moved, per track; through FaceEnhancer.process on a real clip it removes a
restorer's frame-to-frame flicker; `enhance` starts every photo and video fresh."""
from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.pipeline.temporal import CropFilter, TemporalConfig
from osdface_rtc.pipeline.types import AlignedFaces
from osdface_rtc.restore.classical import IdentityRestorer

S = 64


def faces(crops: list[np.ndarray], ids: list[int]) -> AlignedFaces:
    return AlignedFaces(np.stack(crops).astype(np.uint8), np.zeros((len(ids), 2, 3)), list(ids))


def test_still_faces_are_mixed_moving_ones_are_not():
    rng = np.random.default_rng(0)
    inp = rng.integers(60, 200, (S, S, 3)).astype(np.uint8)
    r1 = np.clip(inp.astype(int) + 10, 0, 255).astype(np.uint8)
    r2 = np.clip(inp.astype(int) - 10, 0, 255).astype(np.uint8)
    f = CropFilter(TemporalConfig(weight=0.3))
    first = f.apply(faces([inp], [1]), faces([r1], [1]))
    np.testing.assert_array_equal(first.crops[0], r1)  # nothing to mix with yet
    second = f.apply(faces([inp], [1]), faces([r2], [1]))  # same input: w = weight everywhere
    want = 0.7 * r2.astype(float) + 0.3 * r1
    assert np.abs(second.crops[0].astype(float) - want).max() <= 0.5 + 1e-6
    assert second.track_ids == [1]
    # the input changed a lot in the left half (a hand, an opened mouth): the new crop is used
    # as it is there, and still mixed where nothing moved
    other = inp.copy()
    other[:, : S // 2] = np.clip(inp[:, : S // 2].astype(int) + 60, 0, 255)
    moved = np.clip(other.astype(int) + 5, 0, 255).astype(np.uint8)
    third = f.apply(faces([other], [1]), faces([moved], [1]))
    diff = np.abs(third.crops[0].astype(int) - moved.astype(int))
    assert diff[:, : S // 2 - 4].max() <= 1, diff[:, : S // 2 - 4].max()
    assert diff[:, S // 2 + 4:].min() >= 2  # 0.3 * (r1/r2 history - moved) there


def test_tracks_are_separate_and_lost_faces_are_forgotten():
    a_in, b_in = np.full((S, S, 3), 100, np.uint8), np.full((S, S, 3), 150, np.uint8)
    f = CropFilter(TemporalConfig(weight=0.5))
    f.apply(faces([a_in, b_in], [1, 2]), faces([a_in + 20, b_in + 20], [1, 2]))
    out = f.apply(faces([b_in, a_in], [2, 1]), faces([b_in, a_in], [2, 1]))  # rows swapped
    assert out.crops[0].mean() == pytest.approx(160, abs=0.6)  # track 2: 0.5 * 150 + 0.5 * 170
    assert out.crops[1].mean() == pytest.approx(110, abs=0.6)  # track 1
    f.apply(faces([a_in], [1]), faces([a_in], [1]))  # track 2 not in this frame: forgotten
    back = f.apply(faces([b_in], [2]), faces([b_in + 40], [2]))
    np.testing.assert_array_equal(back.crops[0], b_in + 40)
    untracked = f.apply(faces([a_in], [-1]), faces([a_in + 30], [-1]))  # no id: never mixed
    untracked = f.apply(faces([a_in], [-1]), faces([a_in], [-1]))
    np.testing.assert_array_equal(untracked.crops[0], a_in)


def test_off_bad_settings_and_mismatched_rows():
    crop = np.full((S, S, 3), 90, np.uint8)
    f = CropFilter(TemporalConfig(weight=0.0))
    r = faces([crop + 9], [1])
    f.apply(faces([crop], [1]), r)
    assert f.apply(faces([crop], [1]), r) is r  # off: the restorer's crops unchanged
    for bad in ({"weight": 1.0}, {"weight": -0.1}, {"motion": 0.0}, {"blur": -1.0}):
        with pytest.raises(ValueError):
            TemporalConfig(**bad)
    with pytest.raises(ValueError, match="track_ids"):
        CropFilter().apply(faces([crop], [1]), faces([crop], [2]))


class Flicker(IdentityRestorer):
    """Identity plus fresh noise on every call: a restorer whose output shimmers."""

    name = "flicker"

    def __init__(self, face_size: int = 128):
        super().__init__(face_size)
        self.rng = np.random.default_rng(0)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0, 6, crops.shape)
        return np.clip(crops + noise, 0, 255).astype(np.uint8)


def frame_changes(frames: list[np.ndarray], boxes: list[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change of the output inside the face boxes."""
    vals = []
    for k in range(1, len(frames)):
        x0, y0, x1, y1 = np.round(boxes[k]).astype(int)
        a, b = frames[k][y0:y1, x0:x1].astype(float), frames[k - 1][y0:y1, x0:x1].astype(float)
        vals.append(np.abs(a - b).mean())
    return float(np.mean(vals))


def test_process_on_a_real_clip_removes_restorer_flicker(clip):
    from osdface_rtc.io.media import read_video

    frames = list(islice(read_video(clip), 20))
    runs = {}
    for weight in (0.0, 0.3, 0.6):
        enh = FaceEnhancer(Flicker(), temporal=TemporalConfig(weight=weight))
        outs, boxes = [], []
        for k, fr in enumerate(frames):
            outs.append(enh.process(fr, k / 30))
            assert len(enh.last_faces) == 1
            boxes.append(enh.last_faces[0].box)
        enh.close()
        runs[weight] = frame_changes(outs, boxes)
    base = frame_changes(frames, boxes)
    # off: the noise shows; on: less of it, more with a larger weight; never below the clip's own motion
    assert runs[0.0] > base + 1.0, runs
    assert runs[0.6] < runs[0.3] < runs[0.0] - 0.3, (runs, base)


def test_enhance_starts_every_photo_fresh(tmp_path, utk_faces):
    """Two photos of a folder with the face at nearly the same place: the second is not
    filtered with the first (an identity restorer leaves it exactly as it was)."""
    import cv2

    from osdface_rtc.commands.enhance_jobs import enhance_image
    from osdface_rtc.io.media import read_image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    img = cv2.resize(read_image(utk_faces[0]), (256, 256), interpolation=cv2.INTER_AREA)
    other = np.clip(img.astype(int) + 25, 0, 255).astype(np.uint8)  # same face, brighter
    cv2.imwrite(str(a), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(b), cv2.cvtColor(other, cv2.COLOR_RGB2BGR))
    enh = FaceEnhancer(IdentityRestorer(), temporal=TemporalConfig(weight=0.5, motion=40.0))
    enhance_image(enh, a, tmp_path / "a_out.png")
    stats = enhance_image(enh, b, tmp_path / "b_out.png")
    assert stats.faces == 1
    np.testing.assert_array_equal(read_image(tmp_path / "b_out.png"), other)
    # the same two frames as one stream *are* filtered (so the check above can fail)
    enh.reset()
    enh.process(img)
    assert np.abs(enh.process(other).astype(int) - other).max() > 3
