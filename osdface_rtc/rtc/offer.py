"""Checks on an SDP offer before aiortc sees it: shape, line syntax, media-section caps.

Every failure is an :class:`OfferError` whose message is the reason the client gets with the
HTTP 400 (never empty).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


class OfferError(ValueError):
    """The offer cannot be answered (reason goes back to the client as HTTP 400)."""


@dataclass
class OfferLimits:
    max_video_tracks: int = 1  # video m-sections per call: each one is decoded
    max_media_sections: int = 4  # m-sections of any kind (video, audio, data)
    max_lines: int = 2000


_LINE = re.compile(r"^[a-z]=[^\x00]*$")
_MLINE = re.compile(r"^m=[a-z]+ \d+(/\d+)? \S+( \S+)+$")


def check_offer_sdp(sdp: str, limits: OfferLimits) -> None:
    """Raise :class:`OfferError` for an offer the server will not negotiate."""
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("sdp missing or not an SDP session description (must start with v=0)")
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if len(lines) > limits.max_lines:
        raise OfferError(f"invalid SDP offer: {len(lines)} lines (limit {limits.max_lines})")
    for n, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise OfferError(f"invalid SDP offer: line {n} {line[:40]!r} is not '<letter>=<value>'")
        if line.startswith("m=") and not _MLINE.match(line):
            raise OfferError(f"invalid SDP offer: line {n} {line[:40]!r} is not 'm=<media> <port> <proto> <formats>'")
    media = [ln.split()[0][2:] if len(ln) > 2 else "" for ln in lines if ln.startswith("m=")]
    videos = media.count("video")
    if videos == 0:
        raise OfferError("offer has no video (m=video) section")
    if videos > limits.max_video_tracks:
        raise OfferError(f"offer has {videos} video tracks; this server takes at most "
                         f"{limits.max_video_tracks} per call")
    if len(media) > limits.max_media_sections:
        raise OfferError(f"offer has {len(media)} media sections (limit {limits.max_media_sections})")


def describe(exc: BaseException) -> str:
    """A non-empty one-line reason for an exception aiortc raised while parsing an offer."""
    text = str(exc).strip()
    if isinstance(exc, KeyError):
        text = f"missing {text}" if text else ""
    name = type(exc).__name__
    return f"{name}: {text}"[:200] if text else f"{name} (the SDP is malformed)"
