"""The idle animator: a pose source that keeps a character alive on its own.

It blinks at random intervals, breathes on a fixed cycle, sways head and body slowly toward
random targets with a little micro-motion on top, eases between emotion poses, and moves the
mouth while talking (random shapes) or from lip sync (audio). Time comes only from
``read(now)``, so a simulated minute needs no waiting.
"""
from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tha.models.errors import ThaError
from tha.models.limits import FPS_RANGE, check_range
from tha.models.pose import LOWER, UPPER, index_of, neutral_pose, pose_from_dict
from tha.models.settings import load_settings
from tha.runtime.emotions import NEUTRAL, Emotions, load_emotions, resolve
from tha.runtime.sources.base import PoseSource

MOUTH_SHAPES = ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")
_MOUTH = np.array([index_of(n) for n in MOUTH_SHAPES])
_BLINK = np.array([index_of("eye_wink_left"), index_of("eye_wink_right")])
BREATHING = index_of("breathing")
# Sway moves these; the body follows the head at half the strength.
SWAY_PARAMETERS = ("head_x", "head_y", "neck_z", "body_y", "body_z")
_SWAY = np.array([index_of(n) for n in SWAY_PARAMETERS])
_SWAY_SCALE = np.array([1.0, 1.0, 1.0, 0.5, 0.5])


def breath(seconds: float, cycle: float) -> float:
    """How far in the breathing parameter is after ``seconds``: 0 -> 1 -> 0 over each ``cycle``."""
    return 0.5 * (1.0 - math.cos(2.0 * math.pi * seconds / cycle))


# (low, high) settings pairs: low must not exceed high
RANGES = (("blink_interval_min", "blink_interval_max"), ("sway_interval_min", "sway_interval_max"))


MIN_PERIOD = 0.1  # seconds


@dataclass(frozen=True)
class AnimatorSettings:
    """Every timing (seconds) and strength of the idle animation. Names follow
    SillyTavern-extras' ``_animator.json`` where it has the same idea."""

    target_fps: float = 25.0
    transition_time: float = 0.3       # time constant of easing to a new emotion or pose
    blink_interval_min: float = 2.0
    blink_interval_max: float = 6.0
    blink_duration: float = 0.15
    blink_strength: float = 1.0
    breathing_cycle_duration: float = 4.0
    breathing_strength: float = 1.0
    sway_interval_min: float = 2.0
    sway_interval_max: float = 5.0
    sway_macro_strength: float = 0.3   # largest head offset of the slow sway
    sway_micro_strength: float = 0.02  # amplitude of the small fast micro-motion
    sway_micro_period: float = 1.2     # seconds per wiggle of the micro-motion's faster part
    talking_fps: float = 12.0          # how often the talking mouth picks a new shape
    talking_strength: float = 0.8
    mouth_smoothing: float = 0.04      # time constant of the mouth's easing
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ThaError(f"animator setting {f.name}={value!r} must be a number >= 0")
        for low, high in RANGES:
            if getattr(self, low) > getattr(self, high):
                raise ThaError(f"animator setting {low} must not exceed {high}")
        check_range("animator setting target_fps", self.target_fps, FPS_RANGE)
        # these divide time: a value near zero makes every frame fail (cos of inf), so they have a floor
        for name in ("breathing_cycle_duration", "sway_interval_max"):
            if getattr(self, name) < MIN_PERIOD:
                raise ThaError(f"animator setting {name}={getattr(self, name)!r} must be at least {MIN_PERIOD} s")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ThaError(f"animator setting seed={self.seed!r} must be a whole number >= 0 (or null)")


# SillyTavern-extras' `_animator.json` keys (its `animator_defaults`, and the upscaler its
# settings editor adds) this animator has no counterpart for: a character's file that carries
# them still loads, with a warning naming them. Any other unknown key is an error.
EXTRAS_ONLY = frozenset({
    "crop_left", "crop_right", "crop_top", "crop_bottom", "pose_interpolator_step", "blink_probability",
    "blink_confusion_duration", "talking_morph", "sway_morphs", "postprocessor_chain",
    "upscale", "upscale_preset", "upscale_quality",
})


def load_animator_settings(source: Mapping[str, Any] | Path | None, what: str,
                           base: AnimatorSettings | None = None) -> AnimatorSettings:
    """``base`` (the defaults) overlaid with ``source`` (e.g. a parsed `_animator.json`); ``what``
    names the source in errors."""
    return load_settings(AnimatorSettings, source, what, base=base, ignore=EXTRAS_ONLY)


def settings_from_dict(data: Mapping[str, Any] | None,
                       base: AnimatorSettings | None = None) -> tuple[AnimatorSettings, list[str]]:
    """A `load_animator_settings` request's body over ``base``, and the extras-only keys it
    ignored, which the server names in its reply."""
    ignored = sorted(k for k in data if k in EXTRAS_ONLY) if isinstance(data, Mapping) else []
    if isinstance(data, Mapping):
        data = _with_ranges_completed(data, base or AnimatorSettings())
    return load_animator_settings(data, "load_animator_settings request", base), ignored


def _with_ranges_completed(data: Mapping[str, Any], base: AnimatorSettings) -> dict[str, Any]:
    """A character's `_animator.json` may give one end of a range beyond the other end's default
    (extras' sway is 5-10 s, ours 2-5 s: {"sway_interval_min": 6}): the end it leaves out follows,
    as extras repairs such files, instead of the whole file being refused. Both ends given
    the wrong way round stay an error."""
    data = dict(data)
    for low, high in RANGES:
        if (low in data) == (high in data):
            continue
        given, missing = (low, high) if low in data else (high, low)
        lo, hi = data.get(low, getattr(base, low)), data.get(high, getattr(base, high))
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
        if numbers and lo > hi:
            data[missing] = data[given]
    return data


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class Animator(PoseSource):
    name = "animator"
    predictable = True  # a clock-driven track; what the controls change applies from the next read

    def __init__(self, settings: AnimatorSettings | None = None, emotions: Emotions | None = None):
        self._lock = threading.Lock()
        self.settings = settings or AnimatorSettings()
        self.emotions = emotions if emotions is not None else load_emotions()
        self.emotion = NEUTRAL
        self._overrides: dict[int, float] = {}
        self._rng = np.random.default_rng(self.settings.seed)
        self._micro_phase = self._rng.uniform(0, 2 * math.pi, (2, len(_SWAY)))
        self._start: float | None = None
        self._last = 0.0
        self._base = self._target_pose()
        self._talking = False
        self._mouth = np.zeros(len(MOUTH_SHAPES), np.float32)
        self._mouth_target = self._mouth.copy()
        self._next_mouth = 0.0
        self._external_mouth: np.ndarray | None = None
        self._track = None
        self._track_start = 0.0
        self._blink_start = -1.0
        self._next_blink = 0.0
        self._sway_from = np.zeros(len(_SWAY))
        self._sway_to = np.zeros(len(_SWAY))
        self._sway_start = 0.0
        self._sway_end = 0.0

    # --- controls (any thread) -------------------------------------------------------

    def set_emotion(self, name: str) -> str:
        """Ease toward the preset ``name`` (unknown names -> neutral); returns the one used."""
        with self._lock:
            self.emotion = resolve(self.emotions, name)
            return self.emotion

    def set_emotions(self, emotions: Emotions) -> None:
        with self._lock:
            self.emotions = emotions
            self.emotion = resolve(emotions, self.emotion)

    def set_settings(self, settings: AnimatorSettings) -> None:
        with self._lock:
            self.settings = settings

    def set_overrides(self, values: Mapping[str, float]) -> None:
        """Pin parameters to values on top of the whole animation: every pose read returns them
        exactly until released (``{}`` releases them all)."""
        pose = pose_from_dict(values)
        with self._lock:
            self._overrides = {index_of(k): float(pose[index_of(k)]) for k in values}

    def start_talking(self) -> None:
        with self._lock:
            self._talking = True

    def stop_talking(self) -> None:
        with self._lock:
            self._talking = False

    @property
    def talking(self) -> bool:
        return self._talking

    def set_mouth(self, values: np.ndarray | None) -> None:
        """Drive the five mouth shapes directly (live lip sync); ``None`` hands them back."""
        with self._lock:
            self._external_mouth = None if values is None else np.clip(np.asarray(values, np.float32), 0, 1)

    def speak(self, track, start: float) -> None:
        """Play a lip-sync track (``tha.runtime.lipsync.MouthTrack``) from time ``start``."""
        with self._lock:
            self._track, self._track_start = track, start

    @property
    def status(self) -> str:
        return f"{self.emotion}{', talking' if self._talking else ''}"

    # --- the pose ----------------------------------------------------------------------

    def read(self, now: float) -> np.ndarray:
        with self._lock:
            if self._start is None:
                self._start = self._last = now
                self._schedule_blink(now)
                self._sway_start = self._sway_end = now
            # A read for an earlier time (a viewer's panel while the renderer poses ahead) must
            # not rewind the clock, or the next read would ease over the same interval twice.
            dt = max(0.0, now - self._last)
            self._last = max(self._last, now)
            s = self.settings
            self._base += (self._target_pose() - self._base) * self._ease(dt, s.transition_time)
            pose = self._base.copy()
            pose[_SWAY] += self._sway(now)
            pose[BREATHING] = s.breathing_strength * breath(now - self._start, s.breathing_cycle_duration)
            pose[_BLINK] = np.maximum(pose[_BLINK], self._blink(now))
            pose[_MOUTH] = np.maximum(pose[_MOUTH], self._mouth_shapes(now, dt))
            pose = np.clip(pose, LOWER, UPPER).astype(np.float32)
            # Pins go on last: sway, breathing, blink and mouth must not move a pinned parameter.
            # (They are in the target pose too, so the base rests there and easing back after a
            # release starts from the pinned value.)
            for index, value in self._overrides.items():
                pose[index] = value
            return pose

    def _target_pose(self) -> np.ndarray:
        pose = self.emotions.get(self.emotion, neutral_pose()).copy()
        for index, value in self._overrides.items():
            pose[index] = value
        return pose

    @staticmethod
    def _ease(dt: float, time_constant: float) -> float:
        return 1.0 if time_constant <= 0 else 1.0 - math.exp(-dt / time_constant)

    def _schedule_blink(self, now: float) -> None:
        s = self.settings
        self._next_blink = now + self._rng.uniform(s.blink_interval_min, s.blink_interval_max)

    def _blink(self, now: float) -> float:
        s = self.settings
        if now >= self._next_blink:
            self._blink_start = self._next_blink
            self._schedule_blink(self._next_blink + s.blink_duration)
        phase = (now - self._blink_start) / max(s.blink_duration, 1e-6)
        return s.blink_strength * math.sin(math.pi * phase) if 0.0 <= phase <= 1.0 else 0.0

    def _sway(self, now: float) -> np.ndarray:
        s = self.settings
        while now >= self._sway_end:
            # A new random target, reached with a smoothstep over one random interval. Targets
            # are unit-sized so a new strength applies at once.
            self._sway_from = self._sway_to
            self._sway_to = self._rng.uniform(-1, 1, len(_SWAY))
            self._sway_start = self._sway_end
            self._sway_end += self._rng.uniform(max(s.sway_interval_min, 1e-3), s.sway_interval_max)
        k = smoothstep((now - self._sway_start) / (self._sway_end - self._sway_start))
        macro = (self._sway_from + (self._sway_to - self._sway_from) * k) * s.sway_macro_strength
        t = now - self._start
        # Two incommensurate sines, so the wiggle never visibly repeats.
        w = 2 * math.pi / max(s.sway_micro_period, 1e-3)
        micro = 0.5 * s.sway_micro_strength * (np.sin(w * t + self._micro_phase[0])
                                               + np.sin(0.447 * w * t + self._micro_phase[1]))
        return (macro + micro) * _SWAY_SCALE

    def _mouth_shapes(self, now: float, dt: float) -> np.ndarray:
        s = self.settings
        if self._external_mouth is not None:
            return self._external_mouth
        target = np.zeros(len(MOUTH_SHAPES), np.float32)
        if self._track is not None:
            index = math.floor((now - self._track_start) * self._track.fps + 1e-6)  # float time jitter
            if 0 <= index < len(self._track):
                return self._track.mouth(index)
            if index >= len(self._track):
                self._track = None
        elif self._talking:
            if now >= self._next_mouth:
                self._next_mouth = now + 1.0 / max(s.talking_fps, 1e-3)
                shape = self._rng.choice(len(MOUTH_SHAPES), p=(0.6, 0.1, 0.1, 0.1, 0.1))
                self._mouth_target = np.zeros(len(MOUTH_SHAPES), np.float32)
                self._mouth_target[shape] = s.talking_strength * self._rng.uniform(0.2, 1.0)
            target = self._mouth_target
        self._mouth += (target - self._mouth) * self._ease(dt, s.mouth_smoothing)
        return self._mouth


def settings_to_dict(settings: AnimatorSettings) -> dict[str, Any]:
    return asdict(settings)
