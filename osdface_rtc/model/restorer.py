"""``ModelRestorer``: the trained :class:`~osdface_rtc.model.network.OSDFaceNet` behind the
Restorer contract (uint8 N×S×S×3 RGB in and out, thread-safe, deterministic).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..restore.base import RestorerError, check_batch
from .network import OSDFaceNet, load_network

log = logging.getLogger("osdface_rtc")


def to_tensor(faces: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 N×S×S×3 → float N×3×S×S in [-1, 1]."""
    if not faces.flags.writeable:  # torch.from_numpy warns on read-only arrays
        faces = faces.copy()
    x = torch.from_numpy(faces).to(device).permute(0, 3, 1, 2)
    return (x.to(dtype) / 127.5 - 1.0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float N×3×S×S in [-1, 1] → uint8 N×S×S×3 (rounded, clamped)."""
    y = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


class ModelRestorer:
    """Restores aligned faces with a trained one-step model.

    ``steps`` = 1 is OSDFace's one-step path; ``steps > 1`` is IDM's iterative mode (offline
    quality, ``steps``× the UNet cost). On CUDA the model runs in fp16 and, with
    ``cuda_graph=True``, each batch size seen is captured once as a CUDA graph and replayed
    (small models are launch-bound; falls back to eager if capture fails).
    """

    def __init__(self, net: OSDFaceNet, device: str | torch.device = "auto", steps: int = 1,
                 name: str = "osdface-rtc", cuda_graph: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.device = resolve_device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        net = net.to(self.device) if self.dtype == torch.float32 else net.to(self.device, self.dtype)
        self.net = net.eval().requires_grad_(False)
        self.face_size = int(net.config.face_size)
        self.steps = int(steps)
        self.name = name
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self.runtime = "torch"
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, steps=self.steps)

    def _graph_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Replay (capturing on first use) a CUDA graph for this batch size."""
        n = x.shape[0]
        if n not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up outside the graph (allocator, cuDNN autotune)
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        if len(faces) == 0:
            return faces.copy()
        with self._lock, torch.inference_mode():
            x = to_tensor(faces, self.device, self.dtype)
            if self.use_graph:
                try:
                    return to_uint8(self._graph_forward(x))
                except RuntimeError as e:  # capture unsupported here: stay eager from now on
                    log.warning("CUDA graph capture failed (%s); running eagerly", e)
                    self.use_graph = False
                    self._graphs.clear()
            return to_uint8(self._forward(x))


def load_model_restorer(path: str | Path, device: str | torch.device = "auto", steps: int = 1,
                        face_size: int | None = None, cuda_graph: bool = True, runtime: str = "auto",
                        **ignored):
    """Load a model folder saved by ``osdface-rtc train`` (``config.json`` + safetensors).

    ``runtime``: ``"torch"`` (:class:`ModelRestorer`), ``"openvino"`` (CPU only,
    :class:`~osdface_rtc.model.openvino_rt.OpenVINORestorer`) or ``"auto"`` (OpenVINO on the CPU
    when it is installed, else torch). Raises :class:`RestorerError` naming the file for a
    missing, corrupt or mismatched model, or when ``face_size`` is given and differs from the
    model's.
    """
    from .openvino_rt import OpenVINORestorer, resolve_runtime

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
                         cuda_graph=cuda_graph)
