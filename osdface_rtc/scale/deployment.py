"""The restorer pool as a Ray Serve deployment.

Each replica loads one restorer (any ``--model``: a model folder, ``classical``, ``osdface:/dir``,
or ``py:module:factory`` for your own ``Restorer``), warms it up and serves

- HTTP (through Serve's proxy, what media servers use): see :mod:`osdface_rtc.restore.protocol`;
- a handle method ``restore_bytes(body, shape, budget_ms, client)`` for callers inside the
  Ray cluster (``serve.get_app_handle(app)``).

Both go through one :class:`~.batcher.DeadlineBatcher` per replica, so crops of different
media servers and calls are batched together. ``build_app(args)`` is the import path for
``serve run``/``serve deploy`` and KubeRay's RayService
(``import_path: osdface_rtc.scale.deployment:build_app``).
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from ray import serve

from ..restore.protocol import BUDGET, CLIENT, SHAPE, PoolBusy, decode_crops, parse_budget
from .batcher import BatcherConfig, DeadlineBatcher

log = logging.getLogger("osdface_rtc")


@dataclass
class PoolConfig:
    """One restorer deployment (one Serve application)."""

    model: str | None = None  # load_restorer spec (None = shipped model) or py:module:factory
    device: str = "auto"
    runtime: str = "auto"  # model folders: auto (OpenVINO on the CPU when installed) | torch | openvino
    torch_threads: int | None = None  # per replica (default on CPU: 1)
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_ongoing_requests: int = 64  # Serve's per-replica cap; the batcher's queue limit acts first
    batcher: BatcherConfig = field(default_factory=BatcherConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoolConfig":
        """From a dict (``asdict`` output, or ``serve run ... key=value`` strings: numbers are
        converted; ``batcher`` may be a dict or ``max_batch_faces=..`` etc. at the top level)."""
        d = dict(d)
        b = dict(d.pop("batcher", None) or {})
        for f in fields(BatcherConfig):
            if f.name in d:
                b[f.name] = d.pop(f.name)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown pool settings: {sorted(unknown)}")
        return cls(batcher=BatcherConfig(**_coerce(BatcherConfig, b)), **_coerce(cls, d))


def _coerce(cls, d: dict[str, Any]) -> dict[str, Any]:
    """Strings from a command line -> the field's type (int / float / None)."""
    kinds = {"int": int, "float": float, "int | None": int, "float | None": float}
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(v, str) and str(f.type) in kinds:
            v = None if v.lower() in ("", "none") else kinds[str(f.type)](v)
        out[f.name] = v
    return out


def make_restorer(spec: str | None, device: str = "auto", torch_threads: int | None = None,
                  runtime: str = "auto") -> Any:
    """``py:package.module:factory`` -> ``factory()``; anything else -> ``load_restorer(spec)``
    on ``runtime`` with the media server's CPU policy (1 torch thread on CPU unless
    ``torch_threads``)."""
    if spec and spec.startswith("py:"):
        mod, _, attr = spec[3:].partition(":")
        if not mod or not attr:
            raise ValueError(f"expected py:module:factory, got {spec!r}")
        return getattr(importlib.import_module(mod), attr)()
    from ..device import configure_cpu  # the media server's CPU thread policy
    from ..restorers import load_restorer

    configure_cpu(device, torch_threads)

    return load_restorer(spec, device=device, runtime=runtime)


class RestorerPool:
    """One replica: a restorer + a deadline-aware batcher (the Serve deployment's class)."""

    def __init__(self, config: dict[str, Any]):
        self.config = PoolConfig.from_dict(config)
        self.restorer = make_restorer(self.config.model, self.config.device, self.config.torch_threads,
                                      self.config.runtime)
        self.face_size = int(self.restorer.face_size)
        self.name = str(getattr(self.restorer, "name", type(self.restorer).__name__))
        warm = np.full((1, self.face_size, self.face_size, 3), 128, np.uint8)
        self.restorer.restore(warm)  # first call allocates / compiles: not on a live frame
        self.batcher = DeadlineBatcher(self.restorer.restore, self.config.batcher)
        log.info("restorer pool replica %d: %s, face size %d", os.getpid(), self.name, self.face_size)

    def info(self) -> dict[str, Any]:
        return {"face_size": self.face_size, "name": self.name, "replica": os.getpid()}

    def stats(self) -> dict[str, Any]:
        return {**self.info(), "queued_faces": self.batcher.queued_faces, **self.batcher.stats.as_dict(),
                "config": asdict(self.config)}

    async def restore_bytes(self, body: bytes, shape: str, budget_ms: float | None = None,
                            client: str = "?") -> bytes:
        """Handle API: raw crops in, raw restored crops out (raises PoolBusy / ValueError)."""
        crops = decode_crops(body, shape, self.face_size)
        out = await self.batcher.submit(crops, budget_ms, client)
        return np.ascontiguousarray(out, np.uint8).tobytes()

    async def __call__(self, request: Any) -> Any:
        """HTTP ingress (a Starlette request through Serve's proxy)."""
        from starlette.responses import JSONResponse, Response

        path = request.url.path.rstrip("/")
        if request.method == "GET":
            if path.endswith("/info"):
                return JSONResponse(self.info())
            if path.endswith("/stats"):
                return JSONResponse(self.stats())
            return JSONResponse({"error": "GET /info or /stats; POST crops"}, status_code=404)
        body = await request.body()
        h = request.headers
        try:
            out = await self.restore_bytes(body, h.get(SHAPE), parse_budget(h.get(BUDGET)),
                                           h.get(CLIENT, request.client.host if request.client else "?"))
        except PoolBusy as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # noqa: BLE001 - the restorer failed (e.g. CUDA OOM)
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return Response(out, media_type="application/octet-stream")


def deployment_for(config: PoolConfig):
    """The Serve deployment (class + options) for ``config``."""
    return serve.deployment(
        RestorerPool,
        name="RestorerPool",
        num_replicas=config.replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
    ).bind(asdict(config))


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run osdface_rtc.scale.deployment:build_app model=...``
    and RayService ``import_path`` (args: PoolConfig fields; ``batcher`` a dict)."""
    return deployment_for(PoolConfig.from_dict(args or {}))
