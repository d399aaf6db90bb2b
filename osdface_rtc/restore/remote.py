"""RemoteRestorer: the ``Restorer`` contract over a restorer pool (``restorer-serve``).

``load_restorer("ray://HOST:PORT/APP")`` (or ``"ray:APP"`` = ``ray://127.0.0.1:8000/APP``) returns
one. ``restore(crops)`` sends the crops to the pool's Serve HTTP proxy and returns the restored
crops, so ``EnhanceTrack`` (budget, re-warp fallback, error counting) works unchanged: every
failure is an exception *quickly*, which the track turns into a pass-through/re-warped frame.

- Pool busy (``503``: queue full, expired, no replica): :class:`~.protocol.PoolBusy` at once.
- Pool down (connection refused / reset / timeout): :class:`PoolUnavailable`; for the next
  ``retry_after_s`` every call fails at once without touching the network (no pile-up of
  connects while the pool is gone), then one call probes again — so calls resume by themselves
  when the pool returns.
- A hung pool costs at most ``timeout_s`` per call; the track stops waiting at its budget anyway.

Why HTTP through Serve's proxy rather than a Ray handle: a media server holding a handle must be
a Ray driver, and a driver fate-shares with its cluster (it terminates when it loses the GCS),
so "the pool died, calls fall back and resume when it returns" would be impossible. Over HTTP
media servers stay outside the Ray cluster (their own autoscaling, no Ray install needed at
runtime), and a request is bytes + integers, never pickle. Callers *inside* the cluster can use
the deployment's ``restore_bytes`` handle method instead (see
:mod:`osdface_rtc.scale.deployment`).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from .base import RestorerError, check_batch
from .protocol import BUDGET, CLIENT, SHAPE, PoolBusy, encode_shape

DEFAULT_HTTP_PORT = 8000


class PoolUnavailable(RuntimeError):
    """The restorer pool could not be reached (down, restarting, or hung)."""


def _default_client() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RemoteConfig:
    url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}/restorer"  # the pool's HTTP route
    budget_ms: float = 25.0  # sent with each request: the pool never holds it back longer
    timeout_s: float = 2.0  # longest wait for an answer
    connect_timeout_s: float = 0.5
    retry_after_s: float = 1.0  # after a failure, fail fast this long before probing again
    load_timeout_s: float = 30.0  # wait this long for the pool at load (GET /info)
    client: str = field(default_factory=_default_client)  # who we are in the pool's statistics


def parse_spec(spec: str) -> tuple[str, dict[str, float]]:
    """``ray://HOST[:PORT]/APP[?budget_ms=..&timeout_s=..]`` -> (``http://HOST:PORT/APP``, settings);
    ``ray:APP`` -> the local default proxy. Settings: the float fields of :class:`RemoteConfig`."""
    spec, _, query = spec.partition("?")
    settings: dict[str, float] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in _FLOAT_FIELDS:
            raise RestorerError(f"unknown pool setting {key!r} in {spec!r}; known: {sorted(_FLOAT_FIELDS)}")
        try:
            settings[key] = float(value)
        except ValueError:
            raise RestorerError(f"pool setting {key}={value!r} is not a number") from None
    return _parse_address(spec), settings


def _parse_address(spec: str) -> str:
    if spec.startswith("ray://"):
        parts = urlsplit("http://" + spec[len("ray://"):])
        app = parts.path.strip("/")
        if not parts.hostname or not app or "/" in app:
            raise RestorerError(f"expected ray://HOST:PORT/APP, got {spec!r}")
        return f"http://{parts.hostname}:{parts.port or DEFAULT_HTTP_PORT}/{app}"
    if spec.startswith("ray:"):
        app = spec[len("ray:"):].strip("/")
        if not app or "/" in app or ":" in app:
            raise RestorerError(f"expected ray:APP or ray://HOST:PORT/APP, got {spec!r}")
        return f"http://127.0.0.1:{DEFAULT_HTTP_PORT}/{app}"
    raise RestorerError(f"not a pool spec: {spec!r}")


_FLOAT_FIELDS = {"budget_ms", "timeout_s", "connect_timeout_s", "retry_after_s", "load_timeout_s"}


class RemoteRestorer:
    """Restores faces on a remote pool; see the module docstring for the failure behaviour."""

    steps = 1

    def __init__(self, config: RemoteConfig, info: dict | None = None):
        self.config = config
        u = urlsplit(config.url)
        if u.scheme != "http" or not u.hostname:
            raise RestorerError(f"pool url must be http://HOST:PORT/APP, got {config.url!r}")
        self._host, self._port, self._path = u.hostname, u.port or 80, u.path.rstrip("/") or "/"
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._down_until = 0.0
        self.calls = 0
        self.failures = 0  # unreachable / timed out
        self.busy = 0  # refused by the pool (503)
        self.last_ms = 0.0
        info = info if info is not None else self.wait_info(config.load_timeout_s)
        self.face_size = int(info["face_size"])
        self.name = f"pool:{info.get('name', '?')}"
        self.device = "remote"

    # -- Restorer -------------------------------------------------------------------------------
    def restore(self, faces: np.ndarray) -> np.ndarray:
        faces = check_batch(faces, self.face_size)
        if len(faces) == 0:
            return faces.copy()
        with self._lock:
            now = time.monotonic()
            if now < self._down_until:
                raise PoolUnavailable(f"restorer pool {self.config.url} unreachable; "
                                      f"next try in {self._down_until - now:.1f} s")
            self.calls += 1
            t0 = time.monotonic()
            headers = {SHAPE: encode_shape(faces.shape), BUDGET: f"{self.config.budget_ms:.1f}",
                       CLIENT: self.config.client, "Content-Type": "application/octet-stream"}
            try:
                status, body = self._request("POST", self._path, faces.tobytes(), headers)
            except (OSError, http.client.HTTPException) as exc:
                self._fail()
                raise PoolUnavailable(f"restorer pool {self.config.url}: {type(exc).__name__}: {exc}") from None
            self.last_ms = (time.monotonic() - t0) * 1e3
        if status == 200:
            if len(body) != faces.nbytes:
                raise PoolUnavailable(f"pool answered {len(body)} bytes for {faces.nbytes}")
            return np.frombuffer(body, np.uint8).reshape(faces.shape).copy()
        reason = _error_text(body)
        if status == 503:
            self.busy += 1
            raise PoolBusy(f"restorer pool busy: {reason}")
        raise PoolUnavailable(f"restorer pool answered HTTP {status}: {reason}")

    # -- pool info --------------------------------------------------------------------------------
    def info(self) -> dict:
        """``GET /APP/info`` (raises PoolUnavailable)."""
        return self._get_json("info")

    def stats(self) -> dict:
        """``GET /APP/stats``: batching statistics of the replica that answers."""
        return self._get_json("stats")

    def wait_info(self, timeout_s: float) -> dict:
        """Poll ``/info`` until the pool answers (RestorerError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while True:
            try:
                return self.info()
            except PoolUnavailable as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise RestorerError(f"restorer pool at {self.config.url} not reachable within "
                                    f"{timeout_s:.0f} s ({last}); start it with `osdface-rtc restorer-serve`")
            time.sleep(0.5)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- internals --------------------------------------------------------------------------------
    def _get_json(self, what: str) -> dict:
        with self._lock:
            try:
                status, body = self._request("GET", f"{self._path}/{what}", None, {})
            except (OSError, http.client.HTTPException) as exc:
                raise PoolUnavailable(f"restorer pool {self.config.url}: {type(exc).__name__}: {exc}") from None
        if status != 200:
            raise PoolUnavailable(f"restorer pool {self.config.url}/{what}: HTTP {status} {_error_text(body)}")
        return json.loads(body)

    def _request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        """One request on the kept-alive connection; one retry on a fresh connection when the
        kept one turns out closed (a pool restart closes idle connections)."""
        for attempt in (0, 1):
            fresh = self._conn is None
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                conn.sock.settimeout(self.config.timeout_s)
                r = conn.getresponse()
                data = r.read()
                if r.will_close:
                    self._drop()
                return r.status, data
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest):
                self._drop()
                if fresh or attempt:
                    raise
            except BaseException:
                self._drop()
                raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.config.connect_timeout_s)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _fail(self) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self.config.retry_after_s


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body[:200]))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def load_remote_restorer(spec: str, **kwargs) -> RemoteRestorer:
    """``ray://HOST:PORT/APP[?budget_ms=..]`` / ``ray:APP`` -> a connected :class:`RemoteRestorer`
    (waits for the pool up to ``load_timeout_s``; RestorerError when it does not answer).
    ``kwargs`` that name :class:`RemoteConfig` fields override the spec's settings; others
    (e.g. ``steps``, ``face_size`` meant for local models) are ignored."""
    url, settings = parse_spec(spec)
    settings.update({k: v for k, v in kwargs.items() if k in RemoteConfig.__dataclass_fields__ and k != "url"})
    return RemoteRestorer(RemoteConfig(url=url, **settings))
