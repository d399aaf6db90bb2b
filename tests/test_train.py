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
