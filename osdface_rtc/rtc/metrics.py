"""Minimal Prometheus text-format metrics (counters, gauges, histograms; no dependency)."""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence

#: Latency buckets in seconds (1 ms .. 2.5 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

#: Restoration age buckets in seconds (0 = restored on time; 50 ms = the live freshness goal).
AGE_BUCKETS = (0.0, 0.01, 0.02, 0.033, 0.05, 0.067, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    esc = lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in items) + "}"


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str):
        super().__init__(name, help)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items()) or [((), 0.0)]
        return self.header() + [f"{self.name}{_fmt_labels(k)} {_fmt_value(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS):
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            s = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
            s[-2] += value
            s[-1] += 1

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, s in items:
            for b, c in zip(self.buckets, s):
                lines.append(f"{self.name}_bucket{_fmt_labels(key, (('le', _fmt_value(b)),))} {_fmt_value(c)}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {_fmt_value(s[-2])}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {_fmt_value(s[-1])}")
        return lines


class Registry:
    """A set of metrics rendered together (one per server app, so tests can run several)."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def _add(self, m):
        self._metrics.append(m)
        return m

    def counter(self, name: str, help: str) -> Counter:
        return self._add(Counter(name, help))

    def gauge(self, name: str, help: str) -> Gauge:
        return self._add(Gauge(name, help))

    def histogram(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help, buckets))

    def render(self) -> str:
        return "\n".join(line for m in self._metrics for line in m.render()) + "\n"


class ServerMetrics:
    """The live server's metrics (names are part of the public interface)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.sessions_active = r.gauge("osdface_sessions_active", "Open WebRTC sessions")
        self.sessions_total = r.counter("osdface_sessions_total", "Sessions accepted")
        self.sessions_rejected = r.counter(
            "osdface_sessions_rejected_total", "Offers refused (reason: bad_offer|full|auth)")
        self.frames_in = r.counter("osdface_frames_in_total", "Video frames received from peers")
        self.frames_out = r.counter(
            "osdface_frames_out_total", "Video frames sent (outcome: enhanced|cached|original|noface|off|error)")
        self.frames_skipped = r.counter(
            "osdface_frames_skipped_total", "Stale input frames replaced by a newer one before processing")
        self.fallbacks = r.counter(
            "osdface_fallbacks_total", "Frames whose restoration missed the deadline (kind: cached|original)")
        self.errors = r.counter("osdface_restore_errors_total", "Restorer exceptions (frame passed through)")
        self.faces = r.counter("osdface_faces_total", "Faces detected in sent frames")
        self.stage_seconds = r.histogram(
            "osdface_stage_seconds", "Per-stage processing time (stage: convert|detect|align|restore|wait|blend)")
        self.frame_latency = r.histogram(
            "osdface_frame_latency_seconds", "Server-side latency: frame received -> handed to the encoder")
        self.restorations = r.counter(
            "osdface_restorations_total", "Restorer calls finished for a session (each restores all its faces)")
        self.restoration_age = r.histogram(
            "osdface_restoration_age_seconds",
            "Per face shown: its restoration's source frame -> the frame it is shown on (0 = on time)",
            AGE_BUCKETS)
        self.faces_unrestored = r.counter(
            "osdface_faces_unrestored_total", "Faces sent without any restoration (late, nothing recent cached)")

    def observe_freshness(self, report) -> None:
        """Count one sent frame's restorations and face ages (a track ``FrameReport``)."""
        self.restorations.inc(len(report.restores_ms))
        if report.outcome == "off":
            return
        shown = min(report.restored_faces, report.faces) if report.age_ms is not None else 0
        for _ in range(shown):
            self.restoration_age.observe(max(0.0, report.age_ms) / 1e3)
        if report.faces > shown:
            self.faces_unrestored.inc(report.faces - shown)

    def render(self) -> str:
        return self.registry.render()


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """Quantile ``q`` (0..1) of a parsed histogram (all label sets summed), interpolated
    linearly inside the bucket like Prometheus' ``histogram_quantile``; None when empty."""
    buckets: dict[float, float] = {}
    for key, v in metrics.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="')[1].split('"')[0]
            b = math.inf if le == "+Inf" else float(le)
            buckets[b] = buckets.get(b, 0.0) + v
    if not buckets or buckets.get(math.inf, 0.0) <= 0:
        return None
    edges = sorted(buckets)
    rank = q * buckets[math.inf]
    prev_edge, prev_count = 0.0, 0.0
    for e in edges:
        c = buckets[e]
        if c >= rank:
            if math.isinf(e):
                return prev_edge
            if c == prev_count:
                return e
            return prev_edge + (e - prev_edge) * (rank - prev_count) / (c - prev_count)
        prev_edge, prev_count = e, c
    return edges[-2] if len(edges) > 1 else None


def parse_prometheus(text: str) -> dict[str, float]:
    """Parse sample lines into {'name{labels}': value} (for tests and the bench)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        out[key] = float(val)
    return out
