"""End-to-end latency figures of streamed calls (:class:`.client.StreamResult`).

Every frame a client sent is matched by its id to its first arrival back; the measured window
starts ``warmup_s`` after the first send and ends ``tail_s`` before the call ends (frames sent
at the very end have no time to come back).

- :func:`latencies_ms`: receive - send of every matched frame of the window, ms.
- :func:`summarize`: one call's fps in/out, latency percentiles and drops.
- :func:`pooled`: one server mode's figures over its N concurrent calls.
- :func:`merge_sessions`: the report of one mode: :func:`summarize` for one call; totals,
  pooled latency and the mean fps per call for several (each call's figures in ``load``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .client import StreamResult


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _arrivals(result: StreamResult) -> dict[int, float]:
    arrivals: dict[int, float] = {}
    for fid, t in result.received:
        if fid is not None:
            arrivals.setdefault(fid, t)  # ids wrap after 2**16 frames (36 min at 30 fps)
    return arrivals


def _window(result: StreamResult, warmup_s: float, tail_s: float) -> tuple[float, float, dict[int, float]]:
    """(t0, t1, {id: send time}) of the frames sent in the measured window."""
    first_send = min(result.sent.values()) if result.sent else result.start
    t0, t1 = first_send + warmup_s, result.end - tail_s
    return t0, t1, {i: t for i, t in result.sent.items() if t0 <= t <= t1}


def latencies_ms(result: StreamResult, warmup_s: float, tail_s: float = 0.5) -> list[float]:
    """Per matched frame in the measured window: receive - send, ms (in send order)."""
    _, _, window = _window(result, warmup_s, tail_s)
    arrivals = _arrivals(result)
    return [(arrivals[i] - t) * 1e3 for i, t in sorted(window.items()) if i in arrivals]


def summarize(result: StreamResult, warmup_s: float = 3.0, tail_s: float = 0.5) -> dict[str, Any]:
    """fps delivered, latency percentiles and drops over the measured window (after warm-up)."""
    t0, t1, window = _window(result, warmup_s, tail_s)
    unreadable = sum(1 for fid, t in result.received if fid is None and t >= t0)
    in_order = latencies_ms(result, warmup_s, tail_s)
    lat = sorted(in_order)
    span = max(t1 - t0, 1e-6)  # the window of send times
    thirds = np.array_split(np.array(in_order), 3) if len(in_order) >= 3 else [np.array([np.nan])] * 3
    return {
        "frames_sent": len(window),
        "frames_matched": len(lat),
        "frames_dropped": len(window) - len(lat),
        "frames_unreadable": unreadable,
        "fps_in": round(len(window) / span, 2),
        "fps_out": round(len(lat) / span, 2),  # frames of the window that came back, per second
        "latency_ms": {
            "p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
            "p99": round(percentile(lat, 99), 1), "mean": round(float(np.mean(lat)), 1) if lat else None,
            "max": round(max(lat), 1) if lat else None,
        },
        "latency_p50_by_third_ms": [round(float(np.median(t)), 1) for t in thirds],
        "measured_s": round(span, 2),
    }


def pooled(summaries: list[dict[str, Any]], lat: list[list[float]], stats: list[list[dict]]) -> dict[str, Any]:
    """Figures of one server mode over its N sessions (per-session fps, pooled latency
    percentiles, per-session restoration age from the DataChannel stats)."""
    allv = [v for s in lat for v in s]
    per = []
    for s, st in zip(summaries, stats):
        last = st[-1] if st else {}
        per.append({"fps_out": s["fps_out"], "p50": s["latency_ms"]["p50"], "p95": s["latency_ms"]["p95"],
                    "dropped": s["frames_dropped"], "sent": s["frames_sent"],
                    "faces": last.get("faces"), "restores_per_s": last.get("restores_per_s"),
                    "age_p50_ms": last.get("age_p50_ms"), "age_p95_ms": last.get("age_p95_ms"),
                    "fresh_share": last.get("fresh_share")})
    return {
        "sessions": per,
        "fps_out_min": min((p["fps_out"] for p in per), default=0.0),
        "fps_out_mean": round(float(np.mean([p["fps_out"] for p in per])), 2) if per else 0.0,
        "latency_ms": {q: round(percentile(allv, float(q[1:])), 1) for q in ("p50", "p95", "p99")},
        "latencies_ms": [round(v, 1) for v in allv],
    }


def merge_sessions(results: list[StreamResult], warmup_s: float) -> dict[str, Any]:
    """One session: :func:`summarize`. Several: totals, latency pooled over all sessions, fps out
    the mean per session; each session's figures in ``load``."""
    summaries = [summarize(r, warmup_s) for r in results]
    load = pooled(summaries, [latencies_ms(r, warmup_s) for r in results], [r.stats for r in results])
    summary = dict(summaries[0])
    if len(results) > 1:
        lat = load["latencies_ms"]
        summary.update(
            {k: sum(s[k] for s in summaries) for k in ("frames_sent", "frames_matched", "frames_dropped",
                                                        "frames_unreadable")},
            fps_in=round(float(np.mean([s["fps_in"] for s in summaries])), 2),
            fps_out=load["fps_out_mean"],
            latency_ms={**load["latency_ms"], "mean": round(float(np.mean(lat)), 1) if lat else None,
                        "max": round(max(lat), 1) if lat else None},
        )
    summary["load"] = load
    return summary
