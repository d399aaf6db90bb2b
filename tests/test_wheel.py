"""``pip install .`` (not editable) serves the page and loads the shipped model (issue 9 §4).

Builds the wheel, installs it with ``--no-deps`` into a fresh venv (no system site-packages;
the dependencies are borrowed from the test's own environment through a ``.pth`` path line,
which is added *after* the venv's own site-packages and does not run the editable-install
hooks of that environment, so ``osdface_rtc`` is imported from the wheel). Offline and fast.
Then runs ``osdface-rtc serve`` from a folder outside the checkout and fetches ``/``,
``/static/app.js`` and ``/healthz``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from osdface_rtc.paths import DEFAULT_MODEL_NAME
from osdface_rtc.rtc.bench import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "OSDFACE_RTC_MODELS", "OSDFACE_RTC_WEB", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.status, r.read()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the freshly built wheel installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
         "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300, env=clean_env())
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("osdface_rtc-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, env=clean_env())
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "zz_borrowed_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return py


def test_wheel_ships_page_and_model(installed, tmp_path):
    where = subprocess.run(
        [str(installed), "-c", "import osdface_rtc.paths as p, json; print(json.dumps("
         "[p.__file__, str(p.WEB_DIR), str(p.default_model_dir())]))"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    mod, web, model = (Path(v) for v in json.loads(where.stdout))
    venv = installed.parent.parent
    assert venv in mod.parents and venv in web.parents and venv in model.parents, (mod, web, model)
    assert (web / "index.html").is_file() and (model / "config.json").is_file()


def test_installed_wheel_serves_page_and_names_model(installed, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(OSDFACE_RTC_CACHE=str(ROOT / ".cache"))  # reuse a converted model if present
    log = open(tmp_path / "serve.log", "w")
    script = installed.parent / "osdface-rtc"  # the console script the wheel installed
    assert script.is_file()
    proc = subprocess.Popen([str(script), "serve", "--port", str(port), "--device", "cpu"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = get(base + "/healthz")
                if status == 200:
                    health = json.loads(body)
                    break
            except OSError:
                time.sleep(0.5)
        assert health is not None, (tmp_path / "serve.log").read_text()[-3000:]
        assert DEFAULT_MODEL_NAME in health["model"], health  # the shipped model, not a fallback
        status, page = get(base + "/")
        assert status == 200 and b"osdface-rtc" in page
        status, js = get(base + "/static/app.js")
        assert status == 200 and b"DataChannel" in js
    finally:
        stop_process(proc, 15)
        log.close()


def test_missing_shipped_model_is_a_clear_error(tmp_path):
    """No silent switch to another restorer: serve exits 2 and says what to do."""
    env = clean_env(OSDFACE_RTC_MODELS=str(tmp_path / "empty"),
                    PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "osdface_rtc.cli", "serve", "--port", str(free_port()),
                        "--device", "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "shipped model is missing" in r.stdout and "--model" in r.stdout, r.stdout
