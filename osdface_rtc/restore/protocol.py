"""Wire format between a media server and the restorer pool (HTTP through Ray Serve's proxy).

``POST /<app>`` with the crops as raw bytes (C-order ``N x S x S x 3`` uint8 RGB) and headers

- ``X-Osdface-Shape: N,S,S,3``
- ``X-Osdface-Budget-Ms``: how long the caller will wait (the batcher never holds it longer)
- ``X-Osdface-Client``: who sent it (``host:pid`` of the media server; used for statistics)

Answers: ``200`` raw restored bytes (same shape); ``503`` JSON ``{"error"}`` when the pool is busy
(queue full, request expired, no replica) — fall back, don't retry this frame; ``400`` for a
malformed request; ``500`` when the restorer failed. ``GET /<app>/info`` gives
``{"face_size", "name", "replica"}``, ``GET /<app>/stats`` the replica's batching statistics.
No pickle anywhere: a request is bytes and integers, so a pool can be exposed to media servers
it does not trust with code. :class:`PoolBusy` is the pool's "503": raised by the batcher on the
server and re-raised by :class:`~.remote.RemoteRestorer` on the client.
"""
from __future__ import annotations

import numpy as np

SHAPE = "X-Osdface-Shape"
BUDGET = "X-Osdface-Budget-Ms"
CLIENT = "X-Osdface-Client"
MAX_FACES = 64  # per request


class PoolBusy(RuntimeError):
    """The pool refused a request (queue full or expired): fall back, do not retry now."""


def encode_shape(shape: tuple[int, ...]) -> str:
    return ",".join(str(int(v)) for v in shape)


def decode_crops(body: bytes, shape_header: str | None, face_size: int) -> np.ndarray:
    """Validate and view a request body as ``N x S x S x 3`` uint8 (ValueError when malformed)."""
    if not shape_header:
        raise ValueError(f"missing {SHAPE} header")
    try:
        shape = tuple(int(v) for v in shape_header.split(","))
    except ValueError:
        raise ValueError(f"bad {SHAPE} header {shape_header!r}") from None
    if len(shape) != 4 or shape[1:] != (face_size, face_size, 3) or not 0 <= shape[0] <= MAX_FACES:
        raise ValueError(f"expected N x {face_size} x {face_size} x 3 with N <= {MAX_FACES}, got {shape}")
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"body has {len(body)} bytes, shape {shape} needs {int(np.prod(shape))}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def parse_budget(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        b = float(value)
    except ValueError:
        return None
    return b if b == b and b >= 0 else None  # NaN / negative -> default
