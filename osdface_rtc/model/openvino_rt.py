"""The CPU runtime: the trained model converted to OpenVINO (``--runtime openvino``).

``ov.convert_model`` traces the torch module directly (no ONNX: onnx >= 1.18 needs
protobuf >= 6, which mediapipe 0.10.21 forbids). The converted model (dynamic batch) is saved
once per model hash (weights + config + steps + OpenVINO version) under
``cache_dir()/openvino/<hash>/`` and loaded from there afterwards. Inference runs in f32 (CPUs
with bf16 units would otherwise default to bf16), so outputs equal the torch runtime's within
1 LSB. Whether this runtime is used is :func:`osdface_rtc.model.accel.resolve_runtime`'s call.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ..restore.base import check_batch

log = logging.getLogger("osdface_rtc")

def model_hash(model_dir: Path, steps: int) -> str:
    """What the converted model depends on: the model files, ``steps``, OpenVINO's version."""
    import openvino as ov

    from .network import CONFIG_NAME, WEIGHTS_NAME

    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(f"steps={steps};ov={ov.get_version()}".encode())
    return h.hexdigest()[:20]


class OpenVINORestorer:
    """Restores aligned faces with the OpenVINO-converted model on the CPU (Restorer contract)."""

    def __init__(self, net, model_dir: Path, steps: int = 1, threads: int | None = None,
                 cache: Path | None = None, name: str = "osdface-rtc"):
        import openvino as ov
        import torch

        from ..paths import cache_dir

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.face_size = int(net.config.face_size)
        self.steps = int(steps)
        self.name = f"{name} (openvino)"
        self.device = torch.device("cpu")
        self.runtime = "openvino"
        self.threads = int(threads or torch.get_num_threads())
        folder = (cache or cache_dir() / "openvino") / model_hash(Path(model_dir), self.steps)
        xml = folder / "model.xml"
        if not xml.is_file():
            self._convert(net, xml)
        else:
            log.info("OpenVINO model from cache %s", folder)
        core = ov.Core()
        self._compiled = core.compile_model(str(xml), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
        self.cache_path = folder

    def _convert(self, net, xml: Path) -> None:
        import openvino as ov
        import torch

        steps = self.steps

        class OneCall(torch.nn.Module):  # steps fixed at conversion
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x, steps=steps)

        s = self.face_size
        log.info("converting the model to OpenVINO (once per model; cached in %s)", xml.parent)
        with torch.inference_mode():
            model = ov.convert_model(OneCall().eval(), example_input=torch.zeros(1, 3, s, s),
                                     input=[ov.PartialShape([-1, 3, s, s])])
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = xml.with_name(f"model.{os.getpid()}.tmp.xml")  # concurrent converters don't clash
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)  # the .xml last: a cache entry is complete once it exists

    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        if len(faces) == 0:
            return faces.copy()
        x = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(127.5) - 1.0
        y = self._request.infer({0: x})[0]  # one infer request: one caller at a time (the contract)
        y = np.rint((np.clip(y, -1.0, 1.0) + 1.0) * 127.5)  # same rounding as the torch runtime
        return y.astype(np.uint8).transpose(0, 2, 3, 1).copy()

