"""`osdface-rtc eval` end to end, and its metrics."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from osdface_rtc.cli import main
from osdface_rtc.data.degrade import degrade_level
from osdface_rtc.data.faces import load_faces
from osdface_rtc.evaluate.identity import load_identity
from osdface_rtc.evaluate.metrics import PSNR_CAP, face_mask, mean_scores, psnr, ssim
from osdface_rtc.evaluate.report import COLUMNS
from osdface_rtc.evaluate.speed import graph_variants, measure_speed
from osdface_rtc.paths import default_model_dir
from osdface_rtc.restore import ClassicalRestorer, IdentityRestorer

ROW_KEYS = {"level", "method", "restorer", "steps", "n", "psnr", "ssim", "id_dist", "id_match",
            "ms_per_face"}


def random_face(seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ metrics

def test_face_mask_shape_and_coverage():
    m = face_mask(128)
    assert m.shape == (128, 128) and m.dtype == bool
    assert 0.45 < m.mean() < 0.6
    assert m[64, 64] and m[68, 20] and not m[0, 0] and not m[127, 0] and not m[0, 127]
    assert np.array_equal(m, m[:, ::-1]), "symmetric left/right"


def test_psnr_and_ssim_sanity():
    a = random_face(0)
    assert psnr(a, a) == PSNR_CAP and psnr(a, a, face_mask(64)) == PSNR_CAP
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, a, face_mask(64)) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert 25 < psnr(a, b) < 30
    noisy = random_face(1)
    assert ssim(a, noisy) < 0.2 and psnr(a, noisy) < 10
    # changes outside the face region do not count
    c = a.copy()
    c[~face_mask(64)] = 0
    assert psnr(a, c, face_mask(64)) == PSNR_CAP and psnr(a, c) < 20


def test_mean_scores_stay_finite_and_average_per_face():
    a, b = random_face(0), np.clip(random_face(0).astype(int) + 10, 0, 255).astype(np.uint8)
    p, s = mean_scores(np.stack([a, b]), np.stack([a, a]))
    assert p == pytest.approx((PSNR_CAP + psnr(b, a)) / 2)
    assert s == pytest.approx((1.0 + ssim(b, a)) / 2)
    with pytest.raises(ValueError):
        mean_scores(a[None], np.stack([a, a]))


def test_speed_rows():
    rows = measure_speed([("identity", IdentityRestorer(64), None, "eager")],
                         np.stack([random_face(i) for i in range(3)]), repeats=2)
    assert [r.batch for r in rows] == [1, 8]
    assert all(r.ms_per_face >= 0 and r.device == "cpu" for r in rows)


def test_graph_variants_switch():
    class FakeCudaModel(IdentityRestorer):
        device = torch.device("cuda")
        use_graph = True

    loaded = FakeCudaModel(64)
    variants = graph_variants(loaded)
    assert [(a, r.use_graph) for a, r in variants] == [("eager", False), ("cuda_graph", True)]
    cpu = IdentityRestorer(64)
    assert graph_variants(cpu) == [("eager", cpu)]


# ------------------------------------------------------------------------------- end to end

def run_eval_cli(tmp_path, utk_dir, *extra: str) -> dict:
    out = tmp_path / "eval"
    rc = main(["eval", "--limit", "4", "--levels", "mild,severe", "--grid-faces", "2",
               "--data-dir", str(utk_dir), "--out", str(out), "--no-progress", *extra])
    assert rc == 0
    doc = json.loads((out / "eval.json").read_text())
    doc["_table"] = (out / "table.txt").read_text()
    doc["_grid"] = cv2.imread(str(out / "grid.png"))
    return doc


def test_eval_end_to_end(tmp_path, utk_dir, capsys):
    doc = run_eval_cli(tmp_path, utk_dir, "--model", "identity", "--speed")
    rows = doc["results"]
    assert [(r["level"], r["method"]) for r in rows] == [
        (lv, m) for lv in ("mild", "severe") for m in ("input", "classical", "identity")
    ]
    assert all(set(r) == ROW_KEYS and r["n"] == 4 for r in rows)
    by = {(r["level"], r["method"]): r for r in rows}
    # the numbers are the face-region scores of the fixed inputs and of the classical restorer
    hq = load_faces("val", 128, 4, data_dir=utk_dir)
    for lv in ("mild", "severe"):
        lq = degrade_level(hq, lv, seed=0)
        for method, out in (("input", lq), ("classical", ClassicalRestorer(face_size=128).restore(lq))):
            p, s = mean_scores(out, hq, face_mask(128))
            assert (by[lv, method]["psnr"], by[lv, method]["ssim"]) == pytest.approx((p, s)), (lv, method)
    # the identity restorer returns its input: same scores as the degraded input
    assert by["mild", "identity"]["psnr"] == pytest.approx(by["mild", "input"]["psnr"])
    assert by["mild", "input"]["psnr"] > by["severe", "input"]["psnr"]
    assert 0 < by["severe", "input"]["ssim"] < by["mild", "input"]["ssim"] < 1
    assert by["mild", "input"]["ms_per_face"] is None and by["mild", "classical"]["ms_per_face"] > 0
    if load_identity() is not None:
        assert 0 < by["mild", "input"]["id_dist"] < by["severe", "input"]["id_dist"]
    assert {(s["method"], s["batch"]) for s in doc["speed"]} == {
        (m, b) for m in ("classical", "identity") for b in (1, 8)
    }
    header = doc["_table"].splitlines()[0]
    assert all(col in header for col, _, _ in COLUMNS)
    assert doc["face_region"]["fraction_of_crop"] > 0.4
    # rows: header + input / classical / identity / ground truth; columns: 2 levels x 2 faces
    grid = doc["_grid"]
    assert grid is not None and grid.shape[0] == 20 + 4 * 128 and grid.shape[1] > 4 * 128
    assert "eval.json" in capsys.readouterr().out


def test_eval_without_identity_says_na(tmp_path, utk_dir):
    doc = run_eval_cli(tmp_path, utk_dir, "--model", "classical", "--baseline", "none",
                       "--levels", "medium", "--no-identity")
    assert [r["method"] for r in doc["results"]] == ["input", "classical"]
    assert all(r["id_dist"] is None for r in doc["results"])
    assert "n/a" in doc["_table"] and "pip install dlib-bin" in doc["_table"]


def test_eval_clear_errors(tmp_path, utk_dir, capsys):
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().out
    assert main(["eval", "--model", "classical", "--data-dir", str(tmp_path / "no-faces"),
                 "--no-identity", "--out", str(tmp_path)]) == 2
    assert "face folder" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not (default_model_dir() / "config.json").exists(),
                    reason=f"no shipped model at {default_model_dir()}")
def test_eval_shipped_model(tmp_path, utk_dir):
    doc = run_eval_cli(tmp_path, utk_dir, "--steps", "1,2", "--no-identity")
    methods = {r["method"] for r in doc["results"]}
    assert methods == {"input", "classical", "model-s1", "model-s2"}
    by = {(r["level"], r["method"]): r for r in doc["results"]}
    for lv in ("mild", "severe"):  # on these 4 faces: SSIM +0.004 / +0.08, PSNR -0.6 / +1.6 dB
        assert by[lv, "model-s1"]["steps"] == 1
        assert by[lv, "model-s1"]["ssim"] > by[lv, "input"]["ssim"], lv
    assert by["severe", "model-s1"]["psnr"] > by["severe", "input"]["psnr"] + 1.0
