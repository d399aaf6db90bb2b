"""The live-path evaluation: whole frames, real codecs, the full pipeline (stills and clips)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from osdface_rtc.cli import main
from osdface_rtc.data.livepairs import read_photo
from osdface_rtc.data.scenes import SceneConfig
from osdface_rtc.evaluate.diagnose import ROWS, diagnose
from osdface_rtc.evaluate.live import LiveEvalConfig, eval_stills, eval_video
from osdface_rtc.evaluate.live_report import gains
from osdface_rtc.evaluate.runner import Method
from osdface_rtc.pipeline.temporal import TemporalConfig
from osdface_rtc.restore import ClassicalRestorer, IdentityRestorer


class Flatten:
    """A restorer that blurs every face: it must lose PSNR and identity in the frame."""

    name = "blur"
    face_size = 128

    def restore(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        return np.stack([cv2.GaussianBlur(f, (0, 0), 4.0) for f in faces])


def methods(*extra: Method) -> list[Method]:
    return [Method("input", None), Method("identity", IdentityRestorer(face_size=128)), *extra]


SMALL = LiveEvalConfig(conditions=("x3-vp8-120k",), scored_frames=2, grid_faces=2,
                       scene=SceneConfig(frames=8), progress=False, temporal=TemporalConfig(weight=0.0))


def test_stills_identity_equals_input_and_damage_is_scored(utk_faces):
    photos = [read_photo(p) for p in utk_faces[:3]]
    res = eval_stills(photos, methods(Method("model", Flatten())), SMALL)
    rows = {r.method: r for r in res.rows}
    assert set(rows) == {"input", "identity", "model"}
    assert rows["input"].n == 6  # 3 faces x 2 scored frames
    assert rows["identity"].psnr == pytest.approx(rows["input"].psnr, abs=1e-9)  # residual paste is exact
    assert 24 < rows["input"].psnr < 40  # a call's damage, measured against the clean frame
    assert rows["model"].psnr < rows["input"].psnr - 0.5  # blurring the face is caught
    g = gains(res.rows)[0]
    assert g["vs_input"] == pytest.approx(rows["model"].psnr - rows["input"].psnr)
    crops = res.samples["x3-vp8-120k"]
    assert len(crops["clean"]) == 2 and crops["model"][0].shape == (160, 160, 3)


def test_clip_temporal_error_and_curves(clip):
    cfg = LiveEvalConfig(conditions=("x3-vp8-120k",), max_frames=12, progress=False,
                         temporal=TemporalConfig(weight=0.0))
    res = eval_video(clip, methods(Method("classical", ClassicalRestorer(face_size=128))), cfg)
    rows = {r.method: r for r in res.rows}
    assert rows["input"].n == 12
    assert rows["identity"].temporal == pytest.approx(rows["input"].temporal)
    assert rows["identity"].psnr == pytest.approx(rows["input"].psnr, abs=1e-9)
    assert rows["input"].temporal > 0.5  # the codec's own flicker against the clean clip
    assert rows["classical"].psnr != rows["input"].psnr
    curve = res.curves[(clip.stem, "x3-vp8-120k")]
    assert len(curve["input"]) == 12 and len(curve["classical"]) == 12


def test_temporal_filter_runs_per_method_like_a_stream(clip, utk_faces):
    """With the pipeline's filter (the default), even an identity restorer's faces are
    stabilised: the codec's frame-to-frame flicker in the face drops; stills restore warm-up
    frames so the scored ones are filtered too."""
    cfg = LiveEvalConfig(conditions=("x3-vp8-120k",), max_frames=12, progress=False)
    assert cfg.temporal.weight > 0
    rows = {r.method: r for r in eval_video(clip, methods(), cfg).rows}
    assert rows["identity"].temporal < rows["input"].temporal - 0.01, rows
    assert abs(rows["identity"].psnr - rows["input"].psnr) < 0.3, rows
    photos = [read_photo(p) for p in utk_faces[:2]]
    on = LiveEvalConfig(conditions=("x3-vp8-120k",), scored_frames=2, scene=SceneConfig(frames=8), progress=False)
    rows = {r.method: r for r in eval_stills(photos, methods(), on).rows}
    assert rows["identity"].psnr != rows["input"].psnr  # the first scored frame has a filter state


def test_diagnose_rows_for_an_identity_restorer(utk_faces):
    photos = [read_photo(p) for p in utk_faces[:3]]
    out = diagnose(IdentityRestorer(face_size=128), photos, "x3-vp8-120k")
    assert list(out) == list(ROWS)
    for row, groups in out.items():
        values = groups["small"] + groups["large"]
        assert values, row
        assert np.allclose(values, 0.0, atol=1e-9), (row, values)  # no change, no gain


def test_eval_live_cli(tmp_path, clip, capsys):
    out = tmp_path / "live"
    rc = main(["eval", "--live", "--video", str(clip), "--limit", "2", "--max-frames", "6",
               "--conditions", "x4-h264-80k", "--model", "identity", "--no-identity",
               "--no-progress", "--temporal", "0", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "eval_live.json").read_text())
    sources = {r["source"] for r in doc["rows"]}
    assert sources == {"stills", clip.stem}
    assert {r["method"] for r in doc["rows"]} == {"input", "classical", "identity"}
    psnr = {(r["source"], r["method"]): r["psnr"] for r in doc["rows"]}
    for src in sources:  # --temporal 0: the identity restorer leaves every frame as it was
        assert psnr[(src, "identity")] == pytest.approx(psnr[(src, "input")], abs=1e-9)
    assert (out / "grid.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    assert "x4-h264-80k" in capsys.readouterr().out


def test_eval_live_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--live", "--conditions", "x3-av1-100k"])
    assert e.value.code == 2
    assert "call condition" in capsys.readouterr().err
    rc = main(["eval", "--video", str(tmp_path / "missing.mp4"), "--model", "identity"])
    assert rc == 2 and "no such clip" in capsys.readouterr().out
    rc = main(["eval", "--live", "--temporal", "1.5", "--model", "identity"])
    assert rc == 2 and "--temporal" in capsys.readouterr().out
