"""Where the shipped models, the web page and the shared data live (all overridable by
environment).

In a checkout (or an editable install) ``models/`` and ``web/`` are the top-level folders of
the repository; an installed wheel carries them inside the package (``osdface_rtc/models``,
``osdface_rtc/web``, copied there by ``setup.py`` at build time).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _shipped(name: str) -> Path:
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else REPO_ROOT / name


#: Folder holding shipped model folders (``models/<name>/config.json`` + safetensors).
MODELS_DIR = Path(os.environ.get("OSDFACE_RTC_MODELS", _shipped("models")))

#: The page ``osdface-rtc serve`` serves (index.html, app.js, style.css).
WEB_DIR = Path(os.environ.get("OSDFACE_RTC_WEB", _shipped("web")))

#: Name of the model folder that ``load_restorer()`` loads when no path is given.
DEFAULT_MODEL_NAME = "osdface-rtc-s160"

#: Shared face data and clips (``../shared/data`` next to the checkout by default).
DATA_DIR = Path(os.environ.get("OSDFACE_RTC_DATA", REPO_ROOT.parent / "shared" / "data"))


def cache_dir() -> Path:
    """Derived files (e.g. converted models): ``$OSDFACE_RTC_CACHE``, else ``.cache/`` in a source
    checkout (git-ignored), else ``~/.cache/osdface-rtc`` (an installed wheel)."""
    env = os.environ.get("OSDFACE_RTC_CACHE")
    if env:
        return Path(env)
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osdface-rtc"


#: :func:`cache_dir` at import: resized faces, degraded pools and live-path pairs go there.
CACHE_DIR = cache_dir()


def default_model_dir() -> Path:
    return MODELS_DIR / DEFAULT_MODEL_NAME


def faces_dir() -> Path:
    return DATA_DIR / "faces" / "utkface"


def videos_dir() -> Path:
    return DATA_DIR / "videos"
