"""Run the released OSDFace checkpoint from local files (``load_restorer("osdface:/dir")``).

The files and the folder layout: :mod:`.release_files`; the LoRA: :mod:`.release_lora`; the VRE
network: :mod:`.vre_release`. This module assembles the network and wraps it as a Restorer.

Inference (the release's ``infer.py``, with the VAE latent mean instead of a sample so video
does not flicker)::

    lq ∈ [-1,1] ─► VRE ─► 77×1024 prompt
       └─► VAE.encode(lq).mean · s = z_L ─► ε̂ = UNet(z_L, 399, prompt)
           x0 = (z_L − √(1−ᾱ)·ε̂)/√ᾱ ─► VAE.decode(x0 / s).clamp(−1, 1)

``steps > 1`` runs IDM's iterative mode (``formulation.iterative_denoise``). Weights are fp16 on
CUDA and fp32 on CPU; the LoRA is merged into the UNet weights at load (no PEFT needed). The
forward pass is accelerated like the trained model's (``accel``, see :mod:`.accel`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from ..device import resolve_device
from ..restore.base import RestorerError
from .accel import ACCEL_MODES, DEFAULT_ACCEL, TorchRestorer
from .formulation import DEFAULT_TIMESTEP, SD21_SCHEDULER, iterative_denoise, make_scheduler
from .release_files import EMBEDDING_FILE, load_vre, locate_release
from .release_lora import merge_lora, read_lora
from .vre_release import ReleaseVRE

log = logging.getLogger("osdface_rtc")


# --------------------------------------------------------------------------------------------
# SD-2.1 parts
# --------------------------------------------------------------------------------------------
def load_scheduler(sd_dir: Path) -> DDPMScheduler:
    """ᾱ source: the folder's scheduler config (SD-2.1 ships a PNDM config with DDPM betas)."""
    cfg_path = sd_dir / "scheduler" / "scheduler_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise RestorerError(f"{cfg_path}: cannot read the scheduler config ({e})") from e
    return make_scheduler(**{k: cfg[k] for k in SD21_SCHEDULER if k in cfg})


def _load_part(cls: type, folder: Path, dtype: torch.dtype) -> nn.Module:
    try:
        return cls.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise RestorerError(f"{folder}: cannot load {cls.__name__} ({e})") from e


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------
class OSDFaceRelease(nn.Module):
    """The released model: VRE + SD-2.1 VAE + LoRA-merged UNet, one step at t = 399."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        vre: ReleaseVRE,
        scheduler: DDPMScheduler,
        timestep: int = DEFAULT_TIMESTEP,
        vre_size: int | None = None,
    ):
        super().__init__()
        prompt_dim = vre.embedding_change.conv2.out_channels
        if prompt_dim != unet.config.cross_attention_dim:
            raise RestorerError(
                f"{EMBEDDING_FILE}: makes {prompt_dim}-d prompts, the UNet's cross-attention "
                f"takes {unet.config.cross_attention_dim}-d"
            )
        self.unet, self.vae, self.vre = unet, vae, vre
        self.scheduler = scheduler
        self.timestep = int(timestep)
        self.vre_size = vre_size
        self.latent_scale = float(vae.config.scaling_factor)

    def eps(self, z_t: torch.Tensor, t: int, prompt: torch.Tensor) -> torch.Tensor:
        """ε̂ = UNet(z_t, t, prompt) in fp32 (the timestep as a device tensor: graph-capturable)."""
        tt = torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)
        dtype = self.unet.dtype
        return self.unet(z_t.to(dtype), tt, encoder_hidden_states=prompt, return_dict=False)[0].float()

    def forward(self, lq: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] → restored faces in [-1, 1] (x0 maths in fp32)."""
        vre_in = lq
        if self.vre_size is not None and lq.shape[-1] != self.vre_size:
            vre_in = F.interpolate(lq, size=(self.vre_size,) * 2, mode="bilinear", align_corners=False)
        prompt = self.vre(vre_in)
        z_l = self.vae.encode(lq).latent_dist.mode().float() * self.latent_scale
        x0 = iterative_denoise(
            z_l, lambda z, t: self.eps(z, t, prompt), self.scheduler, self.timestep, steps
        )
        return self.vae.decode((x0 / self.latent_scale).to(self.vae.dtype)).sample.clamp(-1, 1)


def check_face_size(net: OSDFaceRelease, face_size: int) -> None:
    """The face must tile the VAE+UNet down-sampling, and the VRE input its grid, exactly."""
    vae_f = 2 ** (len(net.vae.config.block_out_channels) - 1)
    unet_f = 2 ** (len(net.unet.config.block_out_channels) - 1)
    for what, size, multiple in (
        ("face_size", face_size, vae_f * unet_f),
        ("vre_size (or face_size)", net.vre_size or face_size, net.vre.cfg.downscale),
    ):
        if size <= 0 or size % multiple:
            raise ValueError(f"{what} {size} must be a positive multiple of {multiple}")


# --------------------------------------------------------------------------------------------
# Restorer
# --------------------------------------------------------------------------------------------
@dataclass
class ReleaseOptions:
    """User-settable options of the release restorer (``load_restorer`` kwargs)."""

    face_size: int = 512  # the release's size; smaller sizes only for tests / experiments
    steps: int = 1  # IDM iterative steps (1 = OSDFace one-step)
    timestep: int = DEFAULT_TIMESTEP
    lora_scale: float | None = None  # None: lora_alpha/r from the file, else 1.0 (alpha=r=16)
    accel: str = DEFAULT_ACCEL  # see .accel: "none" | "cuda_graph" | "compile" (CUDA only)
    # The release resizes the VRE's input to 512² (a no-op at face_size 512); None: no resize.
    vre_size: int | None = None

    @classmethod
    def from_kwargs(cls, **kw) -> ReleaseOptions:
        kw = {k: v for k, v in kw.items() if v is not None}  # None: keep the default
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise TypeError(f"unknown option(s) for the OSDFace release restorer: {unknown}")
        opts = cls(**kw)
        if opts.accel not in ACCEL_MODES:
            raise ValueError(f"accel must be one of {ACCEL_MODES}, got {opts.accel!r}")
        if opts.steps < 1:
            raise ValueError(f"steps must be >= 1, got {opts.steps}")
        return opts


class ReleaseRestorer(TorchRestorer):
    """Restorer contract around ``OSDFaceRelease`` (uint8 RGB crops in and out)."""

    name = "osdface-release"

    def __init__(self, net: OSDFaceRelease, device: torch.device, face_size: int = 512,
                 steps: int = 1, accel: str = DEFAULT_ACCEL):
        self.net = net.eval().requires_grad_(False)
        dtype = next(net.vae.parameters()).dtype
        super().__init__(self.net, device, dtype, face_size, steps, accel)


def load_release_net(root: str | Path, device: torch.device, opts: ReleaseOptions) -> OSDFaceRelease:
    """Load and assemble the release (LoRA merged) on ``device`` (fp16 on CUDA, fp32 on CPU)."""
    paths = locate_release(root)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    scheduler = load_scheduler(paths.sd_dir)
    unet = _load_part(UNet2DConditionModel, paths.sd_dir / "unet", dtype)
    pairs, file_scale = read_lora(paths.lora)
    scale = next(s for s in (opts.lora_scale, file_scale, 1.0) if s is not None)
    merged = merge_lora(unet, pairs, scale, paths.lora.name)
    log.info("merged %d LoRA weights into the UNet (scale %.3g)", len(merged), scale)
    vae = _load_part(AutoencoderKL, paths.sd_dir / "vae", dtype)
    vre = load_vre(paths.vre_ckpt, paths.embedding_change).to(dtype)
    net = OSDFaceRelease(unet, vae, vre, scheduler, opts.timestep, opts.vre_size)
    return net.to(device).eval().requires_grad_(False)


def load_release_restorer(path: str | Path, device: str | torch.device = "auto", **kw) -> ReleaseRestorer:
    """``load_restorer("osdface:/dir")``: the released OSDFace model as a ``Restorer``.

    Keyword options: see ``ReleaseOptions`` (``face_size``, ``steps``, ``timestep``,
    ``lora_scale``, ``accel``).
    """
    opts = ReleaseOptions.from_kwargs(**kw)
    dev = resolve_device(device)
    net = load_release_net(path, dev, opts)
    check_face_size(net, opts.face_size)
    return ReleaseRestorer(net, dev, face_size=opts.face_size, steps=opts.steps, accel=opts.accel)
