"""The model side of the viewer: threads that turn the source's poses into frames.

There is no queue: each render starts from the pose read just before it (or, for a
predictable source, the pose of a moment just ahead), and its frame replaces the previous one,
so a slow backend skips poses instead of falling behind."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from tha.runtime.backends.base import Backend, Frame
from tha.runtime.interpolate import Timeline, can_interpolate
from tha.runtime.sources.base import PoseSource


@dataclass(frozen=True)
class Rendered:
    serial: int  # increases with every frame
    frame: Frame
    pose: np.ndarray
    ms: float  # backend time for this frame


class RenderWorker:
    """Renders on its own thread; ``latest()`` is the newest frame.

    A predictable source (the animator) with a backend that exposes its fields (fastcpu) is
    posed ahead of the clock, and a second thread shows frames blended between model frames at
    ``display_fps`` (``tha.runtime.interpolate``); any other pair renders the newest pose."""

    def __init__(self, backend: Backend, source: PoseSource, idle_s: float = 0.005, interpolate: bool = True,
                 display_fps: float = 30.0):
        self.backend = backend
        self.source = source
        self.idle_s = idle_s
        self.display_period = 1.0 / display_fps
        self.timeline = Timeline(backend) if interpolate and source.predictable and can_interpolate(backend) else None
        self.model_frames = 0
        self.error: BaseException | None = None
        self._latest: Rendered | None = None
        self._serial = 0
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        loops = [self._render_newest] if self.timeline is None else [self._render_ahead, self._display]
        self._threads = [threading.Thread(target=self._guarded, args=(loop,), name=f"tha-{loop.__name__[1:]}",
                                          daemon=True) for loop in loops]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def latest(self) -> Rendered | None:
        with self._lock:
            return self._latest

    def wait_for(self, pose: np.ndarray, timeout: float) -> Rendered | None:
        """Block until a frame of exactly ``pose`` is the newest (or timeout / failure)."""
        pose = np.asarray(pose, dtype=np.float32)
        deadline = time.monotonic() + timeout
        with self._new:
            while not (self._latest is not None and np.array_equal(self._latest.pose, pose)):
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None or not all(t.is_alive() for t in self._threads):
                    return None
                self._new.wait(min(left, 0.1))
            return self._latest

    def _publish(self, frame: Frame, pose: np.ndarray, ms: float) -> None:
        with self._new:
            self._serial += 1
            self._latest = Rendered(self._serial, frame, pose.copy(), ms)
            self._new.notify_all()

    def _guarded(self, loop) -> None:
        try:
            loop()
        except BaseException as err:  # reported on the draw thread, which owns the exit
            self.error = err
            self._stop.set()
            with self._new:
                self._new.notify_all()

    def _render_newest(self) -> None:
        last: np.ndarray | None = None
        while not self._stop.is_set():
            pose = np.asarray(self.source.read(time.monotonic()), dtype=np.float32)
            if last is not None and np.array_equal(pose, last):
                self._stop.wait(self.idle_s)
                continue
            start = time.perf_counter()
            frame = self.backend.render(pose)
            self.model_frames += 1
            last = pose
            self._publish(frame, pose, (time.perf_counter() - start) * 1000.0)

    def _render_ahead(self) -> None:
        seconds = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            self.timeline.render_ahead(self.source, began, seconds, self.display_period)
            seconds = time.monotonic() - began
            self.model_frames += 1

    def _display(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            shown = self.timeline.frame_at(began)
            if shown is not None:
                self._publish(Frame(shown[0]), shown[1], (time.monotonic() - began) * 1000.0)
            self._stop.wait(max(self.display_period - (time.monotonic() - began), 0.001))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60.0)
