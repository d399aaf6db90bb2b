"""Run the released OSDFace checkpoint from local files (``load_restorer("osdface:/dir")``).

Folder layout accepted (the release ships its three files in ``pretrained/`` and points
``--pretrained_model_name_or_path`` at an SD-2.1-base diffusers folder)::

    dir/
      associate_2.ckpt                   # or dir/pretrained/associate_2.ckpt
      embedding_change_weights.pth       #  "      "
      pytorch_lora_weights.safetensors   #  "      "
      unet/ vae/ scheduler/              # SD-2.1-base at the root, or in exactly one
                                         # subfolder (e.g. dir/stable-diffusion-2-1-base/)

Inference (the release's ``infer.py``, with the VAE latent mean instead of a sample so video
does not flicker)::

    lq ∈ [-1,1] ─► VRE ─► 77×1024 prompt
       └─► VAE.encode(lq).mean · s = z_L ─► ε̂ = UNet(z_L, 399, prompt)
           x0 = (z_L − √(1−ᾱ)·ε̂)/√ᾱ ─► VAE.decode(x0 / s).clamp(−1, 1)

``steps > 1`` runs IDM's iterative mode (``formulation.iterative_denoise``). Weights are fp16 on
CUDA and fp32 on CPU; the LoRA is merged into the UNet weights at load (no PEFT needed).
"""
from __future__ import annotations

import json
import logging
import pickle
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors import safe_open
from torch import nn

from ..device import resolve_device
from ..restore.base import RestorerError, check_batch
from .formulation import DEFAULT_TIMESTEP, SD21_SCHEDULER, iterative_denoise, make_scheduler
from .vre_release import VRE_PREFIX, EmbeddingChange, ReleaseVRE, VREConfig

log = logging.getLogger("osdface_rtc")

VRE_FILE = "associate_2.ckpt"
EMBEDDING_FILE = "embedding_change_weights.pth"
LORA_FILE = "pytorch_lora_weights.safetensors"
SD_PARTS = ("unet", "vae", "scheduler")
#: (suffix of the A/down matrix, suffix of the B/up matrix): PEFT and older diffusers names.
LORA_SUFFIXES = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"))


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleasePaths:
    """Where each part of the release lives on disk."""

    sd_dir: Path
    vre_ckpt: Path
    embedding_change: Path
    lora: Path


def _find_release_file(root: Path, name: str) -> Path:
    for cand in (root / name, root / "pretrained" / name):
        if cand.is_file():
            return cand
    raise RestorerError(f"OSDFace release file {name!r} not found in {root} or {root / 'pretrained'}")


def _is_sd_dir(d: Path) -> bool:
    return all((d / part).is_dir() for part in SD_PARTS)


def _find_sd_dir(root: Path) -> Path:
    if _is_sd_dir(root):
        return root
    found = sorted(d for d in root.iterdir() if d.is_dir() and _is_sd_dir(d))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} candidate"
        raise RestorerError(
            f"{what} SD-2.1-base diffusers folder (with {'/, '.join(SD_PARTS)}/) in {root}: put "
            "unet/ vae/ scheduler/ at its root or in exactly one subfolder"
        )
    return found[0]


def locate_release(root: str | Path) -> ReleasePaths:
    """Find the SD-2.1-base folder and the three release files under ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RestorerError(f"OSDFace release folder {root} does not exist")
    return ReleasePaths(
        sd_dir=_find_sd_dir(root),
        vre_ckpt=_find_release_file(root, VRE_FILE),
        embedding_change=_find_release_file(root, EMBEDDING_FILE),
        lora=_find_release_file(root, LORA_FILE),
    )


class _Opaque(dict):
    """Stand-in for a pickled object whose class is not importable here (e.g. Lightning's
    ``AttributeDict`` hyper-parameters): accepts any constructor args, items and state."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state: object) -> None:
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Opaque


#: ``pickle_module`` for ``torch.load``: plain pickle, but unknown classes become ``_Opaque``.
_LENIENT_PICKLE = types.ModuleType("osdface_lenient_pickle")
_LENIENT_PICKLE.Unpickler = _LenientUnpickler
_LENIENT_PICKLE.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()


def _torch_load(path: Path) -> object:
    """torch.load on CPU, tensors-only first.

    Lightning checkpoints also pickle hyper-parameters and callback state (classes from
    Lightning or the training code): those need full unpickling, done with unknown classes
    replaced by an inert stand-in so neither package has to be installed. Only the tensors are
    used; full unpickling runs code from the file, so it is logged (the user chose this file).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        log.warning("%s holds non-tensor objects; unpickling it fully", path.name)
    except Exception as e:  # corrupt / truncated / not a torch file
        raise RestorerError(f"{path.name}: cannot be read as a torch file ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
    except Exception as e:
        raise RestorerError(f"{path.name}: cannot be read as a torch file ({e})") from e


# --------------------------------------------------------------------------------------------
# VRE
# --------------------------------------------------------------------------------------------
def load_vre(vre_ckpt: Path, embedding_path: Path, n_tokens: int = 77) -> ReleaseVRE:
    """Build the VRE from ``associate_2.ckpt`` (``vqvae_LQ.*``) + ``embedding_change_weights.pth``."""
    ckpt = _torch_load(vre_ckpt)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise RestorerError(f"{vre_ckpt.name}: no 'state_dict' (expected a Lightning checkpoint)")
    sd = {k[len(VRE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(VRE_PREFIX)}
    emb_sd = _torch_load(embedding_path)
    try:
        cfg = VREConfig.from_state_dict(sd, n_tokens=n_tokens)
        emb = EmbeddingChange.from_state_dict(emb_sd)
    except (KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise RestorerError(f"{vre_ckpt.name} / {embedding_path.name}: unexpected layout ({e!r})") from e
    if emb.conv1.in_channels != cfg.embed_dim:
        raise RestorerError(
            f"{embedding_path.name}: expects {emb.conv1.in_channels}-d codes but {vre_ckpt.name}'s "
            f"codebook is {cfg.embed_dim}-d"
        )
    vre = ReleaseVRE(cfg, emb)
    try:
        vre.load_release_state(sd)
    except (KeyError, RuntimeError) as e:
        raise RestorerError(f"{vre_ckpt.name}: {VRE_PREFIX}* weights do not fit the encoder ({e})") from e
    return vre


# --------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------
def read_lora(path: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float | None]:
    """Read a diffusers/PEFT UNet LoRA file.

    Returns ``{unet weight key: (A, B)}`` (A: rank × in…, B: out × rank…) and ``lora_alpha / r``
    when the file's ``lora_adapter_metadata`` says so (``None``: not recorded).
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as e:
        raise RestorerError(f"{path.name}: cannot be read as safetensors ({e})") from e
    halves: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in tensors.items():
        role = _lora_role(key)
        if role is None:
            raise RestorerError(f"{path.name}: unrecognised LoRA key {key!r} (expected lora_A/lora_B)")
        halves.setdefault(role[0], [None, None])[role[1]] = tensor
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, (a, b) in halves.items():
        if a is None or b is None:
            raise RestorerError(f"{path.name}: {module!r} lacks its LoRA {'A' if a is None else 'B'} matrix")
        pairs[f"{module}.weight"] = (a, b)
    if not pairs:
        raise RestorerError(f"{path.name}: no LoRA weights found")
    return pairs, _lora_scale_from_metadata(meta, path)


def _lora_role(key: str) -> tuple[str, int] | None:
    """(UNet module name, 0 for the A/down matrix or 1 for B/up) of a LoRA key; None if not one."""
    for suffixes in LORA_SUFFIXES:
        for role, suffix in enumerate(suffixes):
            if key.endswith(suffix):
                return key[: -len(suffix)].removeprefix("unet."), role
    return None


def _lora_scale_from_metadata(meta: dict[str, str], path: Path) -> float | None:
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return None
    info = json.loads(raw)
    if info.get("unet.rank_pattern") or info.get("unet.alpha_pattern"):
        raise RestorerError(f"{path.name}: per-module LoRA rank/alpha patterns are not supported")
    if "unet.lora_alpha" not in info or "unet.r" not in info:
        return None
    return float(info["unet.lora_alpha"]) / float(info["unet.r"])


@torch.no_grad()
def merge_lora(
    unet: nn.Module, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], scale: float, source: str
) -> list[str]:
    """W ← W + scale·B@A for every LoRA pair (linear and conv weights), computed in fp32.

    Returns the merged UNet weight keys. Raises ``RestorerError`` naming ``source`` when a
    target is missing or its shape does not match.
    """
    params = dict(unet.named_parameters())
    for key, (a, b) in pairs.items():
        if key not in params:
            raise RestorerError(f"{source}: LoRA targets {key!r}, which this UNet does not have")
        w = params[key]
        delta = b.flatten(1).float() @ a.flatten(1).float()
        if delta.shape != w.flatten(1).shape:
            raise RestorerError(
                f"{source}: LoRA for {key!r} gives {tuple(delta.shape)}, weight is {tuple(w.shape)}"
            )
        w.copy_((w.float() + scale * delta.view(w.shape).to(w.device)).to(w.dtype))
    return sorted(pairs)


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


class _CudaGraphRunner:
    """Captures ``fn`` once per (input shape, steps) and replays it (static input/output)."""

    def __init__(self, fn: Callable[[torch.Tensor, int], torch.Tensor]):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        key = (tuple(x.shape), steps)
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuDNN/cuBLAS autotune) off the capture
                for _ in range(2):
                    self.fn(static_in, steps)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in, steps)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


# --------------------------------------------------------------------------------------------
# Restorer
# --------------------------------------------------------------------------------------------
ACCEL_MODES = ("none", "cuda_graph", "compile")


@dataclass
class ReleaseOptions:
    """User-settable options of the release restorer (``load_restorer`` kwargs)."""

    face_size: int = 512  # the release's size; smaller sizes only for tests / experiments
    steps: int = 1  # IDM iterative steps (1 = OSDFace one-step)
    timestep: int = DEFAULT_TIMESTEP
    lora_scale: float | None = None  # None: lora_alpha/r from the file, else 1.0 (alpha=r=16)
    accel: str = "none"  # "none" | "cuda_graph" | "compile" (CUDA only; eager on CPU)
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


class ReleaseRestorer:
    """Restorer contract around ``OSDFaceRelease`` (uint8 RGB crops in and out)."""

    name = "osdface-release"

    def __init__(self, net: OSDFaceRelease, device: torch.device, face_size: int = 512,
                 steps: int = 1, accel: str = "none"):
        self.net = net.eval().requires_grad_(False)
        self.device = device
        self.face_size = int(face_size)
        self.steps = int(steps)
        self.dtype = next(net.vae.parameters()).dtype
        self._run = self._make_runner(accel)

    def _make_runner(self, accel: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
        if accel != "none" and self.device.type != "cuda":
            log.warning("accel=%r needs CUDA; running eager on %s", accel, self.device)
            accel = "none"
        if accel == "cuda_graph":
            return _CudaGraphRunner(self.net)
        if accel == "compile":
            return torch.compile(self.net, mode="max-autotune-no-cudagraphs")
        return self.net

    @torch.inference_mode()
    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        if len(faces) == 0:
            return faces.copy()
        x = torch.from_numpy(faces).to(self.device).permute(0, 3, 1, 2)
        x = x.to(self.dtype) / 127.5 - 1.0
        out = self._run(x.contiguous(), self.steps)
        out = ((out.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).cpu().numpy()


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
