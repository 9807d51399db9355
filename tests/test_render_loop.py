"""The live render loop shared by the viewer and `tha serve`: a failed frame is skipped when the
owner asks to keep going, pausing holds the last frame, and every frame reaches the sinks."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tha.models.character import load_character_model
from tha.models.pose import pose_from_dict
from tha.runtime.backends.fastcpu import FastCPUBackend
from tha.runtime.render_loop import LoopOptions, RenderLoop
from tha.runtime.sources.base import PoseSource

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


class Nodding(PoseSource):
    """A new head angle on every read; the reads listed in ``fail_at`` raise instead."""

    def __init__(self, fail_at):
        self.reads, self.fail_at = 0, fail_at

    def read(self, now: float) -> np.ndarray:
        self.reads += 1
        if self.reads in self.fail_at:
            raise RuntimeError("tracker lost")
        return pose_from_dict({"head_x": float(np.sin(self.reads))})


class Everything:
    def __contains__(self, read: int) -> bool:
        return True


def wait_until(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_keep_going_skips_a_failed_frame_and_sinks_see_every_frame():
    backend = FastCPUBackend(load_character_model(DEMO))
    sunk = []
    loop = RenderLoop(backend, Nodding(fail_at={2}), LoopOptions(keep_going=True), sinks=(sunk.append,))
    loop.start()
    try:
        assert wait_until(lambda: loop.model_frames >= 3)
    finally:
        loop.stop()
    assert loop.error is None
    assert [r.serial for r in sunk] == list(range(1, len(sunk) + 1)) and len(sunk) >= 3
    latest = loop.latest()
    np.testing.assert_array_equal(latest.frame.host(), backend.render(latest.pose).host())


def test_a_frame_that_keeps_failing_is_retried_at_the_display_rate_with_its_reason(caplog):
    """A server whose every frame failed (a bad setting) retried at once, 71,000 log lines in
    3 s with no reason given; now once a display period, each line saying why."""
    source = Nodding(fail_at=Everything())
    loop = RenderLoop(FastCPUBackend(load_character_model(DEMO)), source,
                      LoopOptions(keep_going=True, interpolate=False, display_fps=20.0))
    with caplog.at_level("ERROR", logger="tha.runtime.render_loop"):
        loop.start()
        time.sleep(1.0)
        loop.stop()
    assert 1 <= source.reads <= 20 + 5  # a loaded machine tries less often, never more
    assert caplog.records and all("tracker lost" in r.getMessage() for r in caplog.records)


def test_a_failed_frame_ends_the_loop_unless_asked_to_keep_going():
    loop = RenderLoop(FastCPUBackend(load_character_model(DEMO)), Nodding(fail_at={2}))
    loop.start()
    try:
        assert wait_until(lambda: loop.error is not None)
    finally:
        loop.stop()
    assert isinstance(loop.error, RuntimeError) and loop.model_frames == 1


def test_pause_holds_the_last_frame_until_resumed():
    source = Nodding(fail_at=set())  # a new pose every read: each read is rendered and published once
    loop = RenderLoop(FastCPUBackend(load_character_model(DEMO)), source)
    loop.start()
    try:
        assert wait_until(lambda: loop.model_frames >= 2)
        loop.pause()
        reads_at_pause = source.reads
        # The frame under way when paused may still land: wait for the frame of the last pose read.
        assert wait_until(lambda: loop.latest().serial == source.reads)
        time.sleep(0.5)
        held = loop.latest().serial
        # Nothing rendered since, and nothing read after the pause but the one read that may have
        # passed the loop's running check just before it.
        assert loop.paused and held == source.reads <= reads_at_pause + 1, (held, source.reads, reads_at_pause)
        loop.resume()
        assert wait_until(lambda: loop.latest().serial > held)
    finally:
        loop.stop()


def test_posing_ahead_keeps_its_lead_with_a_backend_faster_than_the_display():
    """The demo student renders faster than 25 FPS here: posing ahead must wait, not run ever
    further ahead of the clock (an emotion change would then show seconds late)."""
    from tha.runtime.interpolate import AHEAD_FRAMES
    from tha.runtime.sources.animator import Animator

    loop = RenderLoop(FastCPUBackend(load_character_model(DEMO)), Animator(), LoopOptions(display_fps=25.0))
    timeline = loop.timeline
    assert timeline is not None
    # Every model frame's lead, taken where it is largest: at the moment its render starts, against
    # the render time the loop knew then. (One sample of the clock against the newest frame raced
    # with the next render, and a fast render after a slow one shrank the allowance below a lead
    # the slow one had rightly set.)
    leads: list[tuple[float, float]] = []
    render_ahead = timeline.render_ahead

    def recorded(source, now, render_seconds, step):
        pose = render_ahead(source, now, render_seconds, step)
        leads.append((timeline.newest - now, AHEAD_FRAMES * render_seconds + step))
        return pose

    timeline.render_ahead = recorded
    loop.start()
    try:
        assert wait_until(lambda: loop.model_frames > 30 or loop.error is not None)
    finally:
        loop.stop()
    assert loop.error is None and loop.model_frames > 30 and len(leads) > 30
    too_far = [(lead, allowed) for lead, allowed in leads if lead > allowed + 1e-6]
    assert not too_far, too_far


def test_speech_reaches_every_model_frame_posed_after_it_began():
    """`/api/tha/speak` (LiveState.speak) on a live server's threads: the model frames posed
    ahead of the clock before the speech, and the one rendering, had the closed mouth and
    were shown during it. Each frame posed for after the speech began now has the track."""
    from tha.models.pose import index_of
    from tha.runtime.lipsync import MouthTrack
    from tha.runtime.live_state import LiveState, ServeConfig

    state = LiveState(ServeConfig(model_dir=DEMO, backend="fastcpu"))
    timeline, aaa = state.loop.timeline, index_of("mouth_aaa")
    assert timeline is not None
    track = MouthTrack(25.0, np.ones(1500, np.float32), np.tile(np.eye(5, dtype=np.float32)[0], (1500, 1)))  # 60 s
    state.start()
    try:
        assert wait_until(lambda: (timeline.newest or 0.0) > time.monotonic())  # posing ahead
        state.speak(track)
        spoken = time.monotonic()
        assert wait_until(lambda: (timeline.newest or 0.0) > spoken)
        with timeline._lock:
            after = [pose[aaa] for when, pose, _ in timeline._keys if when > spoken]
    finally:
        state.close()
    assert after and all(mouth == 1.0 for mouth in after), after


def test_a_sink_that_fails_every_frame_logs_its_traceback_once_per_reason(caplog):
    """A removed virtual camera fails its sink on every frame: with keep_going each failure
    logged a traceback, at the display rate, for as long as the server ran. Each reason's
    traceback is logged once (and a new reason's once), while frames keep coming."""
    calls = []

    def unplugged(rendered) -> None:
        calls.append(rendered.serial)
        raise OSError("virtual camera removed" if len(calls) <= 5 else "virtual camera busy")

    loop = RenderLoop(FastCPUBackend(load_character_model(DEMO)), Nodding(fail_at=set()),
                      LoopOptions(keep_going=True, interpolate=False, display_fps=100.0), sinks=(unplugged,))
    with caplog.at_level("INFO", logger="tha.runtime.render_loop"):
        loop.start()
        try:
            assert wait_until(lambda: len(calls) >= 15)
        finally:
            loop.stop()
    assert loop.error is None
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == ["rendering a frame failed: virtual camera removed",
                          "rendering a frame failed: virtual camera busy"]
    assert len(caplog.records) <= 2 + 2  # and at most a line counting the repeats of each
