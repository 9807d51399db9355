"""Display-rate frames between model frames, for a pose track known ahead of time.

The body morpher's outputs (grid change, alpha, colour change) and the face-pasted image vary
smoothly with the pose, so a frame between two model frames is made by blending those fields
and re-running only the warp, the blend and the RGBA8 conversion (~2% of a model frame on a
CPU). Every ``every``-th pose is a true model frame; the poses between are blended. The track is
known in advance (the animator's clock, a pose file), so rendering ahead adds no latency.
Backends without ``fields`` (GPU ones, ONNX Runtime) render every pose.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tha.models.image import rgba8

# How many model-frame times ahead of the clock a live loop poses: the display then always has
# a model frame on each side of its clock. What it costs: a change of the source's state (an
# emotion) shows this many model frames later; the motion itself is on time. Speech cannot
# wait: its start drops the frames posed ahead (``Timeline.forget_after``).
AHEAD_FRAMES = 2.0


@dataclass(frozen=True)
class Keyframe:
    image: Tensor  # (1,4,S,S) the character with the face patch pasted
    fields: Tensor  # (1,7,S,S) the body morpher's raw output


def keyframe(backend, pose: np.ndarray) -> Keyframe:
    return Keyframe(*backend.fields(pose))


def can_interpolate(backend) -> bool:
    # a method of the class: an engine's attribute of the same name (cuda's per-batch callable) is not it
    return callable(getattr(type(backend), "fields", None))


@torch.inference_mode()
def between(backend, a: Keyframe, b: Keyframe, t: float) -> np.ndarray:
    """The RGBA8 frame a fraction ``t`` of the way from ``a`` to ``b``."""
    image = torch.lerp(a.image, b.image, t)
    fields = torch.lerp(a.fields, b.fields, t)
    return rgba8(backend.compose(image, fields)[0]).numpy()


def interpolated_frames(backend, poses: Iterable[np.ndarray], every: int) -> Iterator[np.ndarray]:
    """One RGBA8 frame per pose: a model frame every ``every`` poses (and the first and last),
    blended frames between them."""
    if every <= 1 or not can_interpolate(backend):
        for pose in poses:
            yield np.ascontiguousarray(backend.render(pose).host())
        return
    previous: Keyframe | None = None
    waiting: list[np.ndarray] = []
    for pose in poses:
        if previous is None:
            previous = keyframe(backend, pose)
            yield between(backend, previous, previous, 0.0)
            continue
        waiting.append(pose)
        if len(waiting) == every:
            following = keyframe(backend, waiting[-1])
            yield from _span(backend, previous, following, every)
            previous, waiting = following, []
    if waiting:
        yield from _span(backend, previous, keyframe(backend, waiting[-1]), len(waiting))


def _span(backend, a: Keyframe, b: Keyframe, steps: int) -> Iterator[np.ndarray]:
    """The ``steps`` frames after ``a`` up to and including ``b``."""
    for i in range(1, steps + 1):
        yield between(backend, a, b, i / steps)


class Timeline:
    """Model frames stamped with the time of their pose, and the frame at any time between them.

    A live loop renders poses ahead of the clock (``render_ahead``) and shows ``frame_at(now)``;
    a time past the newest model frame holds it."""

    def __init__(self, backend, keep: int = 4):
        self.backend = backend
        self._keys: deque[tuple[float, np.ndarray, Keyframe]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._forgets = 0  # forget_after calls so far: a pose read before one is not added

    def add(self, when: float, pose: np.ndarray, forgets: int | None = None) -> None:
        """The model frame of ``pose`` at ``when``; not kept if ``forget_after`` ran since the
        pose was read (``forgets``: the count then), while it rendered."""
        key = keyframe(self.backend, pose)
        with self._lock:
            if forgets is None or forgets == self._forgets:
                self._keys.append((when, np.asarray(pose, dtype=np.float32), key))

    def render_ahead(self, source, now: float, render_seconds: float, step: float) -> np.ndarray:
        """Render ``source``'s pose of a moment AHEAD_FRAMES model-frame times after ``now`` (and
        at least ``step`` after the newest model frame); returns that pose. Only for sources
        whose future poses are known (``PoseSource.predictable``)."""
        with self._lock:
            forgets = self._forgets  # before the read: a forget_after from here on drops this pose
        newest = self.newest or now
        when = max(now + AHEAD_FRAMES * render_seconds, newest + step)
        pose = source.read(when)
        self.add(when, pose, forgets)
        return pose

    def forget_after(self, when: float) -> None:
        """Drop the model frames posed for after ``when``, and the one being rendered: the
        source changed at ``when`` (speech began), and those show it unchanged for up to
        AHEAD_FRAMES model frames (seconds on a CPU). The display holds the newest frame left
        until the next one, posed anew, lands."""
        with self._lock:
            while self._keys and self._keys[-1][0] > when:
                self._keys.pop()
            self._forgets += 1

    def surplus(self, now: float, render_seconds: float) -> float:
        """Seconds the newest model frame lies beyond the lead ``render_ahead`` keeps: a backend
        faster than the display rate waits this long instead of running ever further ahead."""
        newest = self.newest
        return 0.0 if newest is None else newest - (now + AHEAD_FRAMES * render_seconds)

    @property
    def newest(self) -> float | None:
        with self._lock:
            return self._keys[-1][0] if self._keys else None

    def frame_at(self, when: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(RGBA8 frame, pose it shows) at time ``when``; None before the first model frame."""
        with self._lock:
            keys = list(self._keys)
        if not keys:
            return None
        a, b = keys[0], keys[0]
        if when > keys[0][0]:
            a = b = keys[-1]
            for earlier, later in zip(keys, keys[1:]):
                if when <= later[0]:
                    a, b = earlier, later
                    break
        t = 0.0 if b[0] <= a[0] else (when - a[0]) / (b[0] - a[0])
        pose = b[1] if t >= 1.0 else a[1] + (b[1] - a[1]) * np.float32(t)
        return between(self.backend, a[2], b[2], t), pose
