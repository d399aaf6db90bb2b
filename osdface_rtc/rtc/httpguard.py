"""Who may talk to the server over HTTP: Host and Origin checks, content type, body deadline.

- **Host** (DNS rebinding): a server bound to loopback answers only requests addressed to a
  loopback name (``localhost``, ``127.0.0.1``, ``[::1]``); one bound to a specific address also
  to that address; a wildcard bind (``0.0.0.0``/``::``) to any. ``allowed_hosts`` adds names
  (e.g. the public DNS name behind a proxy).
- **Origin** (other web pages): a request that carries an ``Origin`` header must come from the
  page's own origin (scheme://host:port equal to the request's ``Host``) or one of
  ``allowed_origins``; ``Origin: null`` is refused. Clients that send no Origin (curl, aiortc,
  the bench) are not browsers and are let through (the token is what stops them off loopback).
- ``POST /offer`` must be ``Content-Type: application/json`` (so a cross-site form or
  ``text/plain`` fetch cannot send one without a CORS preflight, which is never granted).
- A request body must arrive within ``body_timeout_s`` (slow-body clients lose the connection);
  its size is capped by the app (aiohttp's ``client_max_size``), answered here with 413.
- A connection must complete a request's headers within ``header_timeout_s`` of opening (or of
  the previous response), else it is closed: slow-header clients and idle keep-alive connections
  hold no socket for long (:func:`handler_args`: aiohttp's keep-alive timer, which runs from the
  connection's start and closes a connection whose request has not fully arrived).
"""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from .ice import is_loopback_host

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class HttpGuardConfig:
    allowed_hosts: list[str] = field(default_factory=list)  # extra Host names accepted
    allowed_origins: list[str] = field(default_factory=list)  # extra Origins, e.g. https://app.example.org
    body_timeout_s: float = 5.0
    header_timeout_s: float = 10.0  # request line + headers (and keep-alive idle time), seconds


def handler_args(config: HttpGuardConfig) -> dict:
    """Keyword arguments for ``web.run_app`` / ``web.AppRunner`` that enforce ``header_timeout_s``."""
    return {"keepalive_timeout": config.header_timeout_s}


def _split_host(host_header: str) -> str:
    """The host name of a ``Host`` header (port and IPv6 brackets removed), lowercase."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class HttpGuard:
    """The Host and Origin checks of a server bound to ``bind_host``."""

    def __init__(self, config: HttpGuardConfig, bind_host: str = "127.0.0.1"):
        self.config = config
        self.bind_host = bind_host
        self.allowed_origins = {o.rstrip("/").lower() for o in config.allowed_origins}

    def host_ok(self, host_header: str | None) -> bool:
        cfg = self.config
        if not host_header:
            return False
        host = _split_host(host_header)
        if host in {h.lower() for h in cfg.allowed_hosts}:
            return True
        if _is_wildcard(self.bind_host):
            return True
        if is_loopback_host(self.bind_host):
            return host in LOOPBACK_NAMES or is_loopback_host(host)
        return host == self.bind_host.lower() or host in LOOPBACK_NAMES

    def origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file://) and anything odd
        return parts.netloc == (request.host or "").lower()

    def reject_reason(self, request: web.Request) -> str | None:
        if not self.host_ok(request.host):
            return f"Host {request.host!r} not allowed (see --allow-host)"
        if not self.origin_ok(request):
            return f"Origin {request.headers.get('Origin')!r} not allowed (see --allow-origin)"
        return None


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body; raises :class:`BodyError` 413 when it is over the app's
    ``client_max_size``, 408 when it does not arrive within ``timeout_s`` seconds."""
    try:
        return await asyncio.wait_for(request.read(), timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(413, f"body too large (limit {request.client_max_size} bytes)") from None
    except asyncio.TimeoutError:
        raise BodyError(408, f"request body not received within {timeout_s:g} s") from None


class BodyError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason
