"""The OSDFace release loader, on tiny random stand-ins saved exactly as the release ships them.

The stand-ins use the release's key names and file formats at toy sizes: a diffusers SD folder
(unet/ vae/ scheduler/ via ``save_pretrained``), a Lightning-style ``associate_2.ckpt`` whose
``vqvae_LQ.encoder.*`` weights come from a taming-layout reference encoder written here, a
``.pth`` of the two 1×1 convs, and a PEFT-named LoRA ``.safetensors``. The loader's output is
checked against a direct computation (manual LoRA merge, taming encoder, slow-loop token
selection, manual ᾱ and x0).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn

from osdface_rtc.model.release_files import EMBEDDING_FILE, LORA_FILE, VRE_FILE, load_vre, locate_release
from osdface_rtc.model.release_lora import merge_lora, read_lora
from osdface_rtc.model.release_bench import PRESETS
from osdface_rtc.model.release_bench import main as bench_main
from osdface_rtc.model.vre_release import select_codes
from osdface_rtc.restore import RestorerError
from osdface_rtc.restorers import load_restorer

TINY = PRESETS["tiny"]
FACE = TINY.face_size
BETA_END = 0.02  # differs from SD-2.1's 0.012: proves ᾱ is read from the folder's config
LORA_RANK = 4


# --- a taming-layout VQGAN encoder (the release's lq_embed/vqvae.py structure) -------------
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class TamingResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class TamingAttn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.norm2 = _norm(c), _norm(c)  # norm2: unused in self-attention
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm1(x)
        q, k, v = (m(y).reshape(b, c, h * w) for m in (self.q, self.k, self.v))
        att = torch.softmax(q.transpose(1, 2) @ k * c**-0.5, dim=-1)  # (b, hw, hw)
        out = (v @ att.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class TamingEncoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_levels, z_channels):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(TamingResBlock(cin, ch * m))
                cin = ch * m
                if i in attn_levels:
                    level.attn.append(TamingAttn(cin))
            if i != len(ch_mult) - 1:
                level.downsample = nn.Module()
                level.downsample.conv = nn.Conv2d(cin, cin, 3, stride=2)
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (
            TamingResBlock(cin, cin), TamingAttn(cin), TamingResBlock(cin, cin)
        )
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


def _perturb_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Random GroupNorm affines, so a swapped norm key cannot go unnoticed."""
    for m in module.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=gen)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=gen)


# --- the stand-in release folder ------------------------------------------------------------
def save_lightning_style(ckpt: dict, path: Path) -> None:
    """torch.save with Lightning-like ``hyper_parameters``: an object whose class lives in a
    module that is not installed at load time (as Lightning / the training code is not)."""
    mod = types.ModuleType("absent_lightning")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__, AttributeDict.__qualname__ = mod.__name__, "AttributeDict"
    mod.AttributeDict = AttributeDict
    sys.modules[mod.__name__] = mod
    try:
        torch.save({**ckpt, "hyper_parameters": AttributeDict(lr=1e-4, n_min=77)}, path)
    finally:
        del sys.modules[mod.__name__]


class Reference:
    """Everything the direct reference computation needs."""

    def __init__(self, root: Path):
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        c = TINY.vre
        self.root = root
        self.encoder = TamingEncoder(c.ch, c.ch_mult, c.num_res_blocks, c.attn_levels, c.z_channels)
        _perturb_norms(self.encoder, gen)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.codebook = torch.randn(c.n_embed, c.embed_dim, generator=gen)
        self.conv1 = nn.Conv1d(*TINY.embedding[:2], 1)
        self.conv2 = nn.Conv1d(*TINY.embedding[1:], 1)
        sd_dir = root / "stable-diffusion-2-1-base"  # SD in a subfolder, release files at root
        unet = UNet2DConditionModel(**TINY.unet)
        vae = AutoencoderKL(**TINY.vae)
        _perturb_norms(vae, gen)
        unet.save_pretrained(sd_dir / "unet")
        vae.save_pretrained(sd_dir / "vae")
        PNDMScheduler(beta_start=0.00085, beta_end=BETA_END, beta_schedule="scaled_linear",
                      num_train_timesteps=1000).save_pretrained(sd_dir / "scheduler")
        self.sd_dir = sd_dir

        state = {f"vqvae_LQ.encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state |= {f"vqvae_LQ.quant_conv.{k}": v for k, v in self.quant_conv.state_dict().items()}
        state["vqvae_LQ.quantize.embedding.weight"] = self.codebook
        state["vqvae_LQ.decoder.conv_in.weight"] = torch.randn(8, 8, 3, 3)  # ignored parts
        state["vqvae_HQ.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3)
        self.vre_state = state
        save_lightning_style({"state_dict": state, "epoch": 7, "global_step": 1234}, root / VRE_FILE)
        torch.save({"conv1.weight": self.conv1.weight, "conv1.bias": self.conv1.bias,
                    "conv2.weight": self.conv2.weight, "conv2.bias": self.conv2.bias},
                   root / EMBEDDING_FILE)

        self.lora = {}  # unet weight key -> (A, B)
        targets = [n for n, m in unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
        targets.append("down_blocks.0.resnets.0.conv1")  # a conv LoRA too
        params = dict(unet.named_parameters())
        tensors = {}
        for name in targets:
            w = params[f"{name}.weight"]
            a_shape = (LORA_RANK, *w.shape[1:])
            b_shape = (w.shape[0], LORA_RANK) + (1, 1) * (w.ndim == 4)
            a = 0.1 * torch.randn(a_shape, generator=gen)
            b = 0.1 * torch.randn(b_shape, generator=gen)
            tensors[f"unet.{name}.lora_A.weight"], tensors[f"unet.{name}.lora_B.weight"] = a, b
            self.lora[f"{name}.weight"] = (a, b)
        save_file(tensors, str(root / LORA_FILE), metadata={"format": "pt"})

    def merged_unet(self) -> UNet2DConditionModel:
        unet = UNet2DConditionModel.from_pretrained(self.sd_dir / "unet")
        sd = unet.state_dict()
        for key, (a, b) in self.lora.items():
            sd[key] = sd[key] + (b.flatten(1) @ a.flatten(1)).reshape(sd[key].shape)
        unet.load_state_dict(sd)
        return unet

    @torch.no_grad()
    def prompt(self, lq: torch.Tensor) -> torch.Tensor:
        feats = self.quant_conv(self.encoder((lq - 0.5) / 0.5)).flatten(2).transpose(1, 2)
        tokens = torch.zeros(len(lq), 77, self.codebook.shape[1])
        for i, sel in enumerate(loop_select(feats, self.codebook, 77)):
            tokens[i, : len(sel)] = self.codebook[sel]
        x = F.silu(self.conv1(tokens.transpose(1, 2)))
        return F.silu(self.conv2(x)).transpose(1, 2)

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, steps: int = 1, vre_size: int | None = None) -> torch.Tensor:
        unet = self.merged_unet()
        vae = AutoencoderKL.from_pretrained(self.sd_dir / "vae")
        vre_in = lq if vre_size is None else F.interpolate(lq, size=vre_size, mode="bilinear")
        prompt = self.prompt(vre_in)
        betas = torch.linspace(0.00085**0.5, BETA_END**0.5, 1000, dtype=torch.float64) ** 2
        a_bar = torch.cumprod(1 - betas, 0)
        sf = vae.config.scaling_factor
        z = vae.encode(lq).latent_dist.mean * sf
        ts = [399] if steps == 1 else [399, 200]  # round(399·(2−k)/2), half up
        x0, eps = z, None
        for k, t in enumerate(ts):
            a = float(a_bar[t])
            z_t = z if k == 0 else math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            eps = unet(z_t, t, encoder_hidden_states=prompt).sample
            x0 = (z_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
        return vae.decode(x0 / sf).sample.clamp(-1, 1)


def loop_select(feats: torch.Tensor, codebook: torch.Tensor, n: int) -> list[list[int]]:
    """The release's selection, one position at a time (float64, direct distances)."""
    out = []
    for f in feats.double():
        d = (f[:, None, :] - codebook.double()[None]).pow(2).sum(-1)
        min_d, nearest = d.min(1)
        seen: list[int] = []
        for j in sorted(range(len(f)), key=lambda j: (min_d[j].item(), j)):
            code = int(nearest[j])
            if code not in seen:
                seen.append(code)
            if len(seen) >= n:
                break
        out.append(seen)
    return out


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Reference:
    return Reference(tmp_path_factory.mktemp("osdface_release"))


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (2, FACE // 4, FACE // 4, 3)).astype(np.uint8)
    return np.repeat(np.repeat(base, 4, 1), 4, 2)  # blocky, image-like crops


def _copy_without(ref: Reference, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "rel"
    shutil.copytree(ref.root, dst)
    (dst / name).unlink()
    return dst


# --- token selection --------------------------------------------------------------------------
@pytest.mark.parametrize("positions,codes,dim", [(256, 1024, 8), (64, 16, 4), (40, 512, 6)])
def test_select_codes_matches_release_loop(positions, codes, dim):
    gen = torch.Generator().manual_seed(positions + codes)
    feats = torch.randn(3, positions, dim, generator=gen)
    codebook = torch.randn(codes, dim, generator=gen)
    got, valid = select_codes(feats, codebook, 77)
    for i, want in enumerate(loop_select(feats, codebook, 77)):
        assert int(valid[i].sum()) == len(want)
        assert got[i, : len(want)].tolist() == want
        assert not valid[i, len(want):].any()


# --- files, layout, LoRA ----------------------------------------------------------------------
def test_locate_release_layouts(ref, tmp_path):
    paths = locate_release(ref.root)
    assert paths.sd_dir == ref.sd_dir and paths.lora.parent == ref.root
    moved = tmp_path / "rel"
    shutil.copytree(ref.sd_dir, moved)  # SD at the root ...
    shutil.copytree(ref.root, moved / "pretrained", ignore=shutil.ignore_patterns("stable-*"))
    paths = locate_release(moved)  # ... release files in pretrained/, as infer.py's test.sh
    assert paths.sd_dir == moved and paths.vre_ckpt == moved / "pretrained" / VRE_FILE


def test_lora_merge_changes_exactly_the_targets(ref):
    unet = UNet2DConditionModel.from_pretrained(ref.sd_dir / "unet")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    pairs, scale = read_lora(ref.root / LORA_FILE)
    assert scale is None  # no metadata: the caller uses alpha/r = 16/16 = 1
    merged = merge_lora(unet, pairs, 1.0, LORA_FILE)
    after = unet.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == merged == sorted(ref.lora)
    for key, (a, b) in ref.lora.items():
        delta = (b.flatten(1) @ a.flatten(1)).reshape(before[key].shape)
        torch.testing.assert_close(after[key], before[key] + delta)


@pytest.mark.parametrize("down,up", [("lora_A", "lora_B"), ("lora.down", "lora.up")])
def test_read_lora_names_and_metadata_scale(tmp_path, down, up):
    a, b = torch.ones(2, 3), torch.ones(5, 2)
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps({"unet.r": 2, "unet.lora_alpha": 4})}
    save_file({f"unet.x.to_q.{down}.weight": a, f"unet.x.to_q.{up}.weight": b},
              str(tmp_path / LORA_FILE), metadata=meta)
    pairs, scale = read_lora(tmp_path / LORA_FILE)
    assert scale == 2.0 and list(pairs) == ["x.to_q.weight"]
    save_file({f"unet.x.to_q.{down}.weight": a}, str(tmp_path / LORA_FILE))
    with pytest.raises(RestorerError, match="lacks its LoRA B"):
        read_lora(tmp_path / LORA_FILE)


def test_vre_features_match_taming_encoder(ref, faces, caplog):
    caplog.set_level("INFO", logger="osdface_rtc")
    vre = load_vre(ref.root / VRE_FILE, ref.root / EMBEDDING_FILE)
    assert "absent_lightning.AttributeDict as inert stand-ins" in caplog.text  # hyper-parameters
    assert vre.cfg == TINY.vre
    lq = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = ref.quant_conv(ref.encoder((lq - 0.5) / 0.5)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(vre.features(lq), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(vre(lq), ref.prompt(lq), atol=1e-5, rtol=1e-5)


# --- the full forward pass ----------------------------------------------------------------
@pytest.mark.parametrize("steps,vre_size", [(1, None), (2, None), (1, 2 * FACE)])
def test_restorer_matches_reference(ref, faces, steps, vre_size):
    restorer = load_restorer(
        f"osdface:{ref.root}", device="cpu", face_size=FACE, steps=steps, vre_size=vre_size
    )
    assert (restorer.face_size, restorer.steps, restorer.device.type) == (FACE, steps, "cpu")
    assert restorer.name == "osdface-release"
    lq = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    want = ref.restore(lq, steps, vre_size)
    with torch.no_grad():
        torch.testing.assert_close(restorer.net(lq, steps), want, atol=1e-4, rtol=1e-4)
    out = restorer.restore(faces)
    assert out.shape == faces.shape and out.dtype == np.uint8
    want_u8 = ((want + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - want_u8).max() <= 1


def test_restorer_empty_batch_and_bad_options(ref):
    restorer = load_restorer(f"osdface:{ref.root}", device="cpu", face_size=FACE)
    empty = np.zeros((0, FACE, FACE, 3), np.uint8)
    assert restorer.restore(empty).shape == empty.shape
    with pytest.raises(TypeError, match="bogus"):
        load_restorer(f"osdface:{ref.root}", device="cpu", bogus=1)
    with pytest.raises(ValueError, match="face_size"):
        load_restorer(f"osdface:{ref.root}", device="cpu", face_size=FACE + 2)


# --- clear errors -------------------------------------------------------------------------
@pytest.mark.parametrize("name", [VRE_FILE, EMBEDDING_FILE, LORA_FILE])
def test_missing_release_file_is_named(ref, tmp_path, name):
    with pytest.raises(RestorerError, match=name):
        load_restorer(f"osdface:{_copy_without(ref, tmp_path, name)}", device="cpu", face_size=FACE)


def test_missing_sd_folder_is_named(ref, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(ref.root, root, ignore=shutil.ignore_patterns("stable-*"))
    with pytest.raises(RestorerError, match="unet/"):
        load_restorer(f"osdface:{root}", device="cpu", face_size=FACE)


def test_mismatched_lora_is_named(ref, tmp_path):
    root = _copy_without(ref, tmp_path, LORA_FILE)
    save_file({"unet.nope.to_q.lora_A.weight": torch.ones(2, 3),
               "unet.nope.to_q.lora_B.weight": torch.ones(5, 2)}, str(root / LORA_FILE))
    with pytest.raises(RestorerError, match=rf"{LORA_FILE}.*nope\.to_q\.weight"):
        load_restorer(f"osdface:{root}", device="cpu", face_size=FACE)


def test_mismatched_embedding_change_is_named(ref, tmp_path):
    root = _copy_without(ref, tmp_path, EMBEDDING_FILE)
    d_in, hidden, _ = TINY.embedding
    torch.save({"conv1.weight": torch.zeros(hidden, d_in, 1), "conv1.bias": torch.zeros(hidden),
                "conv2.weight": torch.zeros(48, hidden, 1), "conv2.bias": torch.zeros(48)},
               root / EMBEDDING_FILE)
    with pytest.raises(RestorerError, match=EMBEDDING_FILE):
        load_restorer(f"osdface:{root}", device="cpu", face_size=FACE)


def test_mismatched_vre_checkpoint_is_named(ref, tmp_path):
    root = _copy_without(ref, tmp_path, VRE_FILE)
    state = dict(ref.vre_state)
    del state["vqvae_LQ.encoder.mid.attn_1.q.weight"]
    torch.save({"state_dict": state}, root / VRE_FILE)
    with pytest.raises(RestorerError, match=VRE_FILE):
        load_restorer(f"osdface:{root}", device="cpu", face_size=FACE)
    torch.save(state, root / VRE_FILE)  # not a Lightning checkpoint
    with pytest.raises(RestorerError, match=rf"{VRE_FILE}.*state_dict"):
        load_restorer(f"osdface:{root}", device="cpu", face_size=FACE)


# --- benchmark script -----------------------------------------------------------------------
def test_release_bench_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    assert bench_main(["--size", "tiny", "--device", "cpu", "--iters", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["results"]["none"]["p50_ms"] > 0
    assert report["results"]["cuda_graph"] == {"skipped": "needs CUDA"}
