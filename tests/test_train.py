"""Training: losses, a tiny staged run on real faces (loss goes down), resume, outputs, CLI config."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import torch

from osdface_rtc.commands.train import build_config, register
from osdface_rtc.evaluate.metrics import face_mask, mean_scores
from osdface_rtc.model.network import OSDFaceNet, load_network
from osdface_rtc.model.restorer import to_tensor
from osdface_rtc.train.config import TrainConfig
from osdface_rtc.train.inputs import build_data, clean_targets
from osdface_rtc.train.loop import Trainer, retarget
from osdface_rtc.train.losses import kmeans, laplacian_pyramid_l1
from osdface_rtc.train.trainer import train

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


def test_ema_keeps_the_decay_schedule(tmp_path):
    """diffusers' EMAModel with decay min(ema_decay, (1 + step) / (10 + step)) per stage step."""
    tr = Trainer(tiny_cfg(tmp_path, ema_decay=0.6))
    expect = [p.detach().clone() for p in tr.net.parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in tr.net.parameters():
                p.add_(torch.randn_like(p))
        tr.step = step
        tr.update_ema()
        d = min(0.6, (1 + step) / (10 + step))
        expect = [e.lerp(p.detach(), 1 - d) for e, p in zip(expect, tr.net.parameters())]
    shipped = tr.ema_model()
    assert not shipped.training and not any(p.requires_grad for p in shipped.parameters())
    for e, p in zip(expect, shipped.parameters()):
        torch.testing.assert_close(p, e)
    assert all(torch.equal(a, b) for a, b in zip(shipped.buffers(), tr.net.buffers()))


def test_resume_reads_an_old_checkpoint(tmp_path):
    """A ckpt.pt written before EMAModel (``ema`` = the EMA model's state dict) still resumes."""
    tr = Trainer(tiny_cfg(tmp_path))
    with torch.no_grad():
        for p in tr.net.parameters():
            p.add_(0.1)
    tr.step = 3
    tr.update_ema()
    st = tr.state()
    assert set(st["ema"]) >= {"shadow_params", "decay"}
    old_ema = tr.ema_model().state_dict()
    torch.save(dict(st, ema=old_ema), tmp_path / "run" / "ckpt.pt")
    back = Trainer(tiny_cfg(tmp_path), resume=True)
    assert back.step == 3
    for k, v in back.ema_model().state_dict().items():
        torch.testing.assert_close(v, old_ema[k])


def test_retarget_keeps_the_weights():
    net = OSDFaceNet(**TrainConfig.preset("tiny").model)  # 32 px, VRE grid 4 (8 px cells)
    big = retarget(net, 48)
    assert (big.config.face_size, big.config.vre_grid) == (48, 6)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), big.state_dict().values()))
    assert big(torch.zeros(1, 3, 48, 48)).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="multiple"):
        retarget(net, 36)


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
    from osdface_rtc.data.pairs import ConcatPairs

    cfg = tiny_cfg(tmp_path, live_photos=4, live_clips=False, val_count=2, data=str(utk_dir))
    data = build_data(cfg, *tiny_faces)
    assert isinstance(data.pairs, ConcatPairs) and len(data.pairs) > len(data.hq)
    live = data.pairs.parts[-1]
    assert len(live) >= 4 and live.lq.shape[1:] == (32, 32, 3)
    assert {"live_x2-vp8-300k", "live_x3-vp8-120k", "live_x4-vp8-80k"} <= set(data.val)
    vals = Trainer(cfg).validate(data)
    assert set(vals) == {f"psnr_{lv}" for lv in data.val} and "psnr_live_x3-vp8-120k" in vals
    # a fresh model is the identity: validation scores it exactly as the eval scores the input
    mask = face_mask(32)
    for lv, (lq, hq) in data.val.items():
        assert vals[f"psnr_{lv}"] == pytest.approx(mean_scores(lq, hq, mask)[0], abs=1e-9), lv


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
    st = torch.load(run / "ckpt.pt", weights_only=True)
    assert st["slim"] and "opt" not in st and (st["stage"], st["step"]) == ("main", 6)
    assert all(v.dtype == torch.bfloat16 for v in st["ema"].values() if v.is_floating_point())
    assert (run / "model" / "diffusion_pytorch_model.safetensors").is_file()
