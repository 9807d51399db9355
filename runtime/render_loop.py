"""The live render loop: a pose source's poses become frames on background threads, for every
live output (the viewer's window, `tha serve`'s feed, a virtual camera).

There is no queue: each render starts from the pose read just before it (or, for a
predictable source, the pose of a moment just ahead), and its frame replaces the previous one,
so a slow backend skips poses instead of falling behind. A predictable source (the animator)
with a backend that exposes its fields (fastcpu) is posed ahead of the clock, and a second
thread shows frames blended between model frames at the display rate
(``tha.runtime.interpolate``); any other pair renders the newest pose. Offline renders (a pose
file, a video) use ``interpolate.interpolated_frames`` instead: every frame, no clock.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tha.runtime.backends.base import Backend, Frame
from tha.runtime.interpolate import Timeline, can_interpolate
from tha.runtime.sources.base import PoseSource

log = logging.getLogger(__name__)

# Failure reasons each loop thread remembers, least recently seen dropped first: a reason that
# never repeats (a counter in its text) must not grow the memory for as long as a server runs.
REASONS_KEPT = 64


def _report(seen: dict[str, int], err: Exception) -> None:
    """A failed frame's traceback, once per reason; its repeats as one line at 10, 100, 1000...
    times. A sink that fails every frame (a removed virtual camera) logged a traceback per
    frame at the display rate, for as long as the server ran."""
    reason = f"{type(err).__name__}: {err}"
    count = seen.pop(reason, 0) + 1
    seen[reason] = count  # re-inserted: the least recently seen reason is first
    if len(seen) > REASONS_KEPT:
        del seen[next(iter(seen))]
    if count == 1:
        log.exception("rendering a frame failed: %s", err)
    elif str(count).rstrip("0") == "1":  # 10, 100, 1000... times
        log.error("rendering a frame failed %d times: %s", count, err)


@dataclass(frozen=True)
class Rendered:
    serial: int  # increases with every frame
    frame: Frame
    pose: np.ndarray
    ms: float  # backend time for this frame


@dataclass(frozen=True)
class LoopOptions:
    interpolate: bool = True  # pose ahead and blend, where source and backend allow it
    display_fps: float = 30.0  # rate of blended frames
    max_fps: float | None = None  # cap on model frames of the newest-pose loop (None: as fast as it can)
    keep_going: bool = False  # a failed frame is logged and skipped (a server) instead of ending the loop
    idle_s: float = 0.005  # wait when the pose has not changed


class RenderLoop:
    """Renders on its own thread(s); ``latest()`` is the newest frame and every frame also goes
    to the ``sinks``. ``error`` holds what ended the loop (unless ``keep_going``)."""

    def __init__(self, backend: Backend, source: PoseSource, options: LoopOptions = LoopOptions(),
                 sinks: tuple[Callable[[Rendered], None], ...] = ()):
        self.backend = backend
        self.source = source
        self.options = options
        self.sinks = list(sinks)
        predictable = options.interpolate and source.predictable and can_interpolate(backend)
        self.timeline = Timeline(backend) if predictable else None
        self.model_frames = 0
        self.render_seconds = 0.0
        self.error: BaseException | None = None
        self._latest: Rendered | None = None
        self._serial = 0
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._last_pose: np.ndarray | None = None
        loops = [self._render_newest] if self.timeline is None else [self._render_ahead, self._display]
        self._threads = [threading.Thread(target=self._guarded, args=(loop,), name=f"tha-{loop.__name__[1:]}",
                                          daemon=True) for loop in loops]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def display_period(self) -> float:
        return 1.0 / self.options.display_fps

    def retime(self, fps: float) -> None:
        """A new display rate (and model-frame cap, where one is set), from the next frame on."""
        capped = None if self.options.max_fps is None else fps
        self.options = replace(self.options, display_fps=fps, max_fps=capped)

    def pause(self) -> None:
        """Hold the last frame; no rendering until ``resume``."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def source_changed(self, now: float) -> None:
        """The source changed at ``now`` in a way that must show on time (speech began): frames
        posed ahead of it are dropped and posed again. Without posing ahead, nothing to do."""
        if self.timeline is not None:
            self.timeline.forget_after(now)

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

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
            rendered = self._latest = Rendered(self._serial, frame, pose.copy(), ms)
            self._new.notify_all()
        for sink in self.sinks:
            sink(rendered)

    def _guarded(self, once: Callable[[], None]) -> None:
        """Repeat ``once`` until stopped, idling while paused. A failure ends the loop and is
        reported to the owner (the viewer's draw thread), or with ``keep_going`` costs that frame."""
        seen: dict[str, int] = {}  # failure reason -> times, for this thread
        try:
            while not self._stop.is_set():
                if not self._running.is_set():
                    self._stop.wait(self.options.idle_s)
                elif not self.options.keep_going:
                    once()
                else:
                    try:
                        once()
                    except Exception as err:
                        _report(seen, err)
                        self._stop.wait(self.display_period)  # a frame that keeps failing must not spin
        except BaseException as err:
            self.error = err
            self._stop.set()
            with self._new:
                self._new.notify_all()

    def _wait(self, began: float, period: float) -> None:
        self._stop.wait(max(period - (time.monotonic() - began), 0.001))

    def _render_newest(self) -> None:
        """The source's current pose, unless it is the one last rendered."""
        began = time.monotonic()
        pose = np.asarray(self.source.read(began), dtype=np.float32)
        if self._last_pose is not None and np.array_equal(pose, self._last_pose):
            self._stop.wait(self.options.idle_s)
            return
        start = time.perf_counter()
        frame = self.backend.render(pose)
        self.render_seconds = time.perf_counter() - start
        self.model_frames += 1
        self._last_pose = pose
        self._publish(frame, pose, self.render_seconds * 1000.0)
        cap = self.options.max_fps
        self._wait(began, 0.0 if cap is None else 1.0 / cap)

    def _render_ahead(self) -> None:
        """The pose of a moment ahead into the timeline, or a wait while it is far enough ahead."""
        began = time.monotonic()
        surplus = self.timeline.surplus(began, self.render_seconds)
        if surplus > 0:
            self._stop.wait(min(surplus, 0.1))
            return
        self.timeline.render_ahead(self.source, began, self.render_seconds, self.display_period)
        self.render_seconds = time.monotonic() - began
        self.model_frames += 1

    def _display(self) -> None:
        """The timeline's frame for now, at the display rate."""
        began = time.monotonic()
        shown = self.timeline.frame_at(began)
        if shown is not None:
            self._publish(Frame(shown[0]), shown[1], (time.monotonic() - began) * 1000.0)
        self._wait(began, self.display_period)

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=60.0)
