"""The one-step restorer model: formulation, network, save/load, restorer contract, shipped weights."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from osdface_rtc.model.formulation import (
    DEFAULT_TIMESTEP,
    alpha_bar,
    iterative_denoise,
    iterative_timesteps,
    make_scheduler,
    x0_from_eps,
)
from osdface_rtc.model.network import WEIGHTS_NAME, OSDFaceNet, load_network
from osdface_rtc.model.restorer import ModelRestorer, load_model_restorer
from osdface_rtc.restore import RestorerError
from osdface_rtc.restorers import load_restorer

#: A tiny net for these tests (32 px faces: milliseconds per forward on CPU).
TINY_MODEL = dict(face_size=32, latent_channels=4, vae_channels=(8, 16), unet_channels=(16, 32),
                  attention_head_dim=8, prompt_dim=16, vre_channels=8, vre_grid=4, codebook_size=16,
                  code_dim=8, norm_num_groups=4)

from conftest import psnr, read_rgb


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are overhead-bound; 2 threads stall badly when the shared CPU is busy."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def tiny_net(seed: int = 0) -> OSDFaceNet:
    """A small random model whose residual head is not zero (so outputs differ from inputs)."""
    torch.manual_seed(seed)
    net = OSDFaceNet(**TINY_MODEL).eval()
    with torch.no_grad():
        for m in [*net.skips, net.residual_out]:
            m.weight.normal_(0, 0.05)
        net.latent_scale.fill_(0.7)
    return net


@pytest.fixture(scope="module")
def net() -> OSDFaceNet:
    return tiny_net()


@pytest.fixture(scope="module")
def saved(net, tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    net.save_pretrained(d)
    return d


def batch(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- formulation ---------------------------------------------------------------------------

def test_alpha_bar_and_x0_match_float64_reference():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ref_abar = np.cumprod(1.0 - betas)[DEFAULT_TIMESTEP]
    a = alpha_bar(make_scheduler(), DEFAULT_TIMESTEP)
    assert a == pytest.approx(ref_abar, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ref = (z.numpy() - np.sqrt(1 - ref_abar) * eps.numpy()) / np.sqrt(ref_abar)
    np.testing.assert_allclose(x0_from_eps(z, eps, a).numpy(), ref, rtol=1e-5, atol=1e-6)
    out32 = x0_from_eps(z.float(), eps.float(), a).double().numpy()
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-5)


def test_iterative_timesteps_schedule():
    assert iterative_timesteps(399, 1) == [399]
    assert iterative_timesteps(399, 2) == [399, 200]
    assert iterative_timesteps(399, 4) == [399, 299, 200, 100]
    with pytest.raises(ValueError):
        iterative_timesteps(399, 0)


def test_iterative_denoise_one_step_is_the_formula():
    sched = make_scheduler()
    z = torch.randn(1, 4, 8, 8)
    eps_fn = lambda x, t: 0.3 * x + t / 1000.0  # noqa: E731
    one = iterative_denoise(z, eps_fn, sched, 399, 1)
    assert torch.equal(one, x0_from_eps(z, eps_fn(z, 399), alpha_bar(sched, 399)))
    assert not torch.equal(iterative_denoise(z, eps_fn, sched, 399, 2), one)


# --- network -------------------------------------------------------------------------------

def test_forward_shapes_and_determinism(net):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        a, b = net(x), net(x)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    z, skips = net.encode(x)
    assert z.shape == (3, TINY_MODEL["latent_channels"], 16, 16)
    assert net.vre(x).shape == (3, TINY_MODEL["vre_grid"] ** 2, TINY_MODEL["prompt_dim"])


def test_untrained_model_is_identity():
    """Zero-initialised residual head: a fresh model returns its input exactly."""
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(OSDFaceNet(**TINY_MODEL).eval()(x), x)


def test_steps_one_is_the_one_step_path_and_two_differs(net):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        z, skips = net.encode(x)
        zl = z * net.latent_scale
        prompt = net.vre(x)
        x0 = x0_from_eps(zl, net.eps(zl, DEFAULT_TIMESTEP, prompt), net.alpha_bar)
        manual = x + net.residual_out(net.decode_features(x0 / net.latent_scale, skips))
        one, two = net(x, steps=1), net(x, steps=2)
    assert torch.equal(one, manual)
    assert not torch.equal(one, two)
    assert torch.isfinite(two).all()


def test_save_load_roundtrip_bit_exact(net, saved):
    assert (saved / "config.json").is_file() and (saved / WEIGHTS_NAME).is_file()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        ref = net(x)
        assert torch.equal(OSDFaceNet.from_pretrained(saved).eval()(x), ref)
        assert torch.equal(load_network(saved)(x), ref)
    faces = batch()
    r1 = ModelRestorer(net, device="cpu").restore(faces)
    r2 = load_restorer(saved, device="cpu", runtime="torch").restore(faces)
    np.testing.assert_array_equal(r1, r2)


# --- restorer contract -----------------------------------------------------------------------

def test_restorer_contract(saved):
    r = load_model_restorer(saved, device="cpu")
    assert r.face_size == 32 and r.steps == 1 and r.device == torch.device("cpu")
    assert isinstance(r.name, str) and r.name
    faces = batch(3)
    out = r.restore(faces)
    assert out.shape == faces.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, r.restore(faces))  # deterministic
    assert r.restore(faces[0]).shape == (1, 32, 32, 3)
    assert r.restore(faces[:0]).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError):
        r.restore(batch(1, 16))
    r2 = load_restorer(saved, device="cpu", steps=2)
    assert r2.steps == 2
    assert not np.array_equal(r2.restore(faces), out)


def test_missing_model_raises(tmp_path):
    with pytest.raises(RestorerError, match="config.json"):
        load_model_restorer(tmp_path, device="cpu")


def test_truncated_weights_raise(saved, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(saved, d)
    w = d / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(RestorerError, match=WEIGHTS_NAME):
        load_model_restorer(d, device="cpu")


def test_mismatched_config_raises(saved, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(saved, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["unet_channels"] = [24, 48]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RestorerError, match=WEIGHTS_NAME):
        load_model_restorer(d, device="cpu")
    (d / "config.json").write_text("{not json")
    with pytest.raises(RestorerError, match="config.json"):
        load_model_restorer(d, device="cpu")


def test_face_size_mismatch_raises(saved):
    with pytest.raises(RestorerError, match="32px"):
        load_model_restorer(saved, device="cpu", face_size=128)


# --- the shipped model -----------------------------------------------------------------------

def test_shipped_model_restores_a_real_face(utk_dir):
    """On 8 val faces (never trained on) at "medium" damage the shipped model raises PSNR over
    its input on every face, by 1.28 dB on average when written (2026-12-01)."""
    from osdface_rtc.paths import default_model_dir

    mdir = default_model_dir()
    if not (mdir / "config.json").exists():
        pytest.skip(f"no shipped model at {mdir}")
    import cv2

    from osdface_rtc.data.degrade import degrade
    from osdface_rtc.data.faces import list_faces

    r = load_restorer(None, device="cpu", runtime="torch")
    assert isinstance(r, ModelRestorer) and r.face_size == 160
    s = r.face_size
    files = list_faces("val", utk_dir)[:8]
    hq = np.stack([cv2.resize(read_rgb(p), (s, s), interpolation=cv2.INTER_AREA) for p in files])
    lq = np.stack([degrade(h, np.random.default_rng(i), "medium") for i, h in enumerate(hq)])
    out = r.restore(lq)
    assert out.shape == lq.shape
    gains = np.array([psnr(o, h) - psnr(q, h) for o, q, h in zip(out, lq, hq)])
    assert (gains > 0).all(), f"shipped model made val faces worse: gains {gains.round(2)} dB"
    assert gains.mean() > 0.5, f"shipped model gains only {gains.mean():.2f} dB on val faces"
