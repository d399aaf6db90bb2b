"""ICE configuration: STUN/TURN servers from URLs, and loopback host candidates.

aioice never offers ``127.0.0.1`` as a host candidate, so on a machine whose only interface is
loopback (CI, a network namespace) nothing connects; and by default it offers *every* interface,
so a server bound to one address would still send media over the others.
:func:`restrict_host_candidates` (``serve`` uses it with :func:`host_candidate_addresses`) limits
the host candidates to the bound address: 127.0.0.1 for loopback, that address for a specific
one, every interface only for a wildcard bind or ``--ice-interfaces all``. :func:`use_loopback_candidates` patches
``aioice.ice.get_host_addresses`` (process wide): ``"only"`` gathers just 127.0.0.1 (tests,
bench), ``"add"`` offers it next to the real interfaces (the server bound to loopback, so a
browser on the same machine connects even without other interfaces).

ICE server URLs (``--ice-server``, repeatable)::

    stun:stun.example.org:3478
    turn:user:secret@turn.example.org:3478            (credentials before '@')
    turn:turn.example.org:3478?transport=tcp          (no credentials)
    turns:user:secret@turn.example.org:5349
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Callable, Literal

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

LOOPBACK = "127.0.0.1"

_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def use_loopback_candidates(mode: Literal["add", "only", "off"] = "only") -> None:
    """Make aioice gather 127.0.0.1 as a host candidate (see module doc). Idempotent."""
    if mode == "off":
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    if mode not in ("add", "only"):
        raise ValueError(f"mode must be add|only|off, got {mode!r}")

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if mode == "only":
            return [LOOPBACK] if use_ipv4 else []
        addrs = _original_get_host_addresses(use_ipv4, use_ipv6)
        return ([LOOPBACK] if use_ipv4 else []) + [a for a in addrs if a != LOOPBACK]

    aioice.ice.get_host_addresses = get_host_addresses


def host_candidate_addresses(bind_host: str, mode: str = "bind") -> list[str] | None:
    """The addresses to gather host candidates on for a server bound to ``bind_host``
    (None: every interface, aioice's default)."""
    if mode == "all":
        return None
    if mode != "bind":
        raise ValueError(f"ICE interfaces must be bind or all, got {mode!r}")
    if bind_host == "localhost" or is_loopback_host(bind_host):
        return [LOOPBACK if bind_host == "localhost" else bind_host]
    try:
        ip = ipaddress.ip_address(bind_host)
    except ValueError:  # a host name: every interface (it may resolve to any of them)
        return None
    return None if ip.is_unspecified else [str(ip)]


def restrict_host_candidates(addresses: Sequence[str] | None) -> None:
    """Gather host candidates only on ``addresses`` (None: every interface). Process wide."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    addrs = [str(a) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addrs if (ipaddress.ip_address(a).version == 4 and use_ipv4)
                or (ipaddress.ip_address(a).version == 6 and use_ipv6)]

    aioice.ice.get_host_addresses = get_host_addresses


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_ice_server(url: str) -> RTCIceServer:
    """Parse ``scheme:[user:pass@]host[:port][?query]`` into an :class:`RTCIceServer`."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ValueError(f"bad ICE server URL {url!r}: expected stun:|turn:|turns:[user:pass@]host[:port]")
    username = credential = None
    if "@" in rest:
        cred, _, rest = rest.rpartition("@")
        username, colon, credential = cred.partition(":")
        if not colon or not username:
            raise ValueError(f"bad ICE server URL {url!r}: credentials must be user:pass@")
    if not rest or rest.startswith((":", "?")):
        raise ValueError(f"bad ICE server URL {url!r}: no host")
    if scheme.startswith("turn") and username is None:
        raise ValueError(f"TURN server {url!r} needs credentials (turn:user:pass@host:port)")
    return RTCIceServer(urls=f"{scheme}:{rest}", username=username, credential=credential)


def rtc_configuration(urls: Sequence[str] = ()) -> RTCConfiguration:
    """An RTCConfiguration with exactly these ICE servers (none: host candidates only)."""
    return RTCConfiguration(iceServers=[parse_ice_server(u) for u in urls])


def ice_servers_json(urls: Sequence[str] = ()) -> list[dict]:
    """The same servers in the browser's RTCIceServer dictionary form."""
    out = []
    for u in urls:
        s = parse_ice_server(u)
        d: dict = {"urls": s.urls}
        if s.username:
            d.update(username=s.username, credential=s.credential)
        out.append(d)
    return out
