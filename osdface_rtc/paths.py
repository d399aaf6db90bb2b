"""Where the shipped models and the shared data live (both overridable by environment)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Folder holding shipped model folders (``models/<name>/config.json`` + safetensors).
MODELS_DIR = Path(os.environ.get("OSDFACE_RTC_MODELS", REPO_ROOT / "models"))

#: Name of the model folder that ``load_restorer()`` loads when no path is given.
DEFAULT_MODEL_NAME = "osdface-rtc-s128"

#: Shared face data and clips (``../shared/data`` next to the checkout by default).
DATA_DIR = Path(os.environ.get("OSDFACE_RTC_DATA", REPO_ROOT.parent / "shared" / "data"))


def default_model_dir() -> Path:
    return MODELS_DIR / DEFAULT_MODEL_NAME


def faces_dir() -> Path:
    return DATA_DIR / "faces" / "utkface"


def videos_dir() -> Path:
    return DATA_DIR / "videos"
