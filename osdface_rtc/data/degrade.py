"""What a video call does to a face: a seeded, documented degradation model.

One degradation is a :class:`DegradeParams` recipe applied in capture order::

    colour/exposure -> optical blur (Gaussian or motion) -> downscale xk (the face is small in
    the frame / the sender lowered the resolution) -> sensor noise (Gaussian read noise +
    signal-dependent "Poisson-ish" shot noise) -> compression (real VP8 or H.264 through PyAV,
    or JPEG) at the small size -> upscale back to S (what the receiver's aligner does)

``degrade(hq, rng)`` draws a random recipe from :class:`DegradeConfig` (the training mix);
``degrade(hq, rng, level="mild" | "medium" | "severe")`` uses the fixed eval presets in
:data:`PRESETS` (codec included; only the noise field, motion direction and codec motion are
drawn from ``rng``, so a given seed always gives the same image).

Codec: the face (at its downscaled size, even dimensions, at least 16 px) is encoded as a short
clip of ``codec_frames`` frames that drift by a fraction of a pixel per frame towards the true
position (a talking head never stands still), with libvpx (VP8) or libx264 (H.264, zerolatency,
like WebRTC) at a fixed quantizer, single-threaded (deterministic). The last, inter-coded frame
is decoded and returned: that is the frame a receiver actually shows between keyframes. Fixed
quantizers are used instead of a bitrate target because rate control does not converge in a
few frames; measured on 128^2 UTKFace faces, the inter frames cost (bits per pixel):
VP8 q 30 / 45 / 56 -> 0.11 / 0.057 / 0.035 bpp, H.264 QP 30 / 36 / 42 -> 0.043 / 0.028 /
0.023 bpp, i.e. 0.2-1.0 Mbit/s for a whole 640x480 frame at 30 fps -- the range WebRTC calls
run at (aiortc caps VP8 at 1.5 Mbit/s; congested calls go lower).

:func:`degrade_level` gives the fixed eval input of a face array at a level (the same for every
caller: ``osdface-rtc eval``, the trainer's validation, the pack). The multi-process, cached
pool of training variants is :func:`osdface_rtc.data.pool.build_lq_pool`.
"""
from __future__ import annotations

import fractions
import math
from dataclasses import dataclass
from typing import Literal

import av
import cv2
import numpy as np

Codec = Literal["vp8", "h264"]
LEVELS: tuple[str, ...] = ("mild", "medium", "severe")

#: PyAV encoder names per codec.
ENCODERS: dict[str, str] = {"vp8": "libvpx", "h264": "libx264"}



@dataclass(frozen=True)
class DegradeParams:
    """One concrete degradation recipe (all fields fixed; randomness only in noise/motion)."""

    gamma: float = 1.0  # out = in ** gamma (in [0,1]); >1 darkens mid-tones
    brightness: float = 0.0  # added, in 0..255 units
    contrast: float = 1.0  # around mid-grey
    wb_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel RGB gains
    blur_sigma: float = 0.0  # Gaussian blur sigma (px at the HQ size); 0 = none
    motion_len: int = 0  # motion-blur line length (px at the HQ size); 0 = none
    scale: float = 1.0  # downscale factor (1 = none)
    noise_sigma: float = 0.0  # Gaussian read noise (0..255 units, at the small size)
    shot_noise: float = 0.0  # signal-dependent noise: std = sqrt(shot_noise * value)
    codec: Codec | None = None  # real video codec
    quantizer: int = 30  # VP8 quantizer 0..63 / H.264 QP 0..51
    codec_frames: int = 3  # clip length; the last (inter-coded) frame is returned
    codec_motion: float = 0.7  # per-frame drift (px) of the earlier frames in the clip
    jpeg_quality: int | None = None  # JPEG instead of a codec (None = none)
    up_interp: int = cv2.INTER_LANCZOS4  # the live aligner upsamples with Lanczos


#: Fixed eval presets. On 200 val faces at 128^2 (face-region PSNR / dlib identity distance):
#: mild 31.8 dB / 0.20, medium 25.6 dB / 0.39, severe 22.5 dB / 0.53 (0.6 = other person).
PRESETS: dict[str, DegradeParams] = {
    # a good call: slight softness, 1.5x smaller face, light noise, VP8 at ~0.1 bpp
    "mild": DegradeParams(blur_sigma=0.6, scale=1.5, noise_sigma=2.0, codec="vp8", quantizer=30),
    # a typical laptop call: soft focus, 2.5x smaller, visible noise, H.264 at QP 36
    "medium": DegradeParams(
        gamma=1.08, blur_sigma=1.0, scale=2.5, noise_sigma=4.0, shot_noise=0.1,
        codec="h264", quantizer=36,
    ),
    # a bad call: dim room, motion blur, 3.5x smaller face, strong noise, VP8 at a high quantizer
    "severe": DegradeParams(
        gamma=1.12, blur_sigma=0.8, motion_len=5, scale=3.5, noise_sigma=6.0, shot_noise=0.3,
        codec="vp8", quantizer=50,
    ),
}


@dataclass(frozen=True)
class DegradeConfig:
    """The random training mix: probabilities and ranges each recipe is drawn from."""

    p_colour: float = 0.3
    gamma: tuple[float, float] = (0.8, 1.25)
    brightness: tuple[float, float] = (-15.0, 15.0)
    contrast: tuple[float, float] = (0.85, 1.15)
    wb_gain: tuple[float, float] = (0.93, 1.07)
    p_blur: float = 0.7
    p_motion: float = 0.2  # share of blurs that are motion blur
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    motion_len: tuple[int, int] = (3, 9)
    p_scale: float = 0.9
    scale: tuple[float, float] = (1.0, 8.0)  # drawn log-uniformly
    p_noise: float = 0.6
    noise_sigma: tuple[float, float] = (0.0, 10.0)
    p_shot: float = 0.3
    shot_noise: tuple[float, float] = (0.0, 0.5)
    p_codec: float = 0.7
    p_vp8: float = 0.5  # else H.264
    vp8_quantizer: tuple[int, int] = (4, 60)
    h264_quantizer: tuple[int, int] = (18, 46)
    codec_motion: tuple[float, float] = (0.0, 1.5)
    p_jpeg: float = 0.25  # only when no codec was drawn
    jpeg_quality: tuple[int, int] = (25, 95)


def sample_params(rng: np.random.Generator, cfg: DegradeConfig | None = None) -> DegradeParams:
    """Draw one training recipe from ``cfg`` (the random training mix)."""
    c = cfg or DegradeConfig()
    u = rng.uniform
    p: dict = {}
    if rng.random() < c.p_colour:
        p.update(gamma=u(*c.gamma), brightness=u(*c.brightness), contrast=u(*c.contrast),
                 wb_gains=tuple(float(g) for g in u(*c.wb_gain, size=3)))
    if rng.random() < c.p_blur:
        if rng.random() < c.p_motion:
            p["motion_len"] = int(rng.integers(c.motion_len[0], c.motion_len[1] + 1))
        else:
            p["blur_sigma"] = u(*c.blur_sigma)
    if rng.random() < c.p_scale:
        p["scale"] = math.exp(u(math.log(c.scale[0]), math.log(c.scale[1])))
    if rng.random() < c.p_noise:
        p["noise_sigma"] = u(*c.noise_sigma)
        if rng.random() < c.p_shot:
            p["shot_noise"] = u(*c.shot_noise)
    if rng.random() < c.p_codec:
        vp8 = rng.random() < c.p_vp8
        lo, hi = c.vp8_quantizer if vp8 else c.h264_quantizer
        p.update(codec="vp8" if vp8 else "h264", quantizer=int(rng.integers(lo, hi + 1)),
                 codec_motion=u(*c.codec_motion))
    elif rng.random() < c.p_jpeg:
        p["jpeg_quality"] = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1))
    p["up_interp"] = int(rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4]))
    return DegradeParams(**{k: (float(v) if isinstance(v, np.floating) else v) for k, v in p.items()})


def degrade(
    hq: np.ndarray,
    rng: np.random.Generator,
    level: str | None = None,
    cfg: DegradeConfig | None = None,
) -> np.ndarray:
    """Degrade one ``S x S x 3`` uint8 RGB face; ``level`` None = training mix, else a preset."""
    if hq.ndim != 3 or hq.shape[2] != 3 or hq.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {hq.shape} {hq.dtype}")
    if level is None:
        params = sample_params(rng, cfg)
    elif level in PRESETS:
        params = PRESETS[level]
    else:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS} or None")
    return apply_params(hq, params, rng)


def degrade_level(hq: np.ndarray, level: str, seed: int) -> np.ndarray:
    """The fixed eval degradation of every face of ``hq`` (``N x S x S x 3``) at ``level``.

    Face ``i`` uses ``default_rng([seed, LEVELS.index(level), i])``: the same input whichever
    levels are run and whoever asks.
    """
    k = LEVELS.index(level)
    return np.stack([degrade(f, np.random.default_rng([seed, k, i]), level) for i, f in enumerate(hq)])


def apply_params(hq: np.ndarray, p: DegradeParams, rng: np.random.Generator) -> np.ndarray:
    """Apply one recipe (see the module docstring for the order)."""
    h, w = hq.shape[:2]
    x = colour_shift(hq.astype(np.float32), p)
    if p.blur_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), p.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if p.motion_len > 1:
        x = cv2.filter2D(x, -1, motion_kernel(p.motion_len, rng.uniform(0, 180)),
                         borderType=cv2.BORDER_REFLECT)
    sw, sh = small_size(w, p.scale), small_size(h, p.scale)
    if (sw, sh) != (w, h):
        x = cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)
    x = add_noise(x, p.noise_sigma, p.shot_noise, rng)
    small = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if p.codec is not None:
        small = codec_roundtrip(small, p.codec, p.quantizer, p.codec_frames,
                                p.codec_motion, rng)
    elif p.jpeg_quality is not None:
        small = jpeg_roundtrip(small, p.jpeg_quality)
    if small.shape[:2] != (h, w):
        small = cv2.resize(small, (w, h), interpolation=p.up_interp)
    return np.ascontiguousarray(small)


def small_size(n: int, scale: float) -> int:
    """Side length after downscaling by ``scale``: even (4:2:0 codecs) and at least 16 px."""
    if scale <= 1.0:
        return n
    return max(16, 2 * round(n / scale / 2))


def colour_shift(x: np.ndarray, p: DegradeParams) -> np.ndarray:
    """Exposure / white-balance change on a float image in 0..255."""
    if p.gamma == 1.0 and p.brightness == 0.0 and p.contrast == 1.0 and p.wb_gains == (1, 1, 1):
        return x
    x = x * np.asarray(p.wb_gains, np.float32)
    x = 255.0 * np.power(np.clip(x / 255.0, 0, 1), p.gamma)
    x = (x - 128.0) * p.contrast + 128.0 + p.brightness
    return np.clip(x, 0, 255).astype(np.float32)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of ``length`` px at ``angle_deg`` (camera shake / head motion)."""
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (length, length), flags=cv2.INTER_LINEAR)
    return k / max(float(k.sum()), 1e-6)


def add_noise(x: np.ndarray, sigma: float, shot: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian read noise (``sigma``) + shot noise with variance ``shot * value`` (Poisson-like)."""
    if sigma <= 0 and shot <= 0:
        return x
    std = np.sqrt(sigma**2 + shot * np.clip(x, 0, 255))
    return x + std * rng.standard_normal(x.shape, dtype=np.float32)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode an RGB uint8 image as JPEG at ``quality``."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _encoder(codec: Codec, width: int, height: int, quantizer: int) -> av.CodecContext:
    cc = av.CodecContext.create(ENCODERS[codec], "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    cc.time_base = fractions.Fraction(1, 30)
    cc.framerate = 30
    cc.thread_count = 1  # deterministic output, and kind to a shared 2-core box
    cc.gop_size = 300
    if codec == "vp8":
        cc.bit_rate = 50_000_000  # not binding: qmin = qmax pins the quantizer
        q = str(int(np.clip(quantizer, 0, 63)))
        cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                      "qmin": q, "qmax": q}
    else:
        cc.options = {"preset": "veryfast", "tune": "zerolatency",
                      "qp": str(int(np.clip(quantizer, 0, 51)))}
    return cc


def codec_roundtrip(
    img: np.ndarray,
    codec: Codec,
    quantizer: int,
    n_frames: int = 3,
    motion: float = 0.7,
    rng: np.random.Generator | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """Encode a short drifting clip ending on ``img`` with VP8/H.264 and return its last frame.

    Frame k of n is ``img`` shifted by ``(n-1-k) * motion`` px along a direction drawn from
    ``rng`` (fixed when ``rng`` is None), so every frame but the first is inter-coded against a
    moved reference, as in a call. ``stats`` (optional) receives the packet sizes in bytes.
    """
    h, w = img.shape[:2]
    if h % 2 or w % 2:  # 4:2:0 needs even sides: pad by one row/column, crop after decoding
        padded = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        return codec_roundtrip(padded, codec, quantizer, n_frames, motion, rng, stats)[:h, :w]
    angle = rng.uniform(0, 2 * np.pi) if rng is not None else 0.6
    dx, dy = motion * math.cos(angle), motion * math.sin(angle)
    enc = _encoder(codec, w, h, quantizer)
    packets: list[av.Packet] = []
    n_frames = max(1, n_frames)
    for k in range(n_frames):
        d = n_frames - 1 - k
        shift = np.float32([[1, 0, d * dx], [0, 1, d * dy]])
        frame_img = img if d == 0 else cv2.warpAffine(img, shift, (w, h), flags=cv2.INTER_LINEAR,
                                                      borderMode=cv2.BORDER_REFLECT)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_img), format="rgb24")
        frame.pts = k
        packets += enc.encode(frame)
    packets += enc.encode(None)
    if stats is not None:
        stats["packet_bytes"] = [p.size for p in packets]
    dec = av.CodecContext.create(codec, "r")
    decoded: list[av.VideoFrame] = []
    for pkt in packets:
        decoded += dec.decode(pkt)
    decoded += dec.decode(None)
    if not decoded:
        raise RuntimeError(f"{codec} round trip produced no frames")
    out = decoded[-1].to_ndarray(format="rgb24")
    return out
