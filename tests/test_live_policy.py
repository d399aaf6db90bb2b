"""The live policy without WebRTC: real detect/align/blend, a restore service the test controls.

``Service`` hands out futures that the test completes (or fails) when it wants, so "on time",
"late", "stale" and "nothing cached" are set up exactly, not by racing sleeps.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from itertools import islice

import numpy as np
import pytest

from osdface_rtc.pipeline.enhancer import FaceEnhancer
from osdface_rtc.pipeline.live import LiveConfig, LivePolicy, Outcome
from osdface_rtc.pipeline.types import AlignedFaces
from osdface_rtc.restore.classical import IdentityRestorer


class Stripes(IdentityRestorer):
    """Adds vertical stripes to every crop (a visible, known change)."""

    name = "stripes"

    def restore(self, faces: np.ndarray) -> np.ndarray:
        x = np.arange(self.face_size)
        stripes = np.where((x // 16) % 2 == 0, 40, -40).astype(np.int16)[None, None, :, None]
        return np.clip(super().restore(faces).astype(np.int16) + stripes, 0, 255).astype(np.uint8)


class Service:
    """A restore service: ``auto`` finishes each job ``delay_s`` after its submission (another
    thread; at once when 0), else the test calls ``finish``; ``error`` fails the jobs instead."""

    def __init__(self, restorer, auto: bool = True, delay_s: float = 0.0):
        self.restorer, self.auto, self.delay_s = restorer, auto, delay_s
        self.error: BaseException | None = None
        self.pending: list[tuple[AlignedFaces, concurrent.futures.Future]] = []
        self.jobs = 0

    def submit(self, aligned: AlignedFaces) -> concurrent.futures.Future:
        self.jobs += 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.pending.append((aligned, fut))
        if self.auto and self.delay_s:
            threading.Timer(self.delay_s, self.finish).start()
        elif self.auto:
            self.finish()
        return fut

    def finish(self) -> None:
        aligned, fut = self.pending.pop(0)
        if self.error is not None:
            fut.set_exception(self.error)
        else:
            fut.set_result(AlignedFaces(self.restorer.restore(aligned.crops), aligned.affines,
                                        list(aligned.track_ids)))


def make(restorer=None, auto: bool = True, delay_s: float = 0.0, **config) -> tuple[LivePolicy, Service, list]:
    restorer = restorer or Stripes(128)
    service = Service(restorer, auto, delay_s)
    done: list = []
    enh = FaceEnhancer(restorer=restorer, detector="auto", max_faces=4)
    policy = LivePolicy(enh, service.submit, LiveConfig(**config),
                        on_restore_done=lambda ms, exc: done.append(exc))
    return policy, service, done


@pytest.fixture(scope="module")
def two_faces(utk_faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left face only, both faces, right face only) on a grey 720 x 320 frame."""
    from conftest import read_rgb

    left, right = (read_rgb(p) for p in utk_faces[:2])  # 200 x 200 face photos
    canvas = lambda: np.full((320, 720, 3), 110, np.uint8)  # noqa: E731
    a, b, c = canvas(), canvas(), canvas()
    a[60:260, 40:240] = b[60:260, 40:240] = left
    b[60:260, 480:680] = c[60:260, 480:680] = right
    return a, b, c


@pytest.fixture(scope="module")
def talking(clip) -> list[np.ndarray]:
    """Frames 0 and 15 of the talking-head clip (the mouth and eyes moved in between)."""
    from osdface_rtc.io.media import read_video

    frames = list(islice(read_video(clip), 16))
    return [frames[0], frames[15]]


def test_waits_within_budget_and_restores_on_time(two_faces):
    policy, service, done = make(delay_s=0.05, budget_ms=2000)  # 50 ms: inside the budget
    frame = two_faces[0]
    plan = policy.analyze(frame, 0.0, time.monotonic())
    assert plan.outcome is Outcome.RESTORED and plan.outcome == "enhanced"
    assert len(plan.faces) == 1 and plan.restored_faces == 1 and plan.age_ms == 0.0
    assert plan.stages_ms["wait"] >= 40, plan.stages_ms
    assert done == [None]
    out = policy.paste(plan)
    face = np.abs(out[80:240, 60:220].astype(int) - frame[80:240, 60:220]).mean()
    background = np.abs(out[:, 300:].astype(int) - frame[:, 300:]).max()
    assert face > 10 and background == 0, (face, background)


def test_hopeless_wait_is_skipped(two_faces):
    """After a restoration slower than twice the budget, a frame does not wait at all."""
    policy, service, _ = make(delay_s=0.2, budget_ms=40)
    frame = two_faces[0]
    policy.analyze(frame, 0.0, time.monotonic())  # waits its 40 ms, late
    time.sleep(0.3)  # the restoration lands
    assert policy.restore_ema_ms >= 150
    plan = policy.analyze(frame, 1 / 30, time.monotonic())  # a new job (200 ms again)
    assert plan.stages_ms["wait"] < 20, plan.stages_ms
    assert plan.outcome is Outcome.REWARPED


def test_late_frame_gets_the_change_rewarped(talking):
    """Late: the last restoration's change moves with the face -- an identity restorer then
    leaves the current frame exactly as it is (current mouth and eyes), while ``face`` mode
    pastes the old face over it."""
    policy, service, _ = make(IdentityRestorer(128), auto=False, budget_ms=1)
    first, now = talking
    t0 = time.monotonic()
    plan = policy.analyze(first, 0.0, t0)
    assert plan.outcome is Outcome.PASSTHROUGH and plan.restoration is None  # nothing cached yet
    assert policy.paste(plan) is first
    service.finish()  # lands after its frame: the cache for the next ones
    t1 = t0 + 0.5
    plan = policy.analyze(now, 0.5, t1)
    assert plan.outcome is Outcome.REWARPED and plan.rewarp and plan.restored_faces == 1
    assert plan.age_ms == pytest.approx(500.0)
    assert np.array_equal(policy.paste(plan), now)
    policy.config.rewarp = "face"
    diff = np.abs(policy.paste(plan).astype(int) - now).max()
    assert diff > 20, diff


def test_stale_cache_and_errors_pass_through(two_faces):
    frame = two_faces[0]
    policy, service, done = make(auto=False, budget_ms=1, max_cache_age_ms=0)
    policy.analyze(frame, 0.0, time.monotonic())
    service.finish()  # cached, but older than max_cache_age_ms=0 at once
    time.sleep(0.002)
    plan = policy.analyze(frame, 1 / 30, time.monotonic())
    assert plan.outcome is Outcome.PASSTHROUGH and plan.restoration is None
    assert policy.paste(plan) is frame

    policy, service, done = make(delay_s=0.02, budget_ms=500)
    service.error = RuntimeError("CUDA out of memory")
    plan = policy.analyze(frame, 0.0, time.monotonic())
    assert plan.outcome is Outcome.ERROR and plan.restoration is None
    assert len(done) == 1 and isinstance(done[0], RuntimeError)


def test_face_count_changes(two_faces):
    """Faces that come and go: only faces the cache holds are re-warped, matched by track id."""
    left, both, right = two_faces
    policy, service, _ = make(budget_ms=1000)
    plan = policy.analyze(left, 0.0, time.monotonic())
    assert plan.outcome is Outcome.RESTORED and plan.restored_faces == 1
    (left_id,) = [f.track_id for f in plan.faces]

    service.auto = False  # from now on every restoration is late
    policy.config.budget_ms = 1
    plan = policy.analyze(both, 1 / 30, time.monotonic())
    assert plan.outcome is Outcome.REWARPED and len(plan.faces) == 2 and plan.restored_faces == 1
    assert plan.restoration.restored.track_ids == [left_id]
    right_id = next(f.track_id for f in plan.faces if f.track_id != left_id)

    jobs = service.jobs
    plan = policy.analyze(right, 2 / 30, time.monotonic())  # the job of `both` still runs
    assert service.jobs == jobs  # at most one restoration in flight
    assert plan.outcome is Outcome.PASSTHROUGH and [f.track_id for f in plan.faces] == [right_id]

    service.finish()  # the restoration of both faces lands
    plan = policy.analyze(right, 3 / 30, time.monotonic())
    assert plan.outcome is Outcome.REWARPED and plan.restoration.restored.track_ids == [right_id]
    out = policy.paste(plan)
    assert np.abs(out[60:260, 480:680].astype(int) - right[60:260, 480:680]).mean() > 5
    assert np.array_equal(out[:, :300], right[:, :300])  # the left face is gone: nothing pasted

    import cv2

    small = cv2.resize(right, (540, 240), interpolation=cv2.INTER_AREA)  # a new frame size:
    plan = policy.analyze(small, 4 / 30, time.monotonic())  # tracker reset, cache forgotten
    assert len(plan.faces) == 1 and plan.outcome is Outcome.PASSTHROUGH


def test_outcome_values_are_the_wire_strings():
    assert [o.value for o in Outcome] == ["enhanced", "cached", "original", "noface", "off", "error"]
    assert {Outcome.REWARPED: 1}["cached"] == 1 and f"{Outcome.OFF}" == "off"
