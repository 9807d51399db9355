"""The one converter from ARKit-style face tracking to the 45-d THA pose.

Both puppeteers report a :class:`FaceState`: the 52 ARKit blend shapes (0..1; ``...Left``
is the tracked person's left, as iFacialMocap and MediaPipe both name them) and the head
rotation in degrees (ARKit frame: x right, y up, z towards the camera; pitch about x,
positive = looking down; yaw about y; roll about z, positive = counter-clockwise as the
camera sees it). The mapping, after neutral calibration (rest face subtracted):

==========================  ==========================================================================
THA parameter               driven by
==========================  ==========================================================================
eyebrow_raised_{l,r}        browInnerUp + browOuterUp{L,R}
eyebrow_<down mode>_{l,r}   browDown{L,R} / brow_down_max, suppressed while smiling
eyebrow_happy_{l,r}         smile x smile degree
eye_surprised_{l,r}         eyeWide{L,R} / eye_wide_max
eye_wink (or relaxed)       eyeBlink{L,R} / blink_max x (1 - smile degree)
eye_happy_wink_{l,r}        eyeBlink{L,R} / blink_max x smile degree
eye_raised_lower_eyelid     cheekSquint{L,R} ramped between cheek_squint_min..max
iris_small_{l,r}            the profile's constant iris_small
iris_rotation_x             (eyeLookUp - eyeLookDown), both eyes, x iris_gain
iris_rotation_y             (eyeLookIn L - eyeLookOut L - eyeLookIn R + eyeLookOut R) / 2 x iris_gain
head_x, head_y, neck_z      -pitch / 15 deg, -yaw / 10 deg, roll / 15 deg (head_range)
body_y, body_z              body_follow x head_y, body_follow x neck_z
breathing                   a cosine cycle of breathing_cycle_duration seconds (as the animator)
mouth_aaa / ooo             jawOpen ramp, split by lip rounding (mouthFunnel, mouthPucker)
mouth_uuu                   rounded lips with the jaw closed
mouth_iii                   stretched lips (mouthStretch) with the jaw closed
mouth_raised_corner         smile (mouthSmile L/R mean)
mouth_lowered_corner        mouthFrown mean / mouth_frown_max, jaw closed
==========================  ==========================================================================

("smile degree" ramps the smile between smile_min and smile_max.) Then every parameter gets
the profile's ``value * gain + offset``, is clipped to its range, and the whole vector goes
through the One Euro filter. The settings live in a YAML profile
(``configs/puppet_profile.yaml`` documents the defaults).
"""
from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from tha.models.errors import ThaError
from tha.models.files import atomic_write_text
from tha.models.pose import LOWER, UPPER, index_of, neutral_pose
from tha.models.settings import load_settings
from tha.runtime.sources.animator import BREATHING, MIN_PERIOD, breath
from tha.runtime.sources.filters import OneEuroFilter, OneEuroSettings

BLENDSHAPE_NAMES: tuple[str, ...] = tuple(
    [f"eyeLook{d}{s}" for s in ("Left", "Right") for d in ("In", "Out", "Down", "Up")]
    + [f"eye{k}{s}" for s in ("Left", "Right") for k in ("Blink", "Squint", "Wide")]
    + ["browDownLeft", "browOuterUpLeft", "browDownRight", "browOuterUpRight", "browInnerUp",
       "noseSneerLeft", "noseSneerRight", "cheekSquintLeft", "cheekSquintRight", "cheekPuff"]
    + [f"mouth{k}{s}" for s in ("Left", "Right")
       for k in ("", "Dimple", "Frown", "LowerDown", "Press", "Smile", "Stretch", "UpperUp")]
    + ["mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
       "mouthShrugLower", "mouthShrugUpper", "jawLeft", "jawRight", "jawForward", "jawOpen", "tongueOut"]
)
assert len(BLENDSHAPE_NAMES) == 52

EYEBROW_DOWN_MODES = ("troubled", "angry", "lowered", "serious")
# Profile settings that are ramps (0 at the first, 1 at the second), and blend-shape values that
# give the full effect (a ramp from 0): an inverted ramp or a zero end reads as "never", silently.
RAMPS = (("smile_min", "smile_max"), ("cheek_squint_min", "cheek_squint_max"), ("jaw_open_min", "jaw_open_max"),
         ("mouth_round_min", "mouth_round_max"))
FULL_AT = ("brow_down_max", "eye_wide_max", "blink_max", "mouth_stretch_max", "mouth_frown_max")
WINK_MODES = ("wink", "relaxed")


@dataclass
class FaceState:
    """One tracked face: blend shapes by ARKit name (missing = 0) and head (pitch, yaw, roll) in degrees."""

    blendshapes: dict[str, float] = field(default_factory=dict)
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __getitem__(self, name: str) -> float:
        return self.blendshapes.get(name, 0.0)


@dataclass
class ConverterSettings:
    eyebrow_down_mode: str = "angry"
    wink_mode: str = "wink"
    smile_min: float = 0.4
    smile_max: float = 0.6
    brow_down_max: float = 0.4
    eye_wide_max: float = 0.5
    blink_max: float = 0.8
    cheek_squint_min: float = 0.1
    cheek_squint_max: float = 0.7
    iris_gain: float = 1.0 / 0.75
    iris_small: float = 0.0
    jaw_open_min: float = 0.1
    jaw_open_max: float = 0.4
    mouth_round_min: float = 0.25
    mouth_round_max: float = 0.5
    mouth_stretch_max: float = 0.5
    mouth_frown_max: float = 0.6
    head_range: tuple[float, float, float] = (15.0, 10.0, 15.0)  # degrees that reach +-1: pitch, yaw, roll
    body_follow: float = 0.5
    # Tracking sees no breathing: the pose breathes on this cycle (seconds), as the idle animator
    # does; 0 = no breathing.
    breathing_cycle_duration: float = 4.0
    gain: dict[str, float] = field(default_factory=dict)  # THA parameter name -> multiplier
    offset: dict[str, float] = field(default_factory=dict)  # THA parameter name -> added after gain
    smoothing: OneEuroSettings = field(default_factory=OneEuroSettings)
    neutral_head: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the calibrated rest head, degrees
    neutral_blendshapes: dict[str, float] = field(default_factory=dict)  # the calibrated rest face

    def __post_init__(self) -> None:
        # OmegaConf before 2.4 hands tuple fields over as lists and checks no tuple's length; and
        # no version checks a typed dict's values that are lists or mappings themselves.
        for name in ("head_range", "neutral_head"):
            value = tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(getattr(self, name)))
            if len(value) != 3:
                raise ThaError(f"{name} needs 3 numbers (pitch, yaw, roll), not {len(value)}")
            setattr(self, name, value)
        for name in ("gain", "offset", "neutral_blendshapes"):
            setattr(self, name, {key: _number(f"{name}.{key}", v) for key, v in getattr(self, name).items()})
        self.validate()

    def validate(self) -> None:
        for name, value in [*((f.name, getattr(self, f.name)) for f in fields(self)),
                            *((f"smoothing.{f.name}", getattr(self.smoothing, f.name)) for f in fields(self.smoothing))]:
            if isinstance(value, float) and not math.isfinite(value):  # .nan / .inf in YAML: every pose NaN or stuck
                raise ThaError(f"{name} {value} must be a finite number")
        for low, high in RAMPS:
            if not getattr(self, low) < getattr(self, high):
                raise ThaError(f"{low} {getattr(self, low):g} must be below {high} {getattr(self, high):g} (the "
                               "blend-shape values where the effect starts and is full)")
        for name in FULL_AT:
            if not getattr(self, name) > 0:
                raise ThaError(f"{name} {getattr(self, name):g} must be > 0 (the blend-shape value that gives the "
                               "full effect; at 0 it never shows)")
        if self.eyebrow_down_mode not in EYEBROW_DOWN_MODES:
            raise ThaError(f"eyebrow_down_mode '{self.eyebrow_down_mode}' is not one of {', '.join(EYEBROW_DOWN_MODES)}")
        if self.wink_mode not in WINK_MODES:
            raise ThaError(f"wink_mode '{self.wink_mode}' is not one of {', '.join(WINK_MODES)}")
        for name in (*self.gain, *self.offset):
            index_of(name)
        for name in self.neutral_blendshapes:
            if name not in BLENDSHAPE_NAMES:
                raise ThaError(f"neutral_blendshapes: '{name}' is not an ARKit blend shape name")
        if not (self.breathing_cycle_duration == 0 or self.breathing_cycle_duration >= MIN_PERIOD):
            raise ThaError(f"breathing_cycle_duration {self.breathing_cycle_duration} must be 0 (off) or seconds "
                           f">= {MIN_PERIOD}")
        # each is a divisor: zero or less would kill the tracking thread at the first frame
        for i, degrees in enumerate(self.head_range):
            if not degrees > 0:
                raise ThaError(f"head_range[{i}] {degrees} must be > 0 degrees (pitch, yaw, roll that reach +-1)")
        for name in ("min_cutoff", "derivative_cutoff"):
            value = getattr(self.smoothing, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ThaError(f"smoothing.{name} {value!r} must be > 0 Hz")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ThaError(f"{name}: {value!r} is not a number")
    if not math.isfinite(value):
        raise ThaError(f"{name} {value} must be a finite number")
    return float(value)


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below lo, 1 at or above hi, linear between; a degenerate range gives 0."""
    if hi <= lo:
        return 0.0
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def _clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(min(hi, max(lo, x)))


def map_face(face: FaceState, s: ConverterSettings) -> np.ndarray:
    """The documented mapping (module docstring) on an already-calibrated face, before gain/offset."""
    pose = neutral_pose()

    def put(name: str, value: float) -> None:
        pose[index_of(name)] = value

    smile = (face["mouthSmileLeft"] + face["mouthSmileRight"]) / 2.0
    smiling = _ramp(smile, s.smile_min, s.smile_max)
    for side, arkit in (("left", "Left"), ("right", "Right")):
        put(f"eyebrow_raised_{side}", _clip(face["browInnerUp"] + face[f"browOuterUp{arkit}"]))
        put(f"eyebrow_{s.eyebrow_down_mode}_{side}", (1.0 - smiling) * _ramp(face[f"browDown{arkit}"], 0.0, s.brow_down_max))
        put(f"eyebrow_happy_{side}", _clip(smile) * smiling)
        put(f"eye_surprised_{side}", _ramp(face[f"eyeWide{arkit}"], 0.0, s.eye_wide_max))
        blink = _ramp(face[f"eyeBlink{arkit}"], 0.0, s.blink_max)
        put(f"eye_{s.wink_mode}_{side}", (1.0 - smiling) * blink)
        put(f"eye_happy_wink_{side}", smiling * blink)
        put(f"eye_raised_lower_eyelid_{side}", _ramp(face[f"cheekSquint{arkit}"], s.cheek_squint_min, s.cheek_squint_max))
        put(f"iris_small_{side}", s.iris_small)

    look_up = face["eyeLookUpLeft"] + face["eyeLookUpRight"] - face["eyeLookDownLeft"] - face["eyeLookDownRight"]
    look_side = face["eyeLookInLeft"] - face["eyeLookOutLeft"] - face["eyeLookInRight"] + face["eyeLookOutRight"]
    put("iris_rotation_x", _clip(look_up / 2.0 * s.iris_gain, -1.0, 1.0))
    put("iris_rotation_y", _clip(look_side / 2.0 * s.iris_gain, -1.0, 1.0))

    pitch, yaw, roll = face.head
    head_y = _clip(-yaw / s.head_range[1], -1.0, 1.0)
    neck_z = _clip(roll / s.head_range[2], -1.0, 1.0)
    put("head_x", _clip(-pitch / s.head_range[0], -1.0, 1.0))
    put("head_y", head_y)
    put("neck_z", neck_z)
    put("body_y", _clip(s.body_follow * head_y, -1.0, 1.0))
    put("body_z", _clip(s.body_follow * neck_z, -1.0, 1.0))

    opened = _ramp(face["jawOpen"], s.jaw_open_min, s.jaw_open_max)
    rounded = _ramp(max(face["mouthFunnel"], face["mouthPucker"]), s.mouth_round_min, s.mouth_round_max)
    stretched = _ramp((face["mouthStretchLeft"] + face["mouthStretchRight"]) / 2.0, 0.0, s.mouth_stretch_max)
    put("mouth_aaa", opened * (1.0 - rounded))
    put("mouth_ooo", opened * rounded)
    put("mouth_uuu", (1.0 - opened) * rounded)
    put("mouth_iii", (1.0 - opened) * (1.0 - rounded) * stretched)
    frown = _ramp((face["mouthFrownLeft"] + face["mouthFrownRight"]) / 2.0, 0.0, s.mouth_frown_max)
    for side in ("left", "right"):
        put(f"mouth_raised_corner_{side}", _clip(smile))
        put(f"mouth_lowered_corner_{side}", (1.0 - opened) * frown)
    return pose


def relative_to_neutral(face: FaceState, s: ConverterSettings) -> FaceState:
    """The face as a change from the calibrated rest face: each shape rescaled so its rest value
    reads 0 and 1 stays 1; the rest head angles subtracted."""
    shapes = {}
    for name, value in face.blendshapes.items():
        rest = s.neutral_blendshapes.get(name, 0.0)
        shapes[name] = _clip((value - rest) / (1.0 - rest)) if rest < 1.0 else 0.0
    head = tuple(float(a - b) for a, b in zip(face.head, s.neutral_head))
    return FaceState(shapes, head)  # type: ignore[arg-type]


def average_faces(faces: list[FaceState]) -> FaceState:
    names = {n for f in faces for n in f.blendshapes}
    shapes = {n: float(np.mean([f[n] for f in faces])) for n in names}
    head = tuple(float(v) for v in np.mean([f.head for f in faces], axis=0))
    return FaceState(shapes, head)  # type: ignore[arg-type]


def ease_to_neutral(pose: np.ndarray, seconds_late: float, ease_seconds: float) -> np.ndarray:
    """A lost tracker's pose, ``seconds_late`` past its stale limit: slides to neutral along a
    smoothstep over ``ease_seconds`` (no jolt at either end)."""
    if seconds_late <= 0.0:
        return pose
    blend = min(1.0, seconds_late / ease_seconds) if ease_seconds > 0 else 1.0
    blend = blend * blend * (3.0 - 2.0 * blend)
    return ((1.0 - blend) * pose + blend * neutral_pose()).astype(np.float32)


class ArkitConverter:
    """FaceState -> smoothed (45,) pose. Thread-safe: trackers convert on their own threads
    while the UI may request a calibration."""

    def __init__(self, settings: ConverterSettings | None = None):
        self.settings = settings or ConverterSettings()
        self.settings.validate()
        self._filter = OneEuroFilter(self.settings.smoothing)
        self._lock = threading.Lock()
        self._calibration: list[FaceState] | None = None
        self._calibration_frames = 0
        self.on_calibrated = None  # optional callback(settings) once a requested calibration completes

    @property
    def calibrating(self) -> bool:
        return self._calibration is not None

    def request_calibration(self, frames: int = 15) -> None:
        """Average the next ``frames`` tracked faces and take them as the rest face."""
        with self._lock:
            self._calibration = []
            self._calibration_frames = max(1, frames)

    def calibrate(self, face: FaceState) -> None:
        """Take ``face`` as the user's rest face: it will convert to the neutral pose."""
        with self._lock:
            self._set_neutral(face)

    def _set_neutral(self, face: FaceState) -> None:
        self.settings.neutral_head = tuple(float(a) for a in face.head)  # type: ignore[assignment]
        self.settings.neutral_blendshapes = {n: float(v) for n, v in face.blendshapes.items() if v > 0.0}
        self._filter.reset()

    def raw_pose(self, face: FaceState, t: float | None = None) -> np.ndarray:
        """Mapping (with breathing at time ``t``, when given) + gain/offset + clipping, no smoothing."""
        pose = map_face(relative_to_neutral(face, self.settings), self.settings)
        cycle = self.settings.breathing_cycle_duration
        if t is not None and cycle > 0:
            pose[BREATHING] = breath(t, cycle)
        for name, gain in self.settings.gain.items():
            pose[index_of(name)] *= gain
        for name, offset in self.settings.offset.items():
            pose[index_of(name)] += offset
        return np.clip(pose, LOWER, UPPER).astype(np.float32)

    def convert(self, face: FaceState, t: float | None = None) -> np.ndarray:
        """The pose for ``face`` tracked at time ``t`` (seconds); with ``t`` it is One Euro smoothed."""
        finished = False
        with self._lock:
            if self._calibration is not None:
                self._calibration.append(face)
                if len(self._calibration) >= self._calibration_frames:
                    self._set_neutral(average_faces(self._calibration))
                    self._calibration = None
                    finished = True
            pose = self.raw_pose(face, t)
            if t is not None:
                pose = self._filter.filter(pose, t)
        if finished and self.on_calibrated is not None:
            self.on_calibrated(self.settings)
        return pose


# ---- YAML profiles -------------------------------------------------------------------------

def settings_to_dict(s: ConverterSettings) -> dict:
    d = asdict(s)
    d["head_range"] = list(s.head_range)
    d["neutral_head"] = list(s.neutral_head)
    return d


def load_profile(path: str | Path) -> ConverterSettings:
    path = Path(path)
    if path.is_dir():
        raise ThaError(f"puppet profile '{path}' is a folder; give a YAML file, e.g. {path / 'puppet_profile.yaml'}")
    if not path.is_file():
        raise ThaError(f"puppet profile '{path}' not found; pass an existing YAML file or omit --profile")
    return load_settings(ConverterSettings, path, f"puppet profile '{path}'", fix="see configs/puppet_profile.yaml")


def save_profile(path: str | Path, settings: ConverterSettings) -> None:
    text = "# tha puppet profile: see configs/puppet_profile.yaml for what each setting does\n"
    text += yaml.safe_dump(settings_to_dict(settings), sort_keys=False)
    atomic_write_text(path, text)
