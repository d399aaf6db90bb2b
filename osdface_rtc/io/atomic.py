"""Outputs that appear complete or not at all.

Every output file is written under a hidden temporary name in the same folder
(``.NAME.partial-PID.EXT``) and renamed over the final name only when complete, so a crash, a
full disk or a kill never leaves a truncated file under the name the user asked for. Temporary
files still open are removed on any exception, on normal exit, and on SIGTERM/SIGHUP once
:func:`install_signal_cleanup` has run (the CLI does it): the signal becomes ``SystemExit``
so ``finally`` blocks run.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

_pending: set[Path] = set()
_lock = threading.Lock()


def partial_name(path: Path) -> Path:
    """The temporary name ``path`` is written under (same folder, same extension: muxers and
    encoders pick their format from it)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def cleanup_partials() -> None:
    """Remove every temporary output still pending (called at exit and on SIGTERM)."""
    with _lock:
        paths = list(_pending)
        _pending.clear()
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on any error
    (or ``SystemExit``/``KeyboardInterrupt``) removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    with _lock:
        _pending.add(tmp)
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(errno.ENOENT, "output was not written", str(path))
        os.replace(tmp, path)
    finally:
        with _lock:
            _pending.discard(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file (flushed and fsynced before the
    rename). A short write or ENOSPC raises ``OSError`` and leaves ``path`` untouched."""
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0", str(path))
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)


def _on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through atomic_output's finally blocks


def install_signal_cleanup() -> None:
    """SIGTERM/SIGHUP end the process through ``SystemExit`` (temporary outputs removed).
    Only from the main thread; harmless to call twice."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


atexit.register(cleanup_partials)
