"""``ModelRestorer``: the trained :class:`~osdface_rtc.model.network.OSDFaceNet` behind the
Restorer contract (uint8 N×S×S×3 RGB in and out, deterministic), and ``load_model_restorer``,
the loader of a model folder (torch or OpenVINO runtime, see :mod:`.accel`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..device import resolve_device
from ..restore.base import RestorerError
from .accel import DEFAULT_ACCEL, TorchRestorer, resolve_runtime, to_tensor, to_uint8
from .network import OSDFaceNet, load_network

log = logging.getLogger("osdface_rtc")

__all__ = ["ModelRestorer", "load_model_restorer", "to_tensor", "to_uint8"]  # to_*: used by train/


class ModelRestorer(TorchRestorer):
    """Restores aligned faces with a trained one-step model.

    ``steps`` = 1 is OSDFace's one-step path; ``steps > 1`` is IDM's iterative mode (offline
    quality, ``steps``× the UNet cost). On CUDA the model runs in fp16, accelerated by
    ``accel`` (default: each batch size seen is captured once as a CUDA graph and replayed).
    """

    def __init__(self, net: OSDFaceNet, device: str | torch.device = "auto", steps: int = 1,
                 name: str = "osdface-rtc", accel: str = DEFAULT_ACCEL):
        device = resolve_device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        net = net.to(device) if dtype == torch.float32 else net.to(device, dtype)
        self.net = net.eval().requires_grad_(False)
        self.name = name
        super().__init__(self._net_forward, device, dtype, net.config.face_size, steps, accel)

    def _net_forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        return self.net(x, steps=steps)


def load_model_restorer(path: str | Path, device: str | torch.device = "auto", steps: int = 1,
                        face_size: int | None = None, accel: str = DEFAULT_ACCEL, runtime: str = "auto",
                        **ignored):
    """Load a model folder saved by ``osdface-rtc train`` (``config.json`` + safetensors).

    ``runtime``: ``"torch"`` (:class:`ModelRestorer`, accelerated by ``accel``), ``"openvino"``
    (CPU only, :class:`~osdface_rtc.model.openvino_rt.OpenVINORestorer`) or ``"auto"`` (OpenVINO
    on the CPU when it is installed, else torch). Raises :class:`RestorerError` naming the file for a
    missing, corrupt or mismatched model, or when ``face_size`` is given and differs from the
    model's.
    """
    from .openvino_rt import OpenVINORestorer

    if ignored:
        log.debug("load_model_restorer: ignoring options %s", sorted(ignored))
    path = Path(path)
    try:
        net = load_network(path)
    except (OSError, ValueError, RuntimeError) as e:
        raise RestorerError(f"cannot load model from {path}: {e}") from e
    if face_size is not None and int(face_size) != int(net.config.face_size):
        raise RestorerError(
            f"model {path} restores {net.config.face_size}px faces, {face_size}px requested"
        )
    dev = resolve_device(device)
    if resolve_runtime(runtime, dev) == "openvino":
        try:
            return OpenVINORestorer(net, path, steps=steps, name=f"osdface-rtc:{path.name}")
        except RestorerError:
            raise
        except Exception as e:  # noqa: BLE001 - conversion / compile problems, named
            if runtime == "openvino":
                raise RestorerError(f"OpenVINO could not load {path}: {type(e).__name__}: {e}") from e
            log.warning("OpenVINO failed for %s (%s: %s); using the torch runtime", path, type(e).__name__, e)
    return ModelRestorer(net, device=dev, steps=steps, name=f"osdface-rtc:{path.name}",
                         accel=accel)
