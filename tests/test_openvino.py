"""The OpenVINO CPU runtime: same faces as torch within 1 LSB, cached per model (issue 9 §3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import read_rgb
from osdface_rtc.model.accel import openvino_available, resolve_runtime
from osdface_rtc.model.restorer import ModelRestorer
from osdface_rtc.paths import default_model_dir
from osdface_rtc.restore import RestorerError
from osdface_rtc.restorers import load_restorer

needs_ov = pytest.mark.skipif(not openvino_available(), reason="openvino not installed (pip install openvino)")
needs_model = pytest.mark.skipif(not (default_model_dir() / "config.json").is_file(),
                                 reason=f"no shipped model at {default_model_dir()}")


def test_runtime_choice():
    cpu = torch.device("cpu")
    assert resolve_runtime("torch", cpu) == "torch"
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    assert resolve_runtime("auto", cpu) == ("openvino" if openvino_available() else "torch")
    with pytest.raises(RestorerError, match="runtime must be"):
        resolve_runtime("tensorrt", cpu)
    with pytest.raises(RestorerError, match="CPU"):
        resolve_runtime("openvino", torch.device("cuda"))


@needs_ov
@needs_model
def test_openvino_equals_torch_within_one_lsb_and_is_cached(utk_faces):
    import cv2

    from osdface_rtc.data.degrade import degrade

    ov = load_restorer(None, device="cpu")  # auto: OpenVINO on the CPU
    assert ov.runtime == "openvino" and ov.face_size == 160 and "openvino" in ov.name
    ref = load_restorer(None, device="cpu", runtime="torch")
    assert isinstance(ref, ModelRestorer)
    s = ov.face_size
    hq = np.stack([cv2.resize(read_rgb(p), (s, s), interpolation=cv2.INTER_AREA) for p in utk_faces[:8]])
    lq = np.stack([degrade(h, np.random.default_rng(i), "medium") for i, h in enumerate(hq)])
    for batch in (lq[:1], lq[:3], lq):  # dynamic batch
        a, b = ov.restore(batch), ref.restore(batch)
        assert a.shape == b.shape and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(ov.restore(lq), lq)  # the model really ran
    assert ov.restore(lq[:0]).shape == (0, s, s, 3)
    # the converted model is reused, not converted again
    xml = ov.cache_path / "model.xml"
    stamp = xml.stat().st_mtime_ns
    again = load_restorer(None, device="cpu", runtime="openvino")
    assert again.cache_path == ov.cache_path and xml.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.restore(lq), ov.restore(lq))


@needs_ov
def test_openvino_missing_model_is_an_error(tmp_path):
    with pytest.raises(RestorerError, match="config.json"):
        load_restorer(tmp_path, device="cpu", runtime="openvino")
