"""The pool's batcher and the RemoteRestorer's failure behaviour (no Ray needed)."""
from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from osdface_rtc.restore import RestorerError
from osdface_rtc.restorers import load_restorer
from osdface_rtc.restore.protocol import PoolBusy, decode_crops
from osdface_rtc.restore.remote import PoolUnavailable, RemoteConfig, RemoteRestorer, parse_spec
from osdface_rtc.rtc.bench import free_port  # a closed port: nothing listens on it
from osdface_rtc.scale.batcher import BatcherConfig, DeadlineBatcher


def crops(n: int, value: int = 0, size: int = 8) -> np.ndarray:
    return np.full((n, size, size, 3), value, np.uint8)


class SlowPlusOne:
    """A real restorer function: +1 on every pixel, taking ``delay_s``; records batch sizes."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.batches = delay_s, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        time.sleep(self.delay_s)
        return x + 1


async def test_concurrent_requests_of_two_clients_form_one_batch():
    fn = SlowPlusOne()
    b = DeadlineBatcher(fn, BatcherConfig(max_wait_ms=30))
    outs = await asyncio.gather(b.submit(crops(1, 10), 100, "a"), b.submit(crops(2, 20), 100, "b"))
    assert fn.batches == [3]
    assert (outs[0] == 11).all() and outs[0].shape[0] == 1 and (outs[1] == 21).all() and outs[1].shape[0] == 2
    assert b.stats.mixed_batches == 1 and b.stats.batch_faces == {3: 1} and b.stats.batch_requests == {2: 1}
    b.close()


async def test_batch_never_waits_past_the_earliest_budget():
    b = DeadlineBatcher(SlowPlusOne(), BatcherConfig(max_wait_ms=500))
    t0 = time.monotonic()
    await b.submit(crops(1), budget_ms=20, client="a")  # alone: waits for company <= its budget
    assert time.monotonic() - t0 < 0.25
    t0 = time.monotonic()
    await b.submit(crops(1), budget_ms=0, client="a")  # budget spent: no wait at all
    assert time.monotonic() - t0 < 0.1
    b.close()


async def test_requests_queued_during_a_batch_join_the_next_one_and_max_batch_holds():
    fn = SlowPlusOne(delay_s=0.15)
    b = DeadlineBatcher(fn, BatcherConfig(max_wait_ms=0, max_batch_faces=4))
    first = asyncio.ensure_future(b.submit(crops(1), 1000, "a"))
    await asyncio.sleep(0.05)  # the first batch is computing now
    rest = [asyncio.ensure_future(b.submit(crops(1), 1000, c)) for c in "abcdef"]
    await asyncio.gather(first, *rest)
    assert fn.batches == [1, 4, 2]
    b.close()


async def test_full_queue_is_refused_at_once_and_old_requests_expire():
    fn = SlowPlusOne(delay_s=0.3)
    b = DeadlineBatcher(fn, BatcherConfig(max_wait_ms=0, max_queued_faces=3, max_age_ms=100))
    busy = asyncio.ensure_future(b.submit(crops(1), 1000, "a"))
    await asyncio.sleep(0.05)  # computing: the queue is empty again
    queued = asyncio.ensure_future(b.submit(crops(3), 1000, "b"))  # fills the queue
    await asyncio.sleep(0)
    t0 = time.monotonic()
    with pytest.raises(PoolBusy, match="queue full"):
        await b.submit(crops(1), 1000, "c")
    assert time.monotonic() - t0 < 0.05
    await busy
    with pytest.raises(PoolBusy, match="expired"):  # waited ~250 ms > max_age
        await queued
    assert b.stats.refused_full == 1 and b.stats.expired == 1 and fn.batches == [1]
    b.close()


async def test_restorer_errors_reach_every_request_of_the_batch():
    def boom(x):
        raise RuntimeError("CUDA out of memory (test)")

    b = DeadlineBatcher(boom, BatcherConfig(max_wait_ms=20))
    res = await asyncio.gather(b.submit(crops(1), 100, "a"), b.submit(crops(1), 100, "b"),
                               return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res) and b.stats.errors == 1
    b.close()


def test_wire_format_is_validated():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    assert (decode_crops(x.tobytes(), "2,4,4,3", 4) == x).all()
    for shape, body in [("2,4,4,3", x.tobytes()[:-1]), ("2,5,5,3", x.tobytes()), (None, b""), ("a,b", b"")]:
        with pytest.raises(ValueError):
            decode_crops(body, shape, 4)


def test_pool_specs():
    assert parse_spec("ray://10.0.0.5:9000/restorer") == ("http://10.0.0.5:9000/restorer", {})
    assert parse_spec("ray://pool/r?budget_ms=40&timeout_s=1") == ("http://pool:8000/r", {"budget_ms": 40.0, "timeout_s": 1.0})
    assert parse_spec("ray:restorer") == ("http://127.0.0.1:8000/restorer", {})
    for bad in ("ray://host", "ray:", "ray://h:1/a/b", "ray:r?nope=1", "ray:r?budget_ms=x"):
        with pytest.raises(RestorerError):
            parse_spec(bad)


def test_missing_pool_is_a_clear_error_at_load():
    t0 = time.monotonic()
    with pytest.raises(RestorerError, match="not reachable"):
        load_restorer(f"ray://127.0.0.1:{free_port()}/restorer?load_timeout_s=1")
    assert time.monotonic() - t0 < 5


def test_dead_pool_fails_fast_then_probes_again():
    r = RemoteRestorer(RemoteConfig(url=f"http://127.0.0.1:{free_port()}/restorer", retry_after_s=0.3),
                       info={"face_size": 8, "name": "x"})
    t0 = time.monotonic()
    for _ in range(20):
        with pytest.raises(PoolUnavailable):
            r.restore(crops(1))
    assert time.monotonic() - t0 < 1.0
    assert r.failures == 1  # one connection attempt; the others failed without the network
    time.sleep(0.35)
    with pytest.raises(PoolUnavailable):
        r.restore(crops(1))
    assert r.failures == 2  # probed again after retry_after_s


def test_hung_pool_costs_at_most_the_timeout():
    """A listener that accepts and never answers (a stuck pool)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    try:
        r = RemoteRestorer(RemoteConfig(url=f"http://127.0.0.1:{port}/restorer", timeout_s=0.3),
                           info={"face_size": 8, "name": "x"})
        t0 = time.monotonic()
        with pytest.raises(PoolUnavailable):
            r.restore(crops(2))
        assert 0.25 < time.monotonic() - t0 < 1.5
    finally:
        srv.close()


def test_pool_config_from_command_line_strings_and_py_factories():
    pytest.importorskip("ray.serve", reason="ray[serve] not installed (pip install -e '.[scale]' -c constraints/scale.txt)")
    from dataclasses import asdict

    from osdface_rtc.scale.deployment import PoolConfig, make_restorer

    c = PoolConfig.from_dict({"model": "classical", "replicas": "2", "max_wait_ms": "3", "torch_threads": "none"})
    assert c.replicas == 2 and c.batcher.max_wait_ms == 3.0 and c.torch_threads is None
    assert PoolConfig.from_dict(asdict(c)) == c
    with pytest.raises(ValueError, match="unknown"):
        PoolConfig.from_dict({"replica": 2})
    r = make_restorer("py:osdface_rtc.restore.classical:IdentityRestorer")
    assert r.name == "identity" and r.face_size == 128
    with pytest.raises(ValueError):
        make_restorer("py:nocolon")
    # the replica's runtime (restorer-serve --runtime): torch on request, whatever auto would pick
    assert PoolConfig.from_dict({"runtime": "torch"}).runtime == "torch" and PoolConfig().runtime == "auto"
    from osdface_rtc.model.restorer import ModelRestorer
    from osdface_rtc.paths import default_model_dir

    if (default_model_dir() / "config.json").is_file():
        assert isinstance(make_restorer(None, "cpu", 1, runtime="torch"), ModelRestorer)


def test_bench_forwards_the_runtime_to_model_folders_only():
    from osdface_rtc.scale.bench import has_runtime, runtime_args

    assert runtime_args("/m/osdface-rtc-s160", "torch") == ["--runtime", "torch"]
    assert runtime_args(None, "openvino") == ["--runtime", "openvino"]  # the shipped model
    assert runtime_args("/m/x", "auto") == []
    assert runtime_args("classical", "openvino") == [] and runtime_args("py:m:f", "torch") == []
    assert has_runtime("/m/x", "torch") and not has_runtime("/m/x", "auto") and not has_runtime("identity", "torch")
