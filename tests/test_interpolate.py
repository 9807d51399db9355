"""Frames between model frames (tha.runtime.interpolate) against true renders of their poses,
on the real lambda_00 student over the animator's talking-with-an-emotion motion."""
from __future__ import annotations

import numpy as np
import pytest

from frames import psnr
from tha.runtime.backends.fastcpu import FastCPUBackend
from tha.runtime.interpolate import AHEAD_FRAMES, Timeline, between, interpolated_frames, keyframe
from tha.runtime.sources.animator import Animator, AnimatorSettings

MIN_PSNR_DB = 35.0


def talking_poses(fps: float, count: int, start: float = 3.0) -> list[np.ndarray]:
    animator = Animator()
    animator.set_emotion("joy")
    animator.start_talking()
    return [animator.read(start + i / fps) for i in range(count)]  # read in order: the animator eases


@pytest.mark.slow
def test_interpolated_frames_match_true_renders(lambda00):
    backend = FastCPUBackend(lambda00)
    every = 6  # 5 model frames/s shown at 30 frames/s (at 1 model frame/s the worst is ~34 dB)
    poses = talking_poses(30.0, every + 1)
    frames = list(interpolated_frames(backend, poses, every))
    assert len(frames) == len(poses)
    truth = [np.ascontiguousarray(backend.render(p).host()) for p in poses]
    scores = [psnr(f, t) for f, t in zip(frames, truth)]
    print("\nPSNR of each frame against a true render (dB):", [round(s, 1) for s in scores])
    for i in range(0, len(poses), every):  # model frames are the true render
        assert np.array_equal(frames[i], truth[i])
    inbetween = [s for i, s in enumerate(scores) if i % every]
    assert min(inbetween) >= MIN_PSNR_DB, scores
    moving = [psnr(truth[i], truth[i - i % every]) for i in range(len(poses)) if i % every]
    assert min(moving) < min(inbetween)  # the motion is real: holding the last model frame is worse


def test_backends_without_fields_render_every_pose():
    class Plain:
        def __init__(self):
            self.calls = 0

        def render(self, pose):
            self.calls += 1
            return type("F", (), {"host": lambda self: np.zeros((2, 2, 4), np.uint8)})()

    plain = Plain()
    assert len(list(interpolated_frames(plain, [np.zeros(45)] * 5, 3))) == 5 and plain.calls == 5


def test_timeline_blends_between_its_model_frames_and_holds_the_ends(lambda00):
    backend = FastCPUBackend(lambda00)
    poses = talking_poses(2.0, 2)
    timeline = Timeline(backend)
    assert timeline.frame_at(0.0) is None
    timeline.add(10.0, poses[0])
    timeline.add(10.5, poses[1])
    a, b = keyframe(backend, poses[0]), keyframe(backend, poses[1])
    frame, pose = timeline.frame_at(10.125)
    assert np.array_equal(frame, between(backend, a, b, 0.25))
    np.testing.assert_allclose(pose, poses[0] + 0.25 * (poses[1] - poses[0]), atol=1e-6)
    for when, want in ((9.0, poses[0]), (10.0, poses[0]), (10.5, poses[1]), (99.0, poses[1])):
        frame, pose = timeline.frame_at(when)
        assert np.array_equal(pose, want)
        assert np.array_equal(frame, np.ascontiguousarray(backend.render(want).host()))


def test_render_ahead_poses_the_source_ahead_of_the_clock(lambda00):
    class Clock:
        predictable = True

        def __init__(self):
            self.times: list[float] = []

        def read(self, now: float) -> np.ndarray:
            self.times.append(now)
            return np.zeros(45, np.float32)

    timeline, clock = Timeline(FastCPUBackend(lambda00)), Clock()
    timeline.render_ahead(clock, now=100.0, render_seconds=0.5, step=0.04)
    timeline.render_ahead(clock, now=100.1, render_seconds=0.5, step=0.04)  # model frames 0.1 s apart
    timeline.render_ahead(clock, now=100.2, render_seconds=0.01, step=0.04)  # a fast frame: one step on
    assert clock.times == pytest.approx([100.0 + AHEAD_FRAMES * 0.5, 100.1 + AHEAD_FRAMES * 0.5,
                                         100.1 + AHEAD_FRAMES * 0.5 + 0.04])
    assert timeline.newest == pytest.approx(clock.times[-1])


def test_animator_read_for_an_earlier_time_does_not_rewind_its_clock():
    steady, probed = Animator(AnimatorSettings(seed=3)), Animator(AnimatorSettings(seed=3))
    for a in (steady, probed):
        a.set_emotion("joy")
    for t in (0.0, 0.5, 1.0):
        steady.read(t)
        probed.read(t)
        probed.read(t - 0.4)  # a viewer panel reading "now" while the renderer poses ahead
    np.testing.assert_allclose(probed.read(1.5), steady.read(1.5), atol=1e-6)


def test_speech_drops_the_model_frames_posed_ahead_with_the_old_mouth():
    """`/api/tha/speak` on a CPU server (0.5 s model frames): the frames already posed ahead
    (up to a second, and the one rendering) had the closed mouth, so the track showed late.
    The loop's clock is stepped by hand here: the same schedule every run."""
    from pathlib import Path

    from tha.models.character import load_character_model
    from tha.models.pose import index_of
    from tha.runtime.lipsync import MouthTrack

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    timeline, animator = Timeline(FastCPUBackend(load_character_model(demo))), Animator(AnimatorSettings(seed=0))
    aaa = index_of("mouth_aaa")
    track = MouthTrack(25.0, np.ones(100, np.float32), np.tile(np.eye(5, dtype=np.float32)[0], (100, 1)))  # 4 s of "aaa"
    speech_at, render_s = 3.2, 0.5

    class SpeechWhileRendering:  # the animator; speech arrives while the frame begun at 3.0 renders
        predictable = True

        def read(self, when: float) -> np.ndarray:
            pose = animator.read(when)
            if when == 3.0 + AHEAD_FRAMES * render_s:
                animator.speak(track, speech_at)  # what LiveState.speak does
                timeline.forget_after(speech_at)
            return pose

    source = SpeechWhileRendering()
    for now in (1.0, 1.5, 2.0, 2.5, 3.0):  # each model frame begins as the one before lands
        timeline.render_ahead(source, now, render_s, 0.04)
    assert timeline.newest == 3.0  # the frames posed for 3.5 and 4.0 before the speech are gone
    assert timeline.frame_at(3.6)[1][aaa] == 0.0  # until the next lands, the newest left is held
    timeline.render_ahead(source, 3.5, render_s, 0.04)  # lands at 4.0, posed for 4.5
    assert timeline.newest == 4.5 and timeline.frame_at(4.5)[1][aaa] == 1.0
    # As it lands the mouth is two thirds open, between 3.0 (closed) and 4.5 (the track); it
    # stayed shut until 4.0 before, and opened only toward 5.0.
    assert timeline.frame_at(4.0)[1][aaa] == pytest.approx(2 / 3, abs=1e-6)
