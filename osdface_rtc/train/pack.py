"""Pack training data for a machine that has a GPU but not ``../shared`` (nor mediapipe or PyAV).

``python -m osdface_rtc.train.pack --out .pack/pairs.tar --max-mb 50``

The live-path pairs need the detector (mediapipe) and the codecs (PyAV) to be made; a lent GPU
machine has neither, and a call to it may carry at most 64 MiB. So the pairs are made here
(:func:`osdface_rtc.train.livedata.live_train_pairs`, cached), and as many as fit ``--max-mb``
are written as JPEG (quality ``--quality``) into one tar, with the fixed val pairs (crop-level
presets and live conditions). ``osdface-rtc train --preset gpu`` reads only that tar
(``TrainConfig.pack``). Members: ``train/NNNNNN_lq.jpg`` / ``_hq.jpg``, ``val/<level>/NNNN_lq.jpg``
/ ``_hq.jpg``. The folder ``.pack/`` is git-ignored.
"""
from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import cv2
import numpy as np


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return len(data) + 1024  # payload + header and padding, roughly


def write_pack(path: Path, train: tuple[np.ndarray, np.ndarray], val: dict[str, tuple[np.ndarray, np.ndarray]],
               max_mb: float = 50.0, quality: int = 90, seed: int = 0) -> int:
    """Write the tar; returns the number of train pairs that fit in ``max_mb``."""
    budget = max_mb * 1024 * 1024
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    used, n = 0, 0
    with tarfile.open(tmp, "w") as tar:
        for level, (lq, hq) in val.items():
            for i, (a, b) in enumerate(zip(lq, hq)):
                used += _add(tar, f"val/{level}/{i:04d}_lq.jpg", _jpeg(a, 95))
                used += _add(tar, f"val/{level}/{i:04d}_hq.jpg", _jpeg(b, 95))
        lq, hq = train
        for i in np.random.default_rng(seed).permutation(len(lq)):
            a, b = _jpeg(lq[i], quality), _jpeg(hq[i], quality)
            if used + len(a) + len(b) + 2048 > budget:
                break
            used += _add(tar, f"train/{n:06d}_lq.jpg", a) + _add(tar, f"train/{n:06d}_hq.jpg", b)
            n += 1
    tmp.replace(path)
    return n


def read_pack(path: Path | str) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``((train_lq, train_hq), {level: (lq, hq)})`` from a tar written by :func:`write_pack`."""
    images: dict[str, np.ndarray] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                buf = np.frombuffer(tar.extractfile(member).read(), np.uint8)
                images[member.name] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def pairs(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        keys = sorted(k[: -len("_lq.jpg")] for k in images if k.startswith(prefix) and k.endswith("_lq.jpg"))
        return np.stack([images[k + "_lq.jpg"] for k in keys]), np.stack([images[k + "_hq.jpg"] for k in keys])

    levels = sorted({k.split("/")[1] for k in images if k.startswith("val/")})
    if not any(k.startswith("train/") for k in images):
        raise ValueError(f"{path}: no train pairs in the pack")
    return pairs("train/"), {lv: pairs(f"val/{lv}/") for lv in levels}


def main(argv: list[str] | None = None) -> int:
    from ..data.degrade import LEVELS, degrade_level
    from ..data.faces import load_faces
    from .config import TrainConfig
    from .livedata import live_train_pairs, live_val_pairs

    p = argparse.ArgumentParser(description="pack live-path training pairs for a GPU machine")
    p.add_argument("--out", type=Path, default=Path(".pack/pairs.tar"))
    p.add_argument("--max-mb", type=float, default=50.0)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--preset", default="gpu", help="the training preset the pack is for")
    a = p.parse_args(argv)
    cfg = TrainConfig.preset(a.preset, pack=None)
    train = live_train_pairs(cfg)
    val_hq = np.asarray(load_faces("val", int(cfg.model["face_size"]), cfg.val_count))
    val = {lv: (degrade_level(val_hq, lv, seed=cfg.seed), val_hq) for lv in LEVELS}
    val.update(live_val_pairs(cfg))
    n = write_pack(a.out, (train.lq, train.hq), val, a.max_mb, a.quality)
    mb = a.out.stat().st_size / 1e6
    print(f"wrote {a.out}: {n} of {len(train)} train pairs, {len(val)} val sets, {mb:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
