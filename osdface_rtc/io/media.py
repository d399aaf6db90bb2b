"""Images and videos in and out.

Videos go through PyAV: frames are decoded as RGB, re-encoded with a codec that suits the
output container (H.264 for mp4/mov/mkv, VP9 for webm, raw for y4m), and audio is copied
packet by packet when the container accepts the codec, or transcoded (AAC / Opus) when not.

Every output goes through a temporary name and a rename (:mod:`.atomic`): a full disk, an
error or SIGTERM never leaves a partial file under the output name. Inputs larger than
``max_pixels`` (default :data:`MAX_PIXELS`) are refused with a clear error before decoding.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from .atomic import write_bytes_atomic

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".y4m", ".avi", ".m4v"}

#: output extension -> (video codec, pixel format, audio codec to use when copying is impossible)
VIDEO_CODECS = {
    ".mp4": ("libx264", "yuv420p", "aac"),
    ".m4v": ("libx264", "yuv420p", "aac"),
    ".mov": ("libx264", "yuv420p", "aac"),
    ".mkv": ("libx264", "yuv420p", "aac"),
    ".avi": ("mpeg4", "yuv420p", "aac"),
    ".webm": ("libvpx-vp9", "yuv420p", "libopus"),
    ".y4m": ("rawvideo", "yuv420p", None),
}
#: audio codecs each container can take as-is
AUDIO_COPY_OK = {
    ".mp4": {"aac", "mp3", "opus", "alac"},
    ".m4v": {"aac", "mp3", "alac"},
    ".mov": {"aac", "mp3", "alac", "pcm_s16le"},
    ".mkv": {"aac", "mp3", "opus", "vorbis", "flac", "pcm_s16le"},
    ".avi": {"mp3", "pcm_s16le"},
    ".webm": {"opus", "vorbis"},
    ".y4m": set(),
}


#: Default cap on the pixels of an input image or video frame (8K UHD is 33.2 MP). A decoded
#: 10000 x 10000 image needs ~1.4 GB through the pipeline.
MAX_PIXELS = 40_000_000


class MediaError(RuntimeError):
    """An input could not be read or an output could not be written."""


def check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise MediaError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} MP, over the limit of "
                         f"{max_pixels / 1e6:g} MP (--max-pixels)")


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding the pixels (Pillow), or None."""
    try:
        import io
        import warnings

        from PIL import Image
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data.tobytes())) as im:
                    return im.size
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - not a format Pillow knows: OpenCV decides below
        return None


def kind_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return "unknown"


def read_image(path: Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read any OpenCV-readable image as RGB uint8 (gray/RGBA/16-bit converted). Images over
    ``max_pixels`` are refused from their header, before the pixels are decoded."""
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    data = np.fromfile(str(path), np.uint8)
    size = _header_size(data)
    if size is not None:
        check_pixels(path, size[0], size[1], max_pixels)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MediaError(f"{path}: not a readable image")
    check_pixels(path, img.shape[1], img.shape[0], max_pixels)
    if img.dtype == np.uint16:
        img = (img / 257).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise MediaError(f"{path}: unsupported image depth {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Encode by extension and write through a temporary name (never a partial file at ``path``)."""
    ext = path.suffix.lower() if path.suffix else ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError(f"{path}: cannot encode {ext}")
    try:
        write_bytes_atomic(path, buf)
    except OSError as exc:
        raise MediaError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from exc


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int  # container's count (0 when unknown)
    has_audio: bool


def _frame_rate(v) -> Fraction:
    """The nominal frame rate: r_frame_rate when plausible (cut clips skew the average)."""
    for rate in (v.base_rate, v.average_rate, v.guessed_rate):
        if rate and 1 <= rate <= 240:
            return Fraction(rate)
    return Fraction(30)


def probe_video(path: Path, max_pixels: int | None = MAX_PIXELS) -> VideoInfo:
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: no video stream")
            v = c.streams.video[0]
            check_pixels(path, v.codec_context.width, v.codec_context.height, max_pixels)
            fps = _frame_rate(v)
            return VideoInfo(v.codec_context.width, v.codec_context.height, Fraction(fps), v.frames or 0,
                             bool(c.streams.audio))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video ({exc})") from exc


class VideoWriter:
    """Encode RGB frames to ``path``, copying (or transcoding) the audio of ``source``."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction, source: Path | None = None,
                 crf: int = 18):
        ext = path.suffix.lower()
        if ext not in VIDEO_CODECS:
            raise MediaError(f"{path}: unsupported video container {ext!r} (use {sorted(VIDEO_CODECS)})")
        codec, pix_fmt, audio_codec = VIDEO_CODECS[ext]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = av.open(str(path), "w")
        self.stream = self.out.add_stream(codec, rate=fps)
        self._time_base = Fraction(1) / Fraction(fps)
        self._n = 0
        # yuv420p needs even sizes; odd inputs are padded by one pixel row/column.
        self.width, self.height = width + width % 2, height + height % 2
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, pix_fmt
        if codec == "libx264":
            self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libvpx-vp9":
            self.stream.options = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        self._audio_in = None
        self._audio_out = None
        self._transcode = False
        if source is not None and audio_codec is not None:
            self._setup_audio(source, ext, audio_codec)

    def _setup_audio(self, source: Path, ext: str, audio_codec: str) -> None:
        self._audio_in = av.open(str(source))
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        a = self._audio_in.streams.audio[0]
        if a.codec_context.name in AUDIO_COPY_OK.get(ext, set()):
            self._audio_out = self.out.add_stream_from_template(a)
        else:
            self._transcode = True
            rate = 48000 if audio_codec == "libopus" else (a.codec_context.sample_rate or 44100)
            self._audio_out = self.out.add_stream(audio_codec, rate=rate)
            self._audio_out.layout = "stereo" if a.codec_context.channels >= 2 else "mono"

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if (w, h) != (self.width, self.height):
            rgb = cv2.copyMakeBorder(rgb, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = self._n, self._time_base
        self._n += 1
        for packet in self.stream.encode(frame):
            self.out.mux(packet)

    def _copy_audio(self) -> None:
        a_in = self._audio_in.streams.audio[0]
        if not self._transcode:
            for packet in self._audio_in.demux(a_in):
                if packet.dts is None:
                    continue
                packet.stream = self._audio_out
                self.out.mux(packet)
            return
        resampler = av.AudioResampler(format=self._audio_out.codec_context.format.name,
                                      layout=self._audio_out.layout.name, rate=self._audio_out.rate)
        for frame in self._audio_in.decode(a_in):
            for rf in resampler.resample(frame):
                for packet in self._audio_out.encode(rf):
                    self.out.mux(packet)
        for rf in resampler.resample(None):
            for packet in self._audio_out.encode(rf):
                self.out.mux(packet)
        for packet in self._audio_out.encode(None):
            self.out.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.out.mux(packet)
        if self._audio_in is not None:
            self._copy_audio()
            self._audio_in.close()
        self.out.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Decode every frame of the first video stream as H x W x 3 uint8 RGB."""
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: decoding failed ({exc})") from exc
