"""The live server's Prometheus metrics (``prometheus_client``), and reading them back.

:class:`ServerMetrics` holds every metric of one server in its own ``CollectorRegistry`` (so
several servers can run in one process, as in the tests); :meth:`ServerMetrics.render` is the
text of ``GET /metrics``. The metric names and labels are part of the public interface.
:func:`parse_prometheus` and :func:`histogram_quantile` read that text back (the bench, tests).
"""
from __future__ import annotations

import math

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: ``Content-Type`` of :meth:`ServerMetrics.render`'s text (the Prometheus text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Latency buckets in seconds (1 ms .. 2.5 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

#: Restoration age buckets in seconds (0 = restored on time; 50 ms = the live freshness goal).
AGE_BUCKETS = (0.0, 0.01, 0.02, 0.033, 0.05, 0.067, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class ServerMetrics:
    """The live server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("osdface_sessions_active", "Open WebRTC sessions", registry=r)
        self.sessions_total = Counter("osdface_sessions_total", "Sessions accepted", registry=r)
        self.sessions_rejected = Counter(
            "osdface_sessions_rejected_total", "Offers refused (reason: bad_offer|full|auth)", ["reason"], registry=r)
        self.frames_in = Counter("osdface_frames_in_total", "Video frames received from peers", registry=r)
        self.frames_out = Counter(
            "osdface_frames_out_total", "Video frames sent (outcome: enhanced|cached|original|noface|off|error)",
            ["outcome"], registry=r)
        self.frames_skipped = Counter(
            "osdface_frames_skipped_total", "Stale input frames replaced by a newer one before processing", registry=r)
        self.fallbacks = Counter(
            "osdface_fallbacks_total", "Frames whose restoration missed the deadline (kind: cached|original)",
            ["kind"], registry=r)
        self.errors = Counter("osdface_restore_errors_total", "Restorer exceptions (frame passed through)", registry=r)
        self.faces = Counter("osdface_faces_total", "Faces detected in sent frames", registry=r)
        self.stage_seconds = Histogram(
            "osdface_stage_seconds", "Per-stage processing time (stage: convert|detect|align|restore|wait|blend)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.frame_latency = Histogram(
            "osdface_frame_latency_seconds", "Server-side latency: frame received -> handed to the encoder",
            buckets=LATENCY_BUCKETS, registry=r)
        self.restorations = Counter(
            "osdface_restorations_total", "Restorer calls finished for a session (each restores all its faces)",
            registry=r)
        self.restoration_age = Histogram(
            "osdface_restoration_age_seconds",
            "Per face shown: its restoration's source frame -> the frame it is shown on (0 = on time)",
            buckets=AGE_BUCKETS, registry=r)
        self.faces_unrestored = Counter(
            "osdface_faces_unrestored_total", "Faces sent without any restoration (late, nothing recent cached)",
            registry=r)
        self.messages_rejected = Counter(
            "osdface_messages_rejected_total",
            "DataChannel messages or channels refused, or handler errors caught (reason: invalid|rate|channels|handler)",
            ["reason"], registry=r)
        self.http_rejected = Counter(
            "osdface_http_rejected_total", "HTTP requests refused by the guard (reason: host_origin|content_type|body)",
            ["reason"], registry=r)

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

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when it has none yet), e.g.
        ``value("osdface_sessions_rejected_total", reason="full")``."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> str:
        return generate_latest(self.registry).decode()


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
    """Every sample of a Prometheus text page as ``{'name{labels}': value}`` (for tests and the
    bench). The key lists the labels sorted by name, ``le`` last, e.g.
    ``osdface_stage_seconds_bucket{stage="detect",le="0.005"}``; no labels: just the name."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sorted((k, v) for k, v in sample.labels.items() if k != "le")
            if "le" in sample.labels:
                labels.append(("le", sample.labels["le"]))
            key = sample.name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")
            out[key] = float(sample.value)
    return out
