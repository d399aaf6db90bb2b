"""The restorer factory: the one place that turns a user's ``--model`` setting into a Restorer.

``load_restorer(spec)`` accepts:

- ``None``: the shipped model (``osdface_rtc/models/<DEFAULT_MODEL_NAME>`` in an installed
  package, ``models/`` in a checkout); a missing shipped model is a :class:`RestorerError`
  that says what to do (never a silent switch to another restorer).
- ``"classical"`` / ``"identity"``: built-in baselines (:mod:`osdface_rtc.restore.classical`).
- ``"osdface:/path/to/dir"``: the released OSDFace checkpoint (SD-2.1-base folder + release files,
  :mod:`osdface_rtc.model.release`).
- ``"ray://HOST:PORT/APP"`` / ``"ray:APP"``: a restorer pool (``osdface-rtc restorer-serve``),
  see :mod:`osdface_rtc.restore.remote`.
- any other string / Path: a model folder saved by ``osdface-rtc train`` (config.json +
  safetensors, :mod:`osdface_rtc.model.restorer`).

It sits above its implementations (``model/``, ``restore/``), which never import it.
"""
from __future__ import annotations

from pathlib import Path

from .restore.base import Restorer, RestorerError
from .restore.classical import ClassicalRestorer, IdentityRestorer

__all__ = ["load_restorer"]


def load_restorer(path: str | Path | None = None, device: str = "auto", runtime: str = "auto",
                  **kwargs) -> Restorer:
    """Load a restorer from a spec (see module docstring). Extra kwargs go to the model loader.

    ``runtime`` (model folders): ``"auto"`` (OpenVINO on the CPU when installed, else torch),
    ``"torch"`` or ``"openvino"``; see :mod:`osdface_rtc.model.openvino_rt`.
    """
    from .paths import default_model_dir

    if path is None:
        mdir = default_model_dir()
        if not (mdir / "config.json").exists():
            raise RestorerError(
                f"the shipped model is missing: no {mdir / 'config.json'}. Reinstall osdface-rtc "
                "(the wheel ships it), set OSDFACE_RTC_MODELS to a folder holding "
                f"{mdir.name}/, or choose one with --model DIR | classical | osdface:/dir")
        path = mdir
    spec = str(path)
    if spec.startswith("ray:"):
        from .restore.remote import load_remote_restorer

        return load_remote_restorer(spec, **kwargs)
    if spec in ("classical", "identity") or spec.startswith("osdface:"):
        if runtime == "openvino":
            raise RestorerError(f"--runtime openvino needs a trained model folder, not {spec!r}")
        if spec == "classical":
            return ClassicalRestorer(face_size=kwargs.get("face_size"))
        if spec == "identity":
            return IdentityRestorer(face_size=kwargs.get("face_size", 128))
        from .model.release import load_release_restorer

        return load_release_restorer(spec[len("osdface:"):], device=device, **kwargs)
    p = Path(spec).expanduser()
    if not p.exists():
        raise RestorerError(
            f"model {spec!r} not found: give a model folder, 'classical', or 'osdface:/path'"
        )
    from .model.restorer import load_model_restorer

    return load_model_restorer(p, device=device, runtime=runtime, **kwargs)
