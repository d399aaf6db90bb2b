"""What a video call does to whole frames: downscale, real-time VP8/H.264 at a call bitrate, upscale.

A call does not degrade a face crop; it shrinks the **whole frame** (the sender's encoder drops
resolution when bandwidth is low), encodes it as a stream with inter-frame prediction at a low
bitrate, and the receiver scales the decoded frame back up to the display size. This module
does exactly that to a sequence of frames, with the encoder settings WebRTC senders use:

- VP8: libvpx ``deadline=realtime``, ``cpu-used=-6``, one-pass CBR (``minrate = maxrate =
  bitrate``), 1 s rate buffer, ``lag-in-frames=0``, quantizer 2..56, no keyframes after the
  first (aiortc's ``Vp8Encoder`` settings, without its 250 kbps floor: congested calls go lower).
- H.264: libx264 ``tune=zerolatency``, Baseline profile, the bitrate as ABR with a 1 s VBV
  buffer (aiortc's ``H264Encoder`` settings plus the VBV cap browsers apply).

Encoders run single-threaded, so a given input always gives the same output.
:class:`CallDamage` is one condition; :data:`PRESETS` are the named conditions used by the
live-path evaluation and training (``x3-vp8-120k`` = ×3 smaller, VP8 at 120 kbit/s).
"""
from __future__ import annotations

import fractions
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

CODECS = ("vp8", "h264")
_ENCODER = {"vp8": "libvpx", "h264": "libx264"}


@dataclass(frozen=True)
class CallDamage:
    """One call condition: the sender's downscale, codec and bitrate; the receiver's upscale."""

    scale: float = 3.0  # the sent frame is 1/scale of the captured one (each side)
    codec: str = "vp8"
    kbps: float = 120.0  # target bitrate, kbit/s
    fps: float = 30.0
    up_interp: int = cv2.INTER_LINEAR  # how the receiver scales the decoded frame back up

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if not self.scale >= 1.0 or not self.kbps > 0 or not self.fps > 0:
            raise ValueError(f"need scale >= 1, kbps > 0, fps > 0: {self}")

    @property
    def name(self) -> str:
        s = f"{self.scale:g}".replace(".", "p")
        return f"x{s}-{self.codec}-{self.kbps:g}k"

    def sent_size(self, width: int, height: int) -> tuple[int, int]:
        """Size of the encoded frame: 1/scale of the input, even sides (4:2:0), at least 16 px."""
        def side(n: int) -> int:
            return max(16, 2 * int(round(n / self.scale / 2)))
        return side(width), side(height)


#: Named conditions: a good call, a poor one, a bad one, for each codec.
PRESETS: dict[str, CallDamage] = {
    d.name: d
    for codec, rates in (("vp8", (300, 120, 80)), ("h264", (300, 150, 80)))
    for d in (CallDamage(s, codec, k) for s, k in zip((2.0, 3.0, 4.0), rates))
}

#: The headline conditions of the live-path evaluation.
DEFAULT_CONDITIONS: tuple[str, ...] = ("x2-vp8-300k", "x3-vp8-120k", "x4-vp8-80k", "x3-h264-150k")

_NAME = re.compile(r"^x(?P<scale>\d+(?:[.p]\d+)?)-(?P<codec>vp8|h264)-(?P<kbps>\d+(?:\.\d+)?)k$")


def parse_damage(text: str) -> CallDamage:
    """A preset name or any ``x<scale>-<codec>-<kbps>k`` string (e.g. ``x2.5-h264-200k``)."""
    if text in PRESETS:
        return PRESETS[text]
    m = _NAME.match(text.strip())
    if not m:
        raise ValueError(f"call condition {text!r}: expected x<scale>-<vp8|h264>-<kbps>k, "
                         f"e.g. {', '.join(PRESETS)}")
    return CallDamage(float(m["scale"].replace("p", ".")), m["codec"], float(m["kbps"]))


def _encoder(d: CallDamage, width: int, height: int) -> av.VideoCodecContext:
    cc = av.CodecContext.create(_ENCODER[d.codec], "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    rate = fractions.Fraction(d.fps).limit_denominator(1001)
    cc.framerate, cc.time_base = rate, 1 / rate
    cc.bit_rate = int(d.kbps * 1000)
    cc.thread_count = 1
    if d.codec == "vp8":
        cc.gop_size = 3000
        cc.qmin, cc.qmax = 2, 56
        cc.options = {
            "bufsize": str(cc.bit_rate), "cpu-used": "-6", "deadline": "realtime",
            "lag-in-frames": "0", "minrate": str(cc.bit_rate), "maxrate": str(cc.bit_rate),
            "noise-sensitivity": "4", "overshoot-pct": "15", "undershoot-pct": "100",
            "static-thresh": "1", "partitions": "0",
        }
    else:
        cc.gop_size = 3000
        cc.profile = "Baseline"
        cc.options = {"tune": "zerolatency", "level": "31", "preset": "veryfast",
                      "maxrate": str(cc.bit_rate), "bufsize": str(cc.bit_rate)}
    return cc


def damage_frames(frames: Iterable[np.ndarray], damage: CallDamage,
                  stats: dict | None = None) -> Iterator[np.ndarray]:
    """Send ``frames`` (H×W×3 uint8 RGB, one size) through the call; yield what the receiver shows.

    One output frame per input frame, same size. ``stats`` (optional) receives ``bytes`` (the
    encoded size of each frame) and ``sent_size``.
    """
    enc = dec = None
    size = shape = None
    sizes: list[int] = []
    for k, img in enumerate(frames):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected H x W x 3 uint8 frames, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        if enc is None:
            shape, size = (w, h), damage.sent_size(w, h)
            enc, dec = _encoder(damage, *size), av.CodecContext.create(damage.codec, "r")
            dec.thread_count = 1
        elif (w, h) != shape:
            raise ValueError(f"frame {k} is {w}x{h}, earlier frames were {shape[0]}x{shape[1]}")
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if size != (w, h) else img
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24")
        vf.pts = k
        packets = enc.encode(vf)
        sizes.append(sum(p.size for p in packets))
        decoded = [f for p in packets for f in dec.decode(p)]
        if not decoded:  # zerolatency / lag-in-frames 0 emit one packet per frame
            raise RuntimeError(f"{damage.codec} encoder held frame {k} back")
        out = decoded[-1].to_ndarray(format="rgb24")
        yield cv2.resize(out, (w, h), interpolation=damage.up_interp) if out.shape[:2] != (h, w) else out
    if stats is not None:
        stats.update(bytes=sizes, sent_size=size)


def damage_clip(frames: list[np.ndarray], damage: CallDamage, stats: dict | None = None) -> list[np.ndarray]:
    """:func:`damage_frames` as a list."""
    return list(damage_frames(frames, damage, stats))
