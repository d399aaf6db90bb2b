"""Eval outputs: a text table, a JSON file and a PNG grid of sample faces."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from .identity import INSTALL_HINT
from .metrics import FACE_ELLIPSE, face_mask
from .runner import EvalConfig, EvalResult, Row
from .speed import SpeedRow

#: Table columns: header, Row attribute, format.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("level", "level", "{}"),
    ("method", "method", "{}"),
    ("PSNR", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("ID dist", "id_dist", "{:.3f}"),
    ("ID<0.6", "id_match", "{:.0%}"),
    ("ms/face", "ms_per_face", "{:.1f}"),
)


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _render(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_table(rows: list[Row], identity_available: bool) -> str:
    """The quality table; says how to install dlib when the identity columns are n/a."""
    body = [[_cell(getattr(r, attr), fmt) for _, attr, fmt in COLUMNS] for r in rows]
    text = _render([c[0] for c in COLUMNS], body)
    if not identity_available:
        text += f"\nID columns n/a: {INSTALL_HINT}"
    return text


def format_speed(rows: list[SpeedRow]) -> str:
    header = ["method", "device", "steps", "accel", "batch", "ms/call", "ms/face"]
    body = [[r.method, r.device, _cell(r.steps, "{}"), r.accel, str(r.batch),
             f"{r.ms_per_call:.2f}", f"{r.ms_per_face:.2f}"] for r in rows]
    return _render(header, body)


def write_json(path: Path, cfg: EvalConfig, result: EvalResult, speed: list[SpeedRow],
               identity_available: bool) -> None:
    """All settings, the face-region definition, every row and the speed rows."""
    doc = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "face_size": result.face_size,
        "face_region": {
            "ellipse_cx_cy_ax_ay": FACE_ELLIPSE,
            "fraction_of_crop": float(face_mask(result.face_size).mean()),
        },
        "identity": "dlib_face_recognition_resnet_model_v1" if identity_available else None,
        "identity_hint": None if identity_available else INSTALL_HINT,
        "results": [asdict(r) for r in result.rows],
        "speed": [asdict(r) for r in speed],
    }
    path.write_text(json.dumps(doc, indent=2))


def _label(text: str, height: int, width: int) -> np.ndarray:
    tile = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(tile, text, (4, height // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    return tile


def make_grid(result: EvalResult, label_width: int = 100, gap: int = 6) -> np.ndarray:
    """RGB image: one row per method (input, restorers, ground truth), one column block per level."""
    if not result.samples:
        return np.full((1, 1, 3), 255, np.uint8)
    s = result.face_size
    first = next(iter(result.samples.values()))
    names = [k for k in first if k != "ground truth"] + ["ground truth"]
    n = len(first["ground truth"])
    block_w = max(1, n) * s
    header = [_label("", 20, label_width)]
    rows = {name: [_label(name, s, label_width)] for name in names}
    for level, samples in result.samples.items():
        header += [np.full((20, gap, 3), 255, np.uint8), _label(level, 20, block_w)]
        for name in names:
            strip = np.concatenate(list(samples[name]), 1) if n else np.zeros((s, 0, 3), np.uint8)
            rows[name] += [np.full((s, gap, 3), 255, np.uint8), strip]
    lines = [np.concatenate(header, 1)] + [np.concatenate(r, 1) for r in rows.values()]
    return np.concatenate(lines, 0)


def save_grid(path: Path, result: EvalResult) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(make_grid(result), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
