"""The One Euro filter (Casiez, Roussel, Vogel 2012): a low-pass whose cutoff rises with speed,
so a still face stays still (jitter removed) and a fast head turn is followed with little lag.

Vectorised: one filter state per pose slot, all updated together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class OneEuroSettings:
    min_cutoff: float = 1.5  # Hz; lower = smoother when still
    beta: float = 0.3  # how fast the cutoff rises with speed; higher = less lag when moving
    derivative_cutoff: float = 1.0  # Hz; smoothing of the speed estimate itself


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """``filter(x, t)`` for vectors of a fixed size; ``t`` in seconds, increasing."""

    def __init__(self, settings: OneEuroSettings | None = None):
        self.settings = settings or OneEuroSettings()
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def filter(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            # First sample, or a clock that did not advance: nothing to smooth against.
            if self._x is None:
                self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return self._x.astype(np.float32)
        s = self.settings
        dt = t - self._t
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(s.derivative_cutoff, dt) * (dx - self._dx)
        cutoff = s.min_cutoff + s.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.astype(np.float32)
