"""Build hook only (metadata lives in pyproject.toml): a built wheel carries the top-level
``web/`` (the page) and ``models/`` (the shipped weights) inside the package, as
``osdface_rtc/web`` and ``osdface_rtc/models``, so ``pip install .`` serves the page and loads
the shipped model. Editable installs keep reading them from the checkout (``osdface_rtc.paths``).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ASSETS = ("web", "models")


class build_py_with_assets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in ASSETS:
            src, dst = ROOT / name, Path(self.build_lib) / "osdface_rtc" / name
            if not src.is_dir():
                raise SystemExit(f"cannot build osdface-rtc: {src} is missing")
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": build_py_with_assets})
