"""The model side of the viewer: a thread that renders the source's newest pose.

There is no queue: each render starts from the pose read just before it, and its frame
replaces the previous one, so a slow backend skips poses instead of falling behind."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from tha.runtime.backends.base import Backend, Frame
from tha.runtime.sources.base import PoseSource


@dataclass(frozen=True)
class Rendered:
    serial: int  # increases with every frame
    frame: Frame
    pose: np.ndarray
    ms: float  # backend time for this frame


class RenderWorker:
    def __init__(self, backend: Backend, source: PoseSource, idle_s: float = 0.005):
        self.backend = backend
        self.source = source
        self.idle_s = idle_s
        self.error: BaseException | None = None
        self._latest: Rendered | None = None
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tha-render", daemon=True)

    def start(self) -> None:
        self._thread.start()

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
                if left <= 0 or self.error is not None or not self._thread.is_alive():
                    return None
                self._new.wait(min(left, 0.1))
            return self._latest

    def _run(self) -> None:
        last: np.ndarray | None = None
        serial = 0
        try:
            while not self._stop.is_set():
                pose = np.asarray(self.source.read(time.monotonic()), dtype=np.float32)
                if last is not None and np.array_equal(pose, last):
                    self._stop.wait(self.idle_s)
                    continue
                start = time.perf_counter()
                frame = self.backend.render(pose)
                ms = (time.perf_counter() - start) * 1000.0
                serial += 1
                last = pose
                with self._new:
                    self._latest = Rendered(serial, frame, pose.copy(), ms)
                    self._new.notify_all()
        except BaseException as err:  # reported on the draw thread, which owns the exit
            self.error = err
            with self._new:
                self._new.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60.0)
