"""Device selection shared by every command ("auto" -> CUDA when available, else CPU), and the
CPU thread policy of the live paths."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a user setting ("auto", "cpu", "cuda", "cuda:1", a torch.device) into a device."""
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def configure_cpu(device: str | torch.device | None, torch_threads: int | None) -> None:
    """Thread policy of the live paths (media server, restorer pool replica): on a CPU-only run
    keep the model to one thread (it runs in a niced worker thread) unless ``torch_threads`` is
    given, and on small hosts (<= 4 cores) OpenCV to the calling thread, so video work is never
    starved by restoration."""
    import os

    import cv2

    if torch_threads:
        torch.set_num_threads(torch_threads)
    elif resolve_device(device).type == "cpu":
        torch.set_num_threads(1)
    if (os.cpu_count() or 1) <= 4:
        cv2.setNumThreads(1)
