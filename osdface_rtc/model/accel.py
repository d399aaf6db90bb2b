"""How a model in ``model/`` runs: the runtime, the accelerator, and the tensor conversions.

One option each, with one default, for every restorer here (the trained one-step model and the
released OSDFace checkpoint):

- ``runtime`` (:data:`RUNTIMES`, default ``"auto"``): ``"torch"``, or ``"openvino"`` (trained
  model folders on the CPU, :mod:`.openvino_rt`); ``"auto"`` picks OpenVINO on the CPU when it
  is installed, else torch. See :func:`resolve_runtime`.
- ``accel`` (:data:`ACCEL_MODES`, default :data:`DEFAULT_ACCEL`) for the torch runtime:
  ``"none"`` runs eagerly; ``"cuda_graph"`` captures the forward pass once per input shape as a
  CUDA graph and replays it (small models are launch-bound; if capture fails the restorer
  stays eager from then on); ``"compile"`` runs it through ``torch.compile``. Off CUDA every
  mode runs eagerly.

:class:`TorchRestorer` is the Restorer contract around a torch forward pass
(``uint8 N x S x S x 3 RGB`` in and out, via :func:`to_tensor` / :func:`to_uint8`). Like every
Restorer it is called from one thread at a time (see :mod:`osdface_rtc.restore.base`).
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Callable

import numpy as np
import torch

from ..restore.base import RestorerError, check_batch

log = logging.getLogger("osdface_rtc")

RUNTIMES = ("auto", "torch", "openvino")
ACCEL_MODES = ("none", "cuda_graph", "compile")
DEFAULT_ACCEL = "cuda_graph"

Forward = Callable[[torch.Tensor, int], torch.Tensor]  # (x in [-1, 1], steps) -> x in [-1, 1]


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``auto`` -> ``openvino`` on CPU when it is installed, else ``torch``; checks the choice."""
    if runtime not in RUNTIMES:
        raise RestorerError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise RestorerError(f"the OpenVINO runtime runs on the CPU, not {device}: use --runtime torch")
        if not openvino_available():
            raise RestorerError("--runtime openvino: OpenVINO is not installed (pip install openvino)")
    return runtime


def resolve_accel(accel: str, device: torch.device) -> str:
    """Check ``accel`` and return the mode that runs on ``device`` (``"none"`` off CUDA)."""
    if accel not in ACCEL_MODES:
        raise ValueError(f"accel must be one of {ACCEL_MODES}, got {accel!r}")
    if accel != "none" and device.type != "cuda":
        log.debug("accel=%r needs CUDA; running eagerly on %s", accel, device)
        return "none"
    return accel


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


class CudaGraphs:
    """Captures ``fn(x, steps)`` once per (input shape, steps) and replays it (static in/out)."""

    def __init__(self, fn: Forward):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        key = (tuple(x.shape), steps)
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (allocator, cuDNN/cuBLAS autotune) off the capture
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


class TorchRestorer:
    """The Restorer contract around ``forward(x, steps)`` on ``device`` in ``dtype``.

    ``accel`` is the mode in use (see the module docstring); setting it on a ``copy.copy`` of a
    restorer switches that copy only (the graph cache is shared). ``use_graph`` is the same
    switch as a bool.
    """

    def __init__(self, forward: Forward, device: torch.device, dtype: torch.dtype, face_size: int,
                 steps: int = 1, accel: str = DEFAULT_ACCEL):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.device = device
        self.dtype = dtype
        self.face_size = int(face_size)
        self.steps = int(steps)
        self.runtime = "torch"
        self._forward = forward
        self._graphs = CudaGraphs(forward)
        self._compiled: Forward | None = None
        self.accel = resolve_accel(accel, device)

    @property
    def use_graph(self) -> bool:
        return self.accel == "cuda_graph"

    @use_graph.setter
    def use_graph(self, on: bool) -> None:
        self.accel = resolve_accel("cuda_graph" if on else "none", self.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.accel == "cuda_graph":
            try:
                return self._graphs(x, self.steps)
            except RuntimeError as e:  # capture unsupported here: stay eager from now on
                log.warning("CUDA graph capture failed (%s); running eagerly", e)
                self.accel = "none"
                self._graphs.graphs.clear()
        if self.accel == "compile":
            if self._compiled is None:
                self._compiled = torch.compile(self._forward, mode="max-autotune-no-cudagraphs")
            return self._compiled(x, self.steps)
        return self._forward(x, self.steps)

    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        if len(faces) == 0:
            return faces.copy()
        with torch.inference_mode():
            return to_uint8(self._run(to_tensor(faces, self.device, self.dtype)))
