"""The released OSDFace checkpoint on disk: finding its files and reading the VRE from them.

Folder layout accepted (the release ships its three files in ``pretrained/`` and points
``--pretrained_model_name_or_path`` at an SD-2.1-base diffusers folder)::

    dir/
      associate_2.ckpt                   # or dir/pretrained/associate_2.ckpt
      embedding_change_weights.pth       #  "      "
      pytorch_lora_weights.safetensors   #  "      "
      unet/ vae/ scheduler/              # SD-2.1-base at the root, or in exactly one
                                         # subfolder (e.g. dir/stable-diffusion-2-1-base/)

Torch files are read with ``torch.load(weights_only=True)``: no code from a file ever runs.
"""
from __future__ import annotations

import logging
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..restore.base import RestorerError
from .vre_release import VRE_PREFIX, EmbeddingChange, ReleaseVRE, VREConfig

log = logging.getLogger("osdface_rtc")

VRE_FILE = "associate_2.ckpt"
EMBEDDING_FILE = "embedding_change_weights.pth"
LORA_FILE = "pytorch_lora_weights.safetensors"
SD_PARTS = ("unet", "vae", "scheduler")


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


class _Inert:
    """Stands in for a pickled class or function the weights-only unpickler does not allow (e.g.
    Lightning's ``AttributeDict`` hyper-parameters). Calling it, with any arguments, gives an
    empty ``OrderedDict``: the one container that unpickler lets take both items and attribute
    state, so dict-like objects keep their items and nothing of the original class runs."""

    def __new__(cls, *args, **kwargs) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


def torch_load(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU.

    Lightning checkpoints also pickle hyper-parameters and callback state (classes from
    Lightning or the training code, which need not be installed). Those globals are allowed for
    this one load as :class:`_Inert` stand-ins (``torch.serialization.safe_globals``), so only
    the tensors and plain containers come back and no code from the file runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as e:  # corrupt / truncated / not a torch file
        raise RestorerError(f"{path.name}: cannot be read as a torch file ({e})") from e
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        log.info("%s: reading %s as inert stand-ins", path.name, ", ".join(names))
        with torch.serialization.safe_globals([(_Inert, name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RestorerError(f"{path.name}: cannot be read as a torch file ({e})") from e


def load_vre(vre_ckpt: Path, embedding_path: Path, n_tokens: int = 77) -> ReleaseVRE:
    """Build the VRE from ``associate_2.ckpt`` (``vqvae_LQ.*``) + ``embedding_change_weights.pth``."""
    ckpt = torch_load(vre_ckpt)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise RestorerError(f"{vre_ckpt.name}: no 'state_dict' (expected a Lightning checkpoint)")
    sd = {k[len(VRE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(VRE_PREFIX)}
    emb_sd = torch_load(embedding_path)
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
