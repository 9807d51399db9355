"""The pose-source contract: drivers (sliders, mocap, webcam, animator, audio) produce poses;
the renderer consumes them. Sources are polled: ``read(now)`` returns the newest pose, never
a queue, so a slow renderer always draws the latest state."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np

from tha.models.pose import check_pose, neutral_pose


class PoseSource(ABC):
    name: str = "?"
    # True where read(t) for a future t is the pose that will hold at t (a clock-driven source
    # such as the animator): renderers may then pose ahead and interpolate without adding lag.
    predictable: bool = False

    def start(self) -> None:
        """Open sockets, cameras, threads. Idempotent."""

    @abstractmethod
    def read(self, now: float) -> np.ndarray:
        """The pose at time ``now`` (seconds, time.monotonic()): (45,) float32."""

    @property
    def status(self) -> str:
        """One short human-readable line for overlays and logs ("ok", "stale", "no face" …)."""
        return "ok"

    def close(self) -> None:
        """Release everything ``start`` opened. Idempotent."""

    def __enter__(self) -> "PoseSource":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SliderSource(PoseSource):
    """A pose held in memory and edited directly (ImGui sliders, HTTP, tests)."""

    name = "sliders"

    def __init__(self, pose: np.ndarray | None = None):
        self._lock = threading.Lock()
        self._pose = neutral_pose() if pose is None else check_pose(pose).copy()

    def read(self, now: float = 0.0) -> np.ndarray:
        with self._lock:
            return self._pose.copy()

    def set_pose(self, pose: np.ndarray) -> None:
        """A wrong size or a NaN is one ThaError line, before it reaches the renderer."""
        checked = check_pose(pose).copy()  # the caller may reuse its array
        with self._lock:
            self._pose = checked
