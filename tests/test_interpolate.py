"""Frames between model frames (tha.runtime.interpolate) against true renders of their poses,
on the real lambda_00 student over the animator's talking-with-an-emotion motion."""
from __future__ import annotations

import numpy as np
import pytest

from tha.runtime.backends.fastcpu import FastCPUBackend
from tha.runtime.interpolate import interpolated_frames
from tha.runtime.sources.animator import Animator

MIN_PSNR_DB = 35.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


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
