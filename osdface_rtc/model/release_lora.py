"""The release's UNet LoRA: reading ``pytorch_lora_weights.safetensors`` and merging it into the
UNet weights at load (``W ← W + scale·B@A``), so no PEFT is needed at run time."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..restore.base import RestorerError

#: (suffix of the A/down matrix, suffix of the B/up matrix): PEFT and older diffusers names.
LORA_SUFFIXES = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"))


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
