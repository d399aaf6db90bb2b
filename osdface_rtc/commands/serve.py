"""`osdface-rtc serve`: the live enhancement server (web page + WebRTC + metrics)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("osdface_rtc")


#: Flags whose default is the config's (``ServerConfig`` and the configs it nests): absent from
#: ``args`` unless given, so each knob has its one default in its dataclass.
UNSET = argparse.SUPPRESS


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="live WebRTC face enhancement server with a web page",
        description="Serve the web page and enhance the video of every WebRTC call. Binds loopback by "
        "default; binding another address requires --token (checked on POST /offer). A default named "
        "like ServerConfig.port is that dataclass field's (osdface_rtc.rtc.server.ServerConfig and the "
        "configs it nests).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=UNSET, help="address to bind (default: loopback, ServerConfig.host)")
    p.add_argument("--port", type=int, default=UNSET, help="(default: ServerConfig.port)")
    p.add_argument("--model", default=None,
                   help="model folder, 'classical', 'identity' or 'osdface:/dir' (default: shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                   help="model runtime: auto = OpenVINO on the CPU when installed, else torch")
    p.add_argument("--budget-ms", type=float, default=UNSET,
                   help="longest wait for the restorer per frame; late frames get the last restored faces "
                   "(default: TrackConfig.budget_ms)")
    p.add_argument("--max-frame-pixels", type=int, default=UNSET,
                   help="larger peer frames are scaled down (aspect kept) before enhancement and sent "
                   "back at that size; 0 = no cap (default: TrackConfig.max_pixels, 1920x1080)")
    p.add_argument("--max-sessions", type=int, default=UNSET,
                   help="more concurrent calls get HTTP 503 (default: ServerConfig.max_sessions)")
    p.add_argument("--codec", choices=("vp8", "h264"), default=UNSET, help="codec of the enhanced video (default: SessionConfig.codec)")
    p.add_argument("--max-bitrate", type=int, default=None,
                   help="encoder bitrate cap in bits/s (aiortc defaults: VP8 1.5 Mbps, H.264 3 Mbps)")
    p.add_argument("--ice-server", action="append", default=UNSET, metavar="URL",
                   help="STUN/TURN server for use beyond loopback/LAN, repeatable: stun:host:3478, "
                   "turn:user:pass@host:3478[?transport=tcp], turns:user:pass@host:5349")
    p.add_argument("--token", default=None, help="shared secret required on /offer (needed off loopback)")
    p.add_argument("--tls-cert", type=Path, default=None,
                   help="serve https with this certificate (PEM); browsers need https for the camera off localhost")
    p.add_argument("--tls-key", type=Path, default=None, help="private key (PEM) for --tls-cert")
    p.add_argument("--strength", type=float, default=UNSET,
                   help="initial blend strength, 0..1 (default: EnhancerConfig.strength)")
    p.add_argument("--detector", choices=("auto", "short", "full", "both"), default=UNSET,
                   help="face detector; auto = short-range (webcam) first, full-range when it finds none "
                   "(default: rtc.session.live_enhancer())")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="CPU threads for the model (default on CPU: 1, so decode/detect/encode keep a core)")
    p.add_argument("--passthrough", action="store_true",
                   help="relay video unchanged (no model; the benchmark's baseline)")
    p.add_argument("--ice-interfaces", choices=("bind", "all"), default=UNSET,
                   help="ICE host candidates: only the bound address (127.0.0.1 on loopback; every "
                   "interface for 0.0.0.0) or every interface (default: ServerConfig.ice_interfaces)")
    p.add_argument("--ice-loopback", choices=("auto", "add", "only", "off"), default="auto",
                   help="override the host candidates: only/add 127.0.0.1 (auto: follow --ice-interfaces)")
    p.add_argument("--peer-timeout", type=float, default=UNSET,
                   help="seconds without video frames before a connected call is closed "
                   "(DataChannel messages do not count; default: SessionConfig.media_timeout_s)")
    p.add_argument("--connect-timeout", type=float, default=UNSET,
                   help="seconds an answered offer may take to connect before its slot is freed "
                   "(default: SessionConfig.connect_timeout_s)")
    p.add_argument("--max-video-tracks", type=int, default=UNSET,
                   help="video tracks accepted per call (default: OfferLimits.max_video_tracks)")
    p.add_argument("--allow-origin", action="append", default=UNSET, metavar="ORIGIN",
                   help="extra browser Origin allowed to call the API (the page's own origin always is), "
                   "e.g. https://app.example.org; repeatable")
    p.add_argument("--allow-host", action="append", default=UNSET, metavar="NAME",
                   help="extra Host name the server answers to (e.g. behind a proxy); repeatable")
    p.set_defaults(func=run)


def server_config(args: argparse.Namespace):
    """The :class:`ServerConfig` of the given flags; every flag not given keeps its config default."""
    from dataclasses import replace

    from ..rtc.server import ServerConfig

    def given(**flags: str) -> dict:  # config field -> flag dest, for the flags on the command line
        return {field: getattr(args, dest) for field, dest in flags.items() if hasattr(args, dest)}

    cfg = ServerConfig(max_bitrate=args.max_bitrate, token=args.token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                       **given(host="host", port="port", max_sessions="max_sessions", ice_interfaces="ice_interfaces"))
    s = cfg.session
    return replace(
        cfg,
        guard=replace(cfg.guard, **given(allowed_origins="allow_origin", allowed_hosts="allow_host")),
        session=replace(
            s, passthrough=args.passthrough,
            track=replace(s.track, **given(budget_ms="budget_ms", max_pixels="max_frame_pixels")),
            enhancer=replace(s.enhancer, **given(strength="strength", detector="detector")),
            offer_limits=replace(s.offer_limits, **given(max_video_tracks="max_video_tracks")),
            **given(codec="codec", ice_servers="ice_server", media_timeout_s="peer_timeout",
                    connect_timeout_s="connect_timeout")),
    )


def run(args: argparse.Namespace) -> int:
    from ..rtc.server import run_server

    cfg = server_config(args)
    try:
        cfg.validate()
        from ..rtc.ice import parse_ice_server

        for url in cfg.session.ice_servers:
            parse_ice_server(url)
    except ValueError as exc:
        print(f"osdface-rtc serve: {exc}")
        return 2
    restorer = None
    if not args.passthrough:
        from ..device import configure_cpu
        from ..restorers import load_restorer

        configure_cpu(args.device, args.torch_threads)
        try:
            restorer = load_restorer(args.model, device=args.device, runtime=args.runtime)
        except Exception as exc:  # noqa: BLE001 - one clear line, like `enhance`
            print(f"osdface-rtc serve: cannot load the restorer: {exc}")
            return 2
        log.info("restorer: %s (face size %d)", getattr(restorer, "name", "?"), restorer.face_size)
    run_server(cfg, restorer, loopback_candidates=args.ice_loopback)
    return 0
