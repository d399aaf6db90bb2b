"""Training: losses, a tiny staged run on real faces (loss goes down), resume, outputs, CLI config."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import torch

from osdface_rtc.commands.train import build_config, register
from osdface_rtc.model.network import OSDFaceNet, load_network
from osdface_rtc.model.restorer import to_tensor
from osdface_rtc.train.trainer import (
    TrainConfig,
    Trainer,
    build_data,
    clean_targets,
    kmeans,
    laplacian_pyramid_l1,
    train,
)

from conftest import read_rgb


@pytest.fixture(scope="module")
def tiny_faces(utk_faces) -> tuple[np.ndarray, np.ndarray]:
    """48 train + 4 val real faces at the tiny preset's size (32 px)."""
    size = TrainConfig.preset("tiny").model["face_size"]
    faces = np.stack([cv2.resize(read_rgb(p), (size, size), interpolation=cv2.INTER_AREA) for p in utk_faces])
    return faces[:48], faces[48:52]


def tiny_cfg(tmp_path, **over) -> TrainConfig:
    return TrainConfig.preset("tiny", out=str(tmp_path / "run"), device="cpu", **over)


def train_l1(net: OSDFaceNet, data) -> float:
    """Mean L1 of the restored first LQ variant against the HQ targets."""
    data.pairs.set_epoch(0)
    pairs = [data.pairs[i] for i in range(len(data.pairs))]
    lq = to_tensor(np.stack([a for a, _ in pairs]), torch.device("cpu"), torch.float32)
    hq = to_tensor(np.stack([h for _, h in pairs]), torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        return float((net.eval()(lq) - hq).abs().mean())


def test_laplacian_loss_and_kmeans():
    x = torch.rand(2, 3, 32, 32)
    assert float(laplacian_pyramid_l1(x, x)) == 0.0
    assert float(laplacian_pyramid_l1(x, x.flip(-1))) > 0
    pts = torch.cat([torch.randn(50, 4) * 0.01, torch.randn(50, 4) * 0.01 + 5])
    c = kmeans(pts, 2)
    assert c.shape == (2, 4)
    assert sorted(float(v) for v in c.mean(1).round()) == [0.0, 5.0]


def test_tiny_training_lowers_loss_and_writes_outputs(tmp_path, tiny_faces):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path)
    data = build_data(cfg, *tiny_faces)
    before = train_l1(OSDFaceNet(**cfg.model), data)  # fresh model = identity
    out = train(cfg, data=data)
    after = train_l1(load_network(out), data)
    assert after < before * 0.97, (before, after)
    run = tmp_path / "run"
    for f in ("ckpt.pt", "loss_log.jsonl", "loss.png", "train_config.json", "model/config.json",
              "model/diffusion_pytorch_model.safetensors", "model/README.md"):
        assert (run / f).is_file(), f
    rows = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"vae", "vre", "main"}
    assert any("psnr_medium" in r for r in rows) and any("d_loss" in r for r in rows)
    card = (run / "model/README.md").read_text()
    assert "non-commercial" in card and "| model |" in card


def test_resume_continues_from_checkpoint(tmp_path, tiny_faces):
    cfg = tiny_cfg(tmp_path, steps={"vae": 2, "vre": 2, "main": 10})
    data = build_data(cfg, *tiny_faces)
    Trainer(cfg).run(data)
    cfg.steps = {**cfg.steps, "main": 14}
    tr = Trainer(cfg, resume=True)
    assert (tr.stage, tr.step) == ("main", 10)
    tr.run(data)
    assert tr.step == 14
    with pytest.raises(FileNotFoundError):
        Trainer(tiny_cfg(tmp_path / "other"), resume=True)


def test_clean_targets_and_init(tmp_path, tiny_faces):
    faces = tiny_faces[0][:6]
    np.testing.assert_array_equal(clean_targets(faces, "identity", "cpu"), faces)
    net = OSDFaceNet(**TrainConfig.preset("tiny").model)
    net.save_pretrained(tmp_path / "m")
    cleaned = clean_targets(faces, str(tmp_path / "m"), "cpu")
    np.testing.assert_array_equal(cleaned, faces)  # a fresh model is the identity
    cfg = tiny_cfg(tmp_path, init=str(tmp_path / "m"), clean_targets_with=str(tmp_path / "m"),
                   steps={"main": 3})
    tr = Trainer(cfg)
    assert tr.stage == "main"
    tr.run(build_data(cfg, *tiny_faces))
    assert tr.step == 3


def test_cli_config_overrides():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--preset", "tiny", "--out", "x", "--steps-main", "7",
                              "--batch-size", "2", "--set", "disc_start=3", "--no-progress"])
    cfg = build_config(args)
    assert (cfg.out, cfg.batch_size, cfg.disc_start, cfg.steps["main"], cfg.progress) == ("x", 2, 3, 7, False)
    with pytest.raises(ValueError, match="nope"):
        build_config(parser.parse_args(["train", "--set", "nope=1"]))


def test_live_pairs_join_training_and_validation(tmp_path, tiny_faces, utk_dir):
    """With live_photos the training set gains live-path crops and the log live-path val PSNR."""
    from osdface_rtc.train.data import ConcatPairs

    cfg = tiny_cfg(tmp_path, live_photos=4, live_clips=False, val_count=2, data=str(utk_dir))
    data = build_data(cfg, *tiny_faces)
    assert isinstance(data.pairs, ConcatPairs) and len(data.pairs) > len(data.hq)
    live = data.pairs.parts[-1]
    assert len(live) >= 4 and live.lq.shape[1:] == (32, 32, 3)
    assert {"live_x2-vp8-300k", "live_x3-vp8-120k", "live_x4-vp8-80k"} <= set(data.val)
    vals = Trainer(cfg).validate(data)
    assert all(np.isfinite(v) for v in vals.values()) and "psnr_live_x3-vp8-120k" in vals


def test_gpu_recipe_pack_slim_checkpoints_and_calls(tmp_path, tiny_faces):
    """The GPU recipe on CPU: a pack tar, a call stopped by --for-minutes, a slim resume --
    without PyAV or mediapipe (the GPU machine has neither)."""
    import subprocess
    import sys

    from osdface_rtc.train.pack import read_pack, write_pack

    hq = tiny_faces[0]
    lq = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in hq])
    pack = tmp_path / "pairs.tar"
    n = write_pack(pack, (lq, hq), {"live_x3-vp8-120k": (lq[:4], hq[:4])}, max_mb=0.06)
    assert 5 < n < len(hq)  # the budget cut the train pairs
    (tlq, thq), val = read_pack(pack)
    assert tlq.shape == (n, 32, 32, 3) and list(val) == ["live_x3-vp8-120k"]
    run = tmp_path / "run"
    code = f"""
import sys
sys.modules["av"] = None; sys.modules["mediapipe"] = None   # importing either now fails
from osdface_rtc.cli import main
args = ["train", "--preset", "tiny", "--pack", {str(pack)!r}, "--out", {str(run)!r}, "--device", "cpu",
        "--set", "slim_ckpt=true", "--set", 'steps={{"vae": 400, "vre": 4, "main": 6}}']
assert main(args + ["--for-minutes", "0.05"]) == 0          # stops early, in stage vae
assert main(args + ["--resume", "--steps-vae", "3"]) == 0   # resumes and finishes
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time is up at vae" in proc.stderr and "resumed slim" in proc.stderr
    st = torch.load(run / "ckpt.pt", weights_only=False)
    assert st["slim"] and "opt" not in st and (st["stage"], st["step"]) == ("main", 6)
    assert all(v.dtype == torch.bfloat16 for v in st["ema"].values() if v.is_floating_point())
    assert (run / "model" / "diffusion_pytorch_model.safetensors").is_file()
