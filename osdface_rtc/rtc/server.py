"""aiohttp app: the web page, WebRTC signalling and monitoring.

Endpoints
    ``GET  /``         the page (``web/index.html``; ``/static/*`` its JS/CSS)
    ``GET  /config``   ICE servers, codec, budget, whether a token is needed (for the page)
    ``POST /offer``    ``{"sdp": ..., "type": "offer"}`` -> ``{"sdp", "type": "answer", "session"}``;
                       400 with ``{"error": reason}`` for a bad offer, 401 bad/missing token,
                       413 for a body over ``max_offer_bytes``, 503 when ``max_sessions``
                       calls are running
    ``GET  /healthz``  ``{"status": "ok", "sessions": n, ...}``
    ``GET  /metrics``  Prometheus text format (sessions, frames, fallbacks, stage histograms)
    ``GET  /stats``    JSON stats of every open session (needs the token when one is set)

Public (no token even when one is set): the page and its static files, ``/config``,
``/healthz`` and ``/metrics`` (aggregate counters only, nothing per session: scrapers usually
cannot send a token). Token-protected: ``POST /offer`` and ``GET /stats`` (per-session data).
The token (``--token``) is accepted as ``Authorization: Bearer <token>``, an ``X-Token`` header,
a ``token`` field of the offer JSON or a ``?token=`` query parameter; it is never logged.

Every request first passes :mod:`.httpguard` (Host and Origin checks; ``POST /offer`` must be
``application/json`` and arrive within ``body_timeout_s``; request headers within
``header_timeout_s``, applied by :func:`run_server` or ``web.AppRunner(app,
**handler_args(config.guard))``). Request bodies are capped at
``max_offer_bytes`` by aiohttp (``client_max_size``). The offer JSON is parsed with a size and
nesting cap, the SDP checked by :mod:`.offer` (one video track per call by default).

Configuration: :class:`ServerConfig` holds what is the server's (address, call slots, token,
TLS) and nests the HTTP guard's (:class:`.httpguard.HttpGuardConfig`) and each call's
(:class:`.session.SessionConfig`, which nests the track's and the enhancer's), so every knob has
one default, in the config that uses it.
"""
from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from ..paths import WEB_DIR  # the page: web/ in a checkout, osdface_rtc/web in an installed wheel
from .httpguard import BodyError, HttpGuard, HttpGuardConfig, handler_args, read_body
from .ice import host_candidate_addresses, ice_servers_json, is_loopback_host, restrict_host_candidates
from .messages import MessageError, loads_limited
from .metrics import CONTENT_TYPE, ServerMetrics
from .session import OfferError, Session, SessionConfig

log = logging.getLogger(__name__)

#: ``app[SERVER_KEY]`` is the :class:`Server` behind an app made by :func:`create_app`.
SERVER_KEY: web.AppKey["Server"] = web.AppKey("osdface_server")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    max_bitrate: int | None = None  # bits/s cap of the encoder (process wide)
    token: str | None = None
    max_offer_bytes: int = 64 * 1024  # request body cap (aiohttp's client_max_size)
    ice_interfaces: str = "bind"  # host candidates: "bind" = the bound address only | "all"
    web_dir: Path = WEB_DIR
    tls_cert: Path | None = None  # browsers allow the camera only on https:// or localhost
    tls_key: Path | None = None
    guard: HttpGuardConfig = field(default_factory=HttpGuardConfig)  # Host/Origin, body deadline
    session: SessionConfig = field(default_factory=SessionConfig)  # every call's (track, enhancer)

    def validate(self) -> None:
        s = self.session
        if s.codec not in ("vp8", "h264"):
            raise ValueError(f"codec must be vp8 or h264, got {s.codec!r}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if not is_loopback_host(self.host) and not self.token:
            raise ValueError(f"binding to {self.host} (not loopback) requires --token")
        if s.offer_limits.max_video_tracks < 1:
            raise ValueError("max_video_tracks must be >= 1")
        if self.ice_interfaces not in ("bind", "all"):
            raise ValueError(f"ice_interfaces must be bind or all, got {self.ice_interfaces!r}")
        for name, value in (("media_timeout_s", s.media_timeout_s), ("connect_timeout_s", s.connect_timeout_s),
                            ("body_timeout_s", self.guard.body_timeout_s), ("message_rate", s.message_rate)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0")


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


class Server:
    """Holds the shared restorer, the open sessions and the metrics of one app."""

    def __init__(self, config: ServerConfig, restorer: Any | None):
        config.validate()
        if restorer is None and not config.session.passthrough:
            raise ValueError("a restorer is required unless passthrough=True")
        self.config = config
        self.restorer = restorer
        self.model_name = "passthrough" if config.session.passthrough else str(getattr(restorer, "name", "?"))
        self.metrics = ServerMetrics()
        self.guard = HttpGuard(config.guard, bind_host=config.host)
        if not config.session.passthrough:
            self._warm_up()
        self.sessions: dict[str, Session] = {}
        self._pending = 0
        set_max_bitrate(config.max_bitrate)

    def _warm_up(self) -> None:
        """Build and close one enhancer before the first call: the first import of the detector's
        modules keeps a traceback (and with it the caller's frame) forever, which would pin the
        first call's enhancer in memory; it also fails fast on a broken detector install."""
        from ..pipeline.enhancer import FaceEnhancer

        FaceEnhancer(restorer=self.restorer, config=self.config.session.enhancer).close()

    # -- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard_mw], client_max_size=self.config.max_offer_bytes)
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

    @web.middleware
    async def _guard_mw(self, request: web.Request, handler):
        reason = self.guard.reject_reason(request)
        if reason:
            self.metrics.http_rejected.labels(reason="host_origin").inc()
            return _error(403, reason)
        return await handler(request)

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
        s = self.config.session
        return web.json_response({
            "ice_servers": ice_servers_json(s.ice_servers),
            "codec": s.codec,
            "budget_ms": s.track.budget_ms,
            "token_required": bool(self.config.token),
            "passthrough": s.passthrough,
            "model": self.model_name,
        })

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions),
                                  "max_sessions": self.config.max_sessions, "model": self.model_name})

    async def metrics_text(self, request: web.Request) -> web.Response:
        self.metrics.sessions_active.set(len(self.sessions))
        for s in self.sessions.values():
            s._sync_counters()
        return web.Response(body=self.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def stats(self, request: web.Request) -> web.Response:
        if not self._token_ok(request, None):
            return _error(401, "missing or wrong token")
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
        if request.content_type != "application/json":
            m.http_rejected.labels(reason="content_type").inc()
            m.sessions_rejected.labels(reason="bad_offer").inc()
            return _error(415, f"Content-Type must be application/json, got {request.content_type!r}")
        try:
            body = await read_body(request, cfg.guard.body_timeout_s)
        except BodyError as exc:
            m.http_rejected.labels(reason="body").inc()
            m.sessions_rejected.labels(reason="bad_offer").inc()
            return _error(exc.status, f"offer {exc.reason}", **({"Connection": "close"} if exc.status == 408 else {}))
        params, parse_error = None, "body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}"
        try:
            params = loads_limited(body, cfg.max_offer_bytes, max_depth=8, what="offer")
        except MessageError as exc:
            parse_error = str(exc)
        if not self._token_ok(request, params if isinstance(params, dict) else None):
            m.sessions_rejected.labels(reason="auth").inc()
            return _error(401, "missing or wrong token")
        if not isinstance(params, dict):
            m.sessions_rejected.labels(reason="bad_offer").inc()
            return _error(400, parse_error)
        sdp, kind = params.get("sdp"), params.get("type")
        reason = None
        if kind != "offer":
            reason = "type must be 'offer'"
        elif not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0"):
            reason = "sdp missing or not an SDP session description"
        elif "m=video" not in sdp:
            reason = "offer has no video (m=video) section"
        if reason:
            m.sessions_rejected.labels(reason="bad_offer").inc()
            return _error(400, reason)
        if len(self.sessions) + self._pending >= cfg.max_sessions:
            m.sessions_rejected.labels(reason="full").inc()
            return _error(503, f"server full ({cfg.max_sessions} sessions)", **{"Retry-After": "5"})

        self._pending += 1
        session = Session(uuid.uuid4().hex[:12], self.restorer, cfg.session, m,
                          on_closed=self._session_closed, model_name=self.model_name)
        try:
            answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
        except OfferError as exc:
            await session.close("bad offer")
            m.sessions_rejected.labels(reason="bad_offer").inc()
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
    """Serve until interrupted; logs the URL to open (never the token).

    ICE host candidates: ``loopback_candidates="auto"`` follows ``config.ice_interfaces``
    (``"bind"``: only the bound address: 127.0.0.1 on loopback, that address on a specific one,
    every interface on a wildcard bind; ``"all"``: every interface). ``"only"`` forces 127.0.0.1,
    ``"add"`` adds 127.0.0.1 to every interface, ``"off"`` leaves aioice alone.
    """
    mode = loopback_candidates
    if mode == "auto":
        restrict_host_candidates(host_candidate_addresses(config.host, config.ice_interfaces))
    else:
        from .ice import use_loopback_candidates

        use_loopback_candidates(mode)  # type: ignore[arg-type]
    app = create_app(config, restorer)
    ssl_context = None
    if config.tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    url = f"{'https' if ssl_context else 'http'}://{host}:{config.port}/"
    note = ""
    if config.token:
        note = " (token required: open the page with ?token=<your token>)"
    elif not is_loopback_host(config.host):
        note = f" (bound to {config.host})"
    log.info("osdface-rtc serving on %s%s", url, note)
    if not ssl_context and not is_loopback_host(config.host):
        log.warning("browsers only give the page a camera on https:// or localhost; use --tls-cert/--tls-key")
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None, ssl_context=ssl_context,
                **handler_args(config.guard))
