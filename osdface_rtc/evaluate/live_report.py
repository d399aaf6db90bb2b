"""Live-path eval outputs: table (with the gain over the better of input and classical), JSON,
a grid of face crops and per-frame PSNR curves for clips."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .identity import INSTALL_HINT
from .live import LiveEvalConfig, LiveResult, LiveRow
from .report import _cell, _render, save_grid
from .runner import EvalResult

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("source", "source", "{}"),
    ("condition", "condition", "{}"),
    ("method", "method", "{}"),
    ("frames", "n", "{}"),
    ("PSNR", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("ID dist", "id_dist", "{:.3f}"),
    ("temporal", "temporal", "{:.2f}"),
)


def gains(rows: list[LiveRow], method: str = "model") -> list[dict]:
    """Per (source, condition): the method's PSNR minus the input's and minus the better of
    (input, baseline restorers), plus its identity/temporal differences to the input."""
    out = []
    keys = dict.fromkeys((r.source, r.condition) for r in rows)
    for src, cond in keys:
        group = {r.method: r for r in rows if (r.source, r.condition) == (src, cond)}
        if method not in group or "input" not in group:
            continue
        m, inp = group[method], group["input"]
        best_other = max(r.psnr for name, r in group.items() if name != method)
        row = dict(source=src, condition=cond, vs_input=m.psnr - inp.psnr, vs_best_other=m.psnr - best_other)
        if m.id_dist is not None and inp.id_dist is not None:
            row["id_vs_input"] = m.id_dist - inp.id_dist
        if m.temporal is not None and inp.temporal is not None:
            row["temporal_vs_input"] = m.temporal - inp.temporal
        out.append(row)
    return out


def format_live_table(rows: list[LiveRow], identity_available: bool) -> str:
    body = [[_cell(getattr(r, attr), fmt) for _, attr, fmt in COLUMNS] for r in rows]
    text = _render([c[0] for c in COLUMNS], body)
    g = gains(rows)
    if g:
        text += "\n\nmodel gain (dB PSNR): " + "; ".join(
            f"{r['source']} {r['condition']}: {r['vs_input']:+.2f} vs input, "
            f"{r['vs_best_other']:+.2f} vs best other" for r in g)
    if not identity_available:
        text += f"\nID dist n/a: {INSTALL_HINT}"
    return text


def write_live_json(path: Path, cfg: LiveEvalConfig, result: LiveResult, extra: dict) -> None:
    doc = {
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        **extra,
        "rows": [asdict(r) for r in result.rows],
        "gains": gains(result.rows),
        "curves": [{"source": s, "condition": c, "psnr": v} for (s, c), v in result.curves.items()],
    }
    path.write_text(json.dumps(doc, indent=2))


def save_live_grid(path: Path, result: LiveResult) -> None:
    """input / restorers / clean face crops, one column block per condition (and clip)."""
    samples = {}
    n = max((len(v["clean"]) for v in result.samples.values()), default=0)

    def padded(crops: list[np.ndarray]) -> np.ndarray:  # blocks with fewer faces: white tiles
        return np.stack(list(crops) + [np.full_like(crops[0], 255)] * (n - len(crops)))

    for key, by_method in result.samples.items():
        block = {m: padded(v) for m, v in by_method.items() if m != "clean"}
        block["ground truth"] = padded(by_method["clean"])
        samples[key] = block
    save_grid(path, EvalResult(rows=[], samples=samples, face_size=160))


def save_curves(path: Path, result: LiveResult) -> bool:
    """Per-frame face PSNR of each method, one panel per (clip, condition); False without matplotlib."""
    if not result.curves:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = list(result.curves)
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for method, values in result.curves[key].items():
            ax.plot(values, label=method, lw=1)
        ax.set_title(f"{key[0]} {key[1]}", fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("face PSNR (dB)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


__all__ = ["format_live_table", "write_live_json", "save_live_grid", "save_curves", "gains", "INSTALL_HINT"]
