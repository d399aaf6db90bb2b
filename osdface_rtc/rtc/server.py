"""aiohttp app: the web page, WebRTC signalling and monitoring.

Endpoints
    ``GET  /``         the page (``web/index.html``; ``/static/*`` its JS/CSS)
    ``GET  /config``   ICE servers, codec, budget, whether a token is needed (for the page)
    ``POST /offer``    ``{"sdp": ..., "type": "offer"}`` -> ``{"sdp", "type": "answer", "session"}``;
                       400 with ``{"error": reason}`` for a bad offer, 401 bad/missing token,
                       503 when ``max_sessions`` calls are running
    ``GET  /healthz``  ``{"status": "ok", "sessions": n, ...}``
    ``GET  /metrics``  Prometheus text format (sessions, frames, fallbacks, stage histograms)
    ``GET  /stats``    JSON stats of every open session

The token (``--token``) is accepted as ``Authorization: Bearer <token>``, an ``X-Token`` header,
a ``token`` field of the offer JSON or a ``?token=`` query parameter.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from ..paths import REPO_ROOT
from .ice import ice_servers_json, is_loopback_host, use_loopback_candidates
from .metrics import ServerMetrics
from .session import OfferError, Session, SessionConfig

log = logging.getLogger(__name__)

#: The page's folder (``web/`` of the checkout; ``OSDFACE_RTC_WEB`` overrides it).
WEB_DIR = Path(os.environ.get("OSDFACE_RTC_WEB", REPO_ROOT / "web"))

#: ``app[SERVER_KEY]`` is the :class:`Server` behind an app made by :func:`create_app`.
SERVER_KEY: web.AppKey["Server"] = web.AppKey("osdface_server")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    budget_ms: float = 25.0
    max_sessions: int = 4
    codec: str = "vp8"  # vp8 | h264
    max_bitrate: int | None = None  # bits/s cap of the encoder (process wide)
    ice_servers: list[str] = field(default_factory=list)
    token: str | None = None
    passthrough: bool = False
    strength: float = 1.0
    detector: str = "auto"  # short | full | both | auto (see pipeline.detect)
    peer_timeout_s: float = 5.0
    connect_timeout_s: float = 15.0
    max_offer_bytes: int = 64 * 1024
    web_dir: Path = WEB_DIR
    tls_cert: Path | None = None  # browsers allow the camera only on https:// or localhost
    tls_key: Path | None = None

    def session_config(self) -> SessionConfig:
        return SessionConfig(budget_ms=self.budget_ms, codec=self.codec, ice_servers=list(self.ice_servers),
                             passthrough=self.passthrough, strength=self.strength, detector=self.detector,
                             peer_timeout_s=self.peer_timeout_s, connect_timeout_s=self.connect_timeout_s)

    def validate(self) -> None:
        if self.codec not in ("vp8", "h264"):
            raise ValueError(f"codec must be vp8 or h264, got {self.codec!r}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if not is_loopback_host(self.host) and not self.token:
            raise ValueError(f"binding to {self.host} (not loopback) requires --token")


def set_max_bitrate(bps: int | None) -> None:
    """Cap aiortc's VP8/H.264 encoder bitrate (module constants: applies to the whole process)."""
    if not bps:
        return
    from aiortc.codecs import h264, vpx

    for mod in (vpx, h264):
        mod.MAX_BITRATE = int(bps)
        mod.MIN_BITRATE = min(mod.MIN_BITRATE, int(bps))
        mod.DEFAULT_BITRATE = min(mod.DEFAULT_BITRATE, int(bps))


def _error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers or None)


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, total = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)


class Server:
    """Holds the shared restorer, the open sessions and the metrics of one app."""

    def __init__(self, config: ServerConfig, restorer: Any | None):
        config.validate()
        if restorer is None and not config.passthrough:
            raise ValueError("a restorer is required unless passthrough=True")
        self.config = config
        self.restorer = restorer
        self.model_name = "passthrough" if config.passthrough else str(getattr(restorer, "name", "?"))
        self.metrics = ServerMetrics()
        self.sessions: dict[str, Session] = {}
        self._pending = 0
        set_max_bitrate(config.max_bitrate)

    # -- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app[SERVER_KEY] = self
        app.router.add_get("/", self.index)
        app.router.add_get("/config", self.client_config)
        app.router.add_post("/offer", self.offer)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/stats", self.stats)
        if self.config.web_dir.is_dir():
            app.router.add_static("/static/", self.config.web_dir)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            await s.close("server shutdown")

    # -- handlers -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.config.web_dir / "index.html"
        if not page.is_file():
            return web.Response(status=404, text=f"web page not found at {page}")
        return web.FileResponse(page)

    async def client_config(self, request: web.Request) -> web.Response:
        return web.json_response({
            "ice_servers": ice_servers_json(self.config.ice_servers),
            "codec": self.config.codec,
            "budget_ms": self.config.budget_ms,
            "token_required": bool(self.config.token),
            "passthrough": self.config.passthrough,
            "model": self.model_name,
        })

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions),
                                  "max_sessions": self.config.max_sessions, "model": self.model_name})

    async def metrics_text(self, request: web.Request) -> web.Response:
        self.metrics.sessions_active.set(len(self.sessions))
        for s in self.sessions.values():
            s._sync_counters()
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({sid: s.stats_message() for sid, s in self.sessions.items()})

    def _token_ok(self, request: web.Request, params: dict | None) -> bool:
        want = self.config.token
        if not want:
            return True
        auth = request.headers.get("Authorization", "")
        candidates = [
            auth[7:] if auth.lower().startswith("bearer ") else "",
            request.headers.get("X-Token", ""),
            request.query.get("token", ""),
            str(params.get("token", "")) if params else "",
        ]
        return any(c and hmac.compare_digest(c.encode(), want.encode()) for c in candidates)

    async def offer(self, request: web.Request) -> web.Response:
        m = self.metrics
        cfg = self.config
        body = await _read_body(request, cfg.max_offer_bytes)
        if body is None:
            m.sessions_rejected.inc(reason="bad_offer")
            return _error(400, f"offer too large (limit {cfg.max_offer_bytes} bytes)")
        try:
            params = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            params = None
        if not self._token_ok(request, params if isinstance(params, dict) else None):
            m.sessions_rejected.inc(reason="auth")
            return _error(401, "missing or wrong token")
        if not isinstance(params, dict):
            m.sessions_rejected.inc(reason="bad_offer")
            return _error(400, "body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
        sdp, kind = params.get("sdp"), params.get("type")
        reason = None
        if kind != "offer":
            reason = "type must be 'offer'"
        elif not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0"):
            reason = "sdp missing or not an SDP session description"
        elif "m=video" not in sdp:
            reason = "offer has no video (m=video) section"
        if reason:
            m.sessions_rejected.inc(reason="bad_offer")
            return _error(400, reason)
        if len(self.sessions) + self._pending >= cfg.max_sessions:
            m.sessions_rejected.inc(reason="full")
            return _error(503, f"server full ({cfg.max_sessions} sessions)", **{"Retry-After": "5"})

        self._pending += 1
        session = Session(uuid.uuid4().hex[:12], self.restorer, cfg.session_config(), m,
                          on_closed=self._session_closed, model_name=self.model_name)
        try:
            answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
        except OfferError as exc:
            await session.close("bad offer")
            m.sessions_rejected.inc(reason="bad_offer")
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - never leak a half-open session
            await session.close("error")
            log.exception("offer failed")
            return _error(500, f"{type(exc).__name__}: {exc}")
        finally:
            self._pending -= 1
        if session.closed:
            return _error(400, "session closed during negotiation")
        self.sessions[session.id] = session
        m.sessions_total.inc()
        m.sessions_active.set(len(self.sessions))
        log.info("session %s opened (%d/%d)", session.id, len(self.sessions), cfg.max_sessions)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id})

    def _session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.metrics.sessions_active.set(len(self.sessions))


def create_app(config: ServerConfig, restorer: Any | None) -> web.Application:
    """The aiohttp application (``app[SERVER_KEY]`` is the :class:`Server`)."""
    return Server(config, restorer).app()


def run_server(config: ServerConfig, restorer: Any | None, loopback_candidates: str = "auto") -> None:
    """Serve until interrupted; prints the URL to open.

    ``loopback_candidates``: ``"auto"`` offers 127.0.0.1 as an ICE host candidate (next to the
    real interfaces) when bound to loopback; ``"only"``/``"add"``/``"off"`` force a mode.
    """
    mode = loopback_candidates
    if mode == "auto":
        mode = "add" if is_loopback_host(config.host) else "off"
    use_loopback_candidates(mode)  # type: ignore[arg-type]
    app = create_app(config, restorer)
    ssl_context = None
    if config.tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    url = f"{'https' if ssl_context else 'http'}://{host}:{config.port}/"
    if config.token:
        url += f"?token={config.token}"
    note = "" if is_loopback_host(config.host) else f" (bound to {config.host}: /offer requires the token)"
    print(f"osdface-rtc serving on {url}{note}", flush=True)
    if not ssl_context and not is_loopback_host(config.host):
        print("note: browsers only give the page a camera on https:// or localhost; use --tls-cert/--tls-key",
              flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None, ssl_context=ssl_context)
