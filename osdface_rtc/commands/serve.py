"""`osdface-rtc serve`: the live enhancement server (web page + WebRTC + metrics)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("osdface_rtc")


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="live WebRTC face enhancement server with a web page",
        description="Serve the web page and enhance the video of every WebRTC call. Binds loopback by "
        "default; binding another address requires --token (checked on POST /offer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", default=None,
                   help="model folder, 'classical', 'identity' or 'osdface:/dir' (default: shipped model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default="auto",
                   help="model runtime: auto = OpenVINO on the CPU when installed, else torch")
    p.add_argument("--budget-ms", type=float, default=25.0,
                   help="longest wait for the restorer per frame; late frames get the last restored faces")
    p.add_argument("--max-sessions", type=int, default=4, help="more concurrent calls get HTTP 503")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8", help="codec of the enhanced video")
    p.add_argument("--max-bitrate", type=int, default=None,
                   help="encoder bitrate cap in bits/s (aiortc defaults: VP8 1.5 Mbps, H.264 3 Mbps)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for use beyond loopback/LAN, repeatable: stun:host:3478, "
                   "turn:user:pass@host:3478[?transport=tcp], turns:user:pass@host:5349")
    p.add_argument("--token", default=None, help="shared secret required on /offer (needed off loopback)")
    p.add_argument("--tls-cert", type=Path, default=None,
                   help="serve https with this certificate (PEM); browsers need https for the camera off localhost")
    p.add_argument("--tls-key", type=Path, default=None, help="private key (PEM) for --tls-cert")
    p.add_argument("--strength", type=float, default=1.0, help="initial blend strength (0..1)")
    p.add_argument("--detector", choices=("auto", "short", "full", "both"), default="auto",
                   help="face detector: auto = short-range (webcam) first, full-range when it finds none")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="CPU threads for the model (default on CPU: 1, so decode/detect/encode keep a core)")
    p.add_argument("--passthrough", action="store_true",
                   help="relay video unchanged (no model; the benchmark's baseline)")
    p.add_argument("--ice-interfaces", choices=("bind", "all"), default="bind",
                   help="ICE host candidates: only the bound address (127.0.0.1 on loopback; every "
                   "interface for 0.0.0.0) or every interface")
    p.add_argument("--ice-loopback", choices=("auto", "add", "only", "off"), default="auto",
                   help="override the host candidates: only/add 127.0.0.1 (auto: follow --ice-interfaces)")
    p.add_argument("--peer-timeout", type=float, default=5.0,
                   help="seconds without video frames before a connected call is closed "
                   "(DataChannel messages do not count)")
    p.add_argument("--connect-timeout", type=float, default=6.0,
                   help="seconds an answered offer may take to connect before its slot is freed")
    p.add_argument("--max-video-tracks", type=int, default=1, help="video tracks accepted per call")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="extra browser Origin allowed to call the API (the page's own origin always is), "
                   "e.g. https://app.example.org; repeatable")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="extra Host name the server answers to (e.g. behind a proxy); repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..rtc.server import ServerConfig, run_server

    cfg = ServerConfig(
        host=args.host, port=args.port, budget_ms=args.budget_ms, max_sessions=args.max_sessions,
        codec=args.codec, max_bitrate=args.max_bitrate, ice_servers=list(args.ice_server),
        token=args.token, passthrough=args.passthrough, strength=args.strength, detector=args.detector,
        peer_timeout_s=args.peer_timeout, tls_cert=args.tls_cert, tls_key=args.tls_key,
        connect_timeout_s=args.connect_timeout, max_video_tracks=args.max_video_tracks,
        allowed_origins=list(args.allow_origin), allowed_hosts=list(args.allow_host),
        ice_interfaces=args.ice_interfaces,
    )
    try:
        cfg.validate()
        from ..rtc.ice import parse_ice_server

        for url in cfg.ice_servers:
            parse_ice_server(url)
    except ValueError as exc:
        print(f"osdface-rtc serve: {exc}")
        return 2
    restorer = None
    if not args.passthrough:
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


def configure_cpu(device: str, torch_threads: int | None) -> None:
    """On a CPU-only run keep the model to one thread (it runs in a niced worker thread) and, on
    small hosts, OpenCV to the calling thread, so video work is never starved by restoration."""
    import os

    import cv2
    import torch

    from ..device import resolve_device

    if torch_threads:
        torch.set_num_threads(torch_threads)
    elif resolve_device(device).type == "cpu":
        torch.set_num_threads(1)
    if (os.cpu_count() or 1) <= 4:
        cv2.setNumThreads(1)
