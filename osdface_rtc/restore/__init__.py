"""Restorers and the one place that turns a user's ``--model`` setting into one.

``load_restorer(spec)`` accepts:

- ``None``: the shipped model in ``models/<DEFAULT_MODEL_NAME>``; falls back to the classical
  restorer (with a log line) only if that folder does not exist.
- ``"classical"`` / ``"identity"``: built-in baselines.
- ``"osdface:/path/to/dir"``: the released OSDFace checkpoint (SD-2.1-base folder + release files).
- any other string / Path: a model folder saved by ``osdface-rtc train`` (config.json + safetensors).
"""
from __future__ import annotations

import logging
from pathlib import Path

from .base import Restorer, RestorerError, check_batch
from .classical import ClassicalRestorer, IdentityRestorer

log = logging.getLogger("osdface_rtc")

__all__ = [
    "Restorer",
    "RestorerError",
    "ClassicalRestorer",
    "IdentityRestorer",
    "check_batch",
    "load_restorer",
]


def load_restorer(path: str | Path | None = None, device: str = "auto", **kwargs) -> Restorer:
    """Load a restorer from a spec (see module docstring). Extra kwargs go to the model loader."""
    from ..paths import default_model_dir

    if path is None:
        mdir = default_model_dir()
        if not (mdir / "config.json").exists():
            log.warning("no shipped model at %s; using the classical restorer", mdir)
            return ClassicalRestorer()
        path = mdir
    spec = str(path)
    if spec == "classical":
        return ClassicalRestorer(face_size=kwargs.get("face_size"))
    if spec == "identity":
        return IdentityRestorer(face_size=kwargs.get("face_size", 128))
    if spec.startswith("osdface:"):
        from ..model.release import load_release_restorer

        return load_release_restorer(spec[len("osdface:"):], device=device, **kwargs)
    p = Path(spec).expanduser()
    if not p.exists():
        raise RestorerError(
            f"model {spec!r} not found: give a model folder, 'classical', or 'osdface:/path'"
        )
    from ..model.restorer import load_model_restorer

    return load_model_restorer(p, device=device, **kwargs)
