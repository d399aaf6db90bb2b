"""Start or join Ray, bounded in time, and start Serve's HTTP proxy on a given address.

``address="local"`` starts a private single-node cluster bound to 127.0.0.1 (no dashboard, no
usage reporting, a small object store): what the tests, the benchmarks and a one-box setup use.
``"auto"`` or ``"HOST:PORT"`` joins an existing cluster (``ray start --head`` / KubeRay).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass


@dataclass
class ClusterConfig:
    address: str = "local"  # local | auto | HOST:PORT (GCS address of a running cluster)
    num_cpus: int | None = None  # local cluster only (None: Ray counts the CPUs)
    num_gpus: int | None = None  # local cluster only
    object_store_mb: int = 128  # local cluster only; crops travel as bytes, not objects
    start_timeout_s: float = 90.0
    http_host: str = "127.0.0.1"  # Serve's HTTP proxy (what media servers call)
    http_port: int = 8000


def quiet_ray_env() -> None:
    """No usage-stats reporting (it would try the internet), no log de-dup noise."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def init_ray(cfg: ClusterConfig) -> None:
    """``ray.init`` for ``cfg``; raises TimeoutError when Ray is not up within the limit."""
    import ray

    quiet_ray_env()
    if cfg.address == "local":
        kw = dict(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                  num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                  object_store_memory=cfg.object_store_mb * 1024 * 1024)
    else:
        kw = dict(address=cfg.address)
    with time_limit(cfg.start_timeout_s, f"Ray did not start within {cfg.start_timeout_s:.0f} s "
                    f"(address {cfg.address!r})"):
        ray.init(log_to_driver=False, **kw)


@contextlib.contextmanager
def time_limit(seconds: float, message: str):
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM). ``ray.init`` must run
    in the main thread (from another thread its first GCS call never returns), so the bound
    is a timer signal, not a watcher thread. Elsewhere than the main thread: no bound."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(message)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def start_serve(cfg: ClusterConfig) -> None:
    """Start Serve (controller + HTTP proxy on ``cfg.http_host:cfg.http_port``), bounded."""
    from ray import serve

    with time_limit(cfg.start_timeout_s, f"Serve did not start within {cfg.start_timeout_s:.0f} s"):
        serve.start(http_options={"host": cfg.http_host, "port": cfg.http_port})
