"""The work behind `osdface-rtc enhance`: planning input -> output pairs and running them."""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..io.atomic import atomic_output
from ..io.media import MAX_PIXELS, VideoWriter, kind_of, probe_video, read_image, read_video, write_image
from ..pipeline.enhancer import FaceEnhancer
from ..pipeline.stats import RunStats


def plan_jobs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs. A folder maps to a folder with the same file names."""
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise ValueError(f"{dst}: the input is a folder, so the output must be a folder")
        if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
            # Outputs inside the input folder would be re-read as inputs on the next run.
            raise ValueError(f"{dst}: the output folder must be outside the input folder")
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        return [(p, dst / p.name) for p in files]
    if kind_of(dst) == "unknown" and not dst.suffix:
        dst = dst / src.name  # an existing or new folder
    if kind_of(src) != "unknown" and kind_of(dst) != kind_of(src):
        raise ValueError(f"{dst}: output must be a {kind_of(src)} like the input {src.name}")
    return [(src, dst)]


def enhance_image(enhancer: FaceEnhancer, src: Path, dst: Path, max_pixels: int | None = MAX_PIXELS) -> RunStats:
    stats = RunStats()
    img = read_image(src, max_pixels)
    enhancer.reset()  # a photo is not the next frame of the previous one
    out = enhancer.process(img)
    stats.add(enhancer.last_timings, len(enhancer.last_faces))
    stats.errors = enhancer.errors
    write_image(dst, out)
    return stats


def enhance_video(enhancer: FaceEnhancer, src: Path, dst: Path, show_progress: bool = True,
                  max_pixels: int | None = MAX_PIXELS) -> RunStats:
    """Enhance every frame; the output keeps fps, frame count and audio of the input. It is
    written under a temporary name and renamed when complete (removed on error or SIGTERM)."""
    if kind_of(src) != "video":
        raise ValueError(f"{src}: not a video file")
    info = probe_video(src, max_pixels)
    stats = RunStats()
    enhancer.reset()  # new stream: no faces tracked, nothing for the temporal filter
    up = enhancer.config.upscale
    errors0 = enhancer.errors
    with atomic_output(dst) as tmp:
        with VideoWriter(tmp, info.width * up, info.height * up, info.fps, source=src) as writer:
            bar = tqdm(total=info.frames or None, unit="frame", desc=src.name, disable=not show_progress)
            for i, frame in enumerate(read_video(src)):
                out = enhancer.process(frame, t=float(i / info.fps))
                stats.add(enhancer.last_timings, len(enhancer.last_faces))
                writer.write(out)
                bar.update(1)
            bar.close()
        if stats.frames == 0:
            raise ValueError(f"{src}: no frames could be decoded")
    stats.errors = enhancer.errors - errors0
    return stats
