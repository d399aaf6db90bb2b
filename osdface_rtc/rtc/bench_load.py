"""The load matrix of ``osdface-rtc bench --sessions N,.. --faces K,..`` (issue 9 §5).

- :func:`run_matrix`: :func:`.bench.run_bench` for every (sessions, faces) pair (K faces are K
  time-shifted tiles of the clip, :func:`osdface_rtc.io.clips.tile_faces`; one configuration's
  figures over its N sessions: :func:`.latency.pooled`).
- :func:`plot_cdf`: end-to-end latency CDF per configuration, one PNG.
- :func:`format_matrix`: a Markdown table, one row per (sessions, faces).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bench import run_bench


def plot_cdf(curves: dict[str, list[float]], path: Path, title: str) -> bool:
    """One CDF line per configuration; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    configs = list(dict.fromkeys(label.rsplit(",", 1)[0] for label in curves))  # colour per config
    colours = plt.get_cmap("tab10")
    for label, values in curves.items():
        v = np.sort(np.asarray(values, np.float64))
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label,
                    color=colours(configs.index(label.rsplit(",", 1)[0]) % 10),
                    linestyle=":" if "pass" in label else "-", linewidth=1.2 if "pass" in label else 1.6)
    ax.set_xlabel("end-to-end latency, ms (client send -> client receive); dotted: pass-through")
    ax.set_ylabel("share of frames")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


async def run_matrix(cfg, sessions: list[int], faces: list[int], plot: Path | None = None) -> dict[str, Any]:
    """``run_bench`` for every (sessions, faces) pair; one JSON document and one CDF plot."""
    from dataclasses import replace

    rows, curves = [], {}
    for k in faces:
        for n in sessions:
            rep = await run_bench(replace(cfg, sessions=n, faces=k, out=None))
            row = {"sessions": n, "faces": k, "report": rep}
            rows.append(row)
            for mode in cfg.modes:
                if mode in rep:
                    curves[f"{n} session{'s' if n > 1 else ''} x {k} face{'s' if k > 1 else ''}, {mode}"] = \
                        rep[mode]["load"]["latencies_ms"]
    doc = {"rows": rows}
    if plot is not None and rows:
        r0 = rows[0]["report"]
        doc["plot"] = str(plot) if plot_cdf(curves, plot, f"{Path(str(cfg.clip)).name} {cfg.resolution} "
                                            f"{cfg.codec}, {r0['machine'].get('cpus')} CPUs, "
                                            f"{r0['date_utc'][:10]}") else None
    return doc


def format_matrix(doc: dict[str, Any]) -> str:
    """A Markdown table: one row per (sessions, faces)."""
    lines = ["| sessions × faces | fps out / session (min) | latency p50 / p95 ms | added p50 / p95 ms "
             "| restorations/s / session | age p50 / p95 ms | faces ≤ 50 ms old | faces unrestored |",
             "|---|---|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        rep = row["report"]
        e = rep.get("enhance")
        if not e:
            continue
        f = e.get("freshness") or {}
        rps = (f.get("restores_per_s") or 0.0) / max(1, row["sessions"])  # server-wide, measured window
        add = rep.get("added_latency_ms", {})
        share, unrestored = f.get("fresh_share"), f.get("unrestored_share")
        lines.append(
            f"| {row['sessions']} × {row['faces']} | {e['load']['fps_out_mean']:.1f} ({e['load']['fps_out_min']:.1f}) "
            f"| {e['latency_ms']['p50']:.0f} / {e['latency_ms']['p95']:.0f} "
            f"| {add.get('p50', float('nan')):+.0f} / {add.get('p95', float('nan')):+.0f} "
            f"| {rps:.1f} | {f.get('age_p50_ms')} / {f.get('age_p95_ms')} "
            f"| {'n/a' if share is None else f'{100 * share:.0f} %'} "
            f"| {'n/a' if unrestored is None else f'{100 * unrestored:.0f} %'} |")
    return "\n".join(lines)
