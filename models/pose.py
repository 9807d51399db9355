"""The 45 THA4 pose parameters as data: the single source of truth for names, order and ranges.

Sliders, mocap converters, JSON pose files and the networks all index poses through this
module, so a parameter is never spelled twice.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tha.models.errors import ThaError


class Category(str, Enum):
    EYEBROW = "eyebrow"
    EYE = "eye"
    IRIS_MORPH = "iris_morph"
    MOUTH = "mouth"
    IRIS_ROTATION = "iris_rotation"
    FACE_ROTATION = "face_rotation"
    BODY_ROTATION = "body_rotation"
    BREATHING = "breathing"


@dataclass(frozen=True)
class PoseGroup:
    """One named group: one slot, or two (``_left``, ``_right``)."""

    name: str
    category: Category
    arity: int = 1
    lower: float = 0.0
    upper: float = 1.0
    default: float = 0.0

    @property
    def parameter_names(self) -> tuple[str, ...]:
        if self.arity == 2:
            return (f"{self.name}_left", f"{self.name}_right")
        return (self.name,)


@dataclass(frozen=True)
class PoseParameter:
    name: str
    index: int
    group: PoseGroup

    @property
    def category(self) -> Category:
        return self.group.category

    @property
    def lower(self) -> float:
        return self.group.lower

    @property
    def upper(self) -> float:
        return self.group.upper

    @property
    def default(self) -> float:
        return self.group.default


def _groups() -> tuple[PoseGroup, ...]:
    c = Category
    eyebrow = [PoseGroup(f"eyebrow_{s}", c.EYEBROW, 2)
               for s in ("troubled", "angry", "lowered", "raised", "happy", "serious")]
    eye = [PoseGroup(f"eye_{s}", c.EYE, 2)
           for s in ("wink", "happy_wink", "surprised", "relaxed", "unimpressed", "raised_lower_eyelid")]
    mouth_shapes = [PoseGroup(f"mouth_{s}", c.MOUTH) for s in ("aaa", "iii", "uuu", "eee", "ooo", "delta")]
    return (
        *eyebrow,
        *eye,
        PoseGroup("iris_small", c.IRIS_MORPH, 2),
        *mouth_shapes,
        PoseGroup("mouth_lowered_corner", c.MOUTH, 2),
        PoseGroup("mouth_raised_corner", c.MOUTH, 2),
        PoseGroup("mouth_smirk", c.MOUTH),
        PoseGroup("iris_rotation_x", c.IRIS_ROTATION, lower=-1.0),
        PoseGroup("iris_rotation_y", c.IRIS_ROTATION, lower=-1.0),
        PoseGroup("head_x", c.FACE_ROTATION, lower=-1.0),
        PoseGroup("head_y", c.FACE_ROTATION, lower=-1.0),
        PoseGroup("neck_z", c.FACE_ROTATION, lower=-1.0),
        PoseGroup("body_y", c.BODY_ROTATION, lower=-1.0),
        PoseGroup("body_z", c.BODY_ROTATION, lower=-1.0),
        PoseGroup("breathing", c.BREATHING),
    )


POSE_GROUPS: tuple[PoseGroup, ...] = _groups()
POSE_PARAMETERS: tuple[PoseParameter, ...] = tuple(
    PoseParameter(name, i, group)
    for i, (name, group) in enumerate((n, g) for g in POSE_GROUPS for n in g.parameter_names)
)
POSE_SIZE = len(POSE_PARAMETERS)
PARAMETER_NAMES: tuple[str, ...] = tuple(p.name for p in POSE_PARAMETERS)
_INDEX = {p.name: p.index for p in POSE_PARAMETERS}

# Slices the networks consume (SPEC: face morpher takes 0:39, teacher stages split further).
EYEBROW_SLICE = slice(0, 12)
FACE_SLICE = slice(0, 39)
FACE_NON_EYEBROW_SLICE = slice(12, 39)
ROTATION_SLICE = slice(39, 45)

LOWER = np.array([p.lower for p in POSE_PARAMETERS], dtype=np.float32)
UPPER = np.array([p.upper for p in POSE_PARAMETERS], dtype=np.float32)

assert POSE_SIZE == 45 and _INDEX["iris_rotation_x"] == 37 and _INDEX["breathing"] == 44


def index_of(name: str) -> int:
    """Index of a parameter by name; unknown names get the closest valid spellings."""
    try:
        return _INDEX[name]
    except KeyError:
        raise ThaError(f"unknown pose parameter '{name}'; {_suggest(name)}") from None


def groups_in(category: Category) -> list[PoseGroup]:
    return [g for g in POSE_GROUPS if g.category == category]


def neutral_pose() -> np.ndarray:
    return np.array([p.default for p in POSE_PARAMETERS], dtype=np.float32)


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, PARAMETER_NAMES, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "? (`tha info` lists all 45)"
    return "`tha info MODEL_DIR` lists all 45 names"


def check_value(name: str, value: float, *, clamp: bool = True) -> float:
    """Validate one value. Out-of-range values are clamped with a warning (``clamp=True``)
    or refused; NaN and infinities are always refused."""
    p = POSE_PARAMETERS[index_of(name)]
    value = float(value)
    if not math.isfinite(value):
        raise ThaError(f"pose parameter '{name}' is {value}; give a number in [{p.lower}, {p.upper}]")
    if p.lower <= value <= p.upper:
        return value
    message = f"pose parameter '{name}'={value} is outside [{p.lower:g}, {p.upper:g}]"
    if not clamp:
        raise ThaError(message + "; give a value inside the range")
    clamped = min(max(value, p.lower), p.upper)
    warnings.warn(f"{message}; clamped to {clamped:g}", stacklevel=2)
    return clamped


def pose_from_dict(values: Mapping[str, float], *, base: np.ndarray | None = None,
                   clamp: bool = True) -> np.ndarray:
    """A (45,) float32 pose from ``{name: value}``, starting from ``base`` (neutral by default)."""
    pose = neutral_pose() if base is None else np.array(base, dtype=np.float32, copy=True)
    for name, value in values.items():
        # JSON's "0.5" and true are not numbers: taking them would hide a broken pose file.
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ThaError(f"pose parameter '{name}' has value {value!r}; give a number, e.g. \"{name}\": 0.5")
        try:
            number = float(value)
        except OverflowError:
            raise ThaError(f"pose parameter '{name}' has value {value!r}; give a number in range") from None
        pose[index_of(name)] = check_value(name, number, clamp=clamp)
    return pose


def flat_pose(pose: np.ndarray) -> np.ndarray:
    """``pose`` as a flat (45,) float32 array; a wrong size is one ThaError line."""
    flat = np.asarray(pose, dtype=np.float32).reshape(-1)
    if flat.shape[0] != POSE_SIZE:
        raise ThaError(f"a pose has {POSE_SIZE} values, got {flat.shape[0]}")
    return flat


def check_pose(pose: np.ndarray) -> np.ndarray:
    """``flat_pose``, and NaN/inf refused naming the parameter (it would render silently).
    Out-of-range finite values pass: callers such as the CLI clamp them."""
    flat = flat_pose(pose)
    if not np.isfinite(flat).all():
        i = int(np.flatnonzero(~np.isfinite(flat))[0])
        check_value(PARAMETER_NAMES[i], float(flat[i]))  # raises, naming the parameter
    return flat


def pose_to_dict(pose: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(PARAMETER_NAMES, flat_pose(pose))}


def parse_assignments(items: Iterable[str], *, base: np.ndarray | None = None,
                      clamp: bool = True) -> np.ndarray:
    """Parse ``name=value`` strings (the CLI's ``--set``) onto ``base``."""
    values: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ThaError(f"--set '{item}' is not NAME=VALUE, e.g. --set head_x=0.4")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise ThaError(f"--set '{item}': '{value}' is not a number") from None
    return pose_from_dict(values, base=base, clamp=clamp)


def load_pose_file(path: str | Path, *, base: np.ndarray | None = None, clamp: bool = True) -> np.ndarray:
    """Read a JSON pose file: an object of parameter name -> value (missing names stay at base)."""
    from tha.models.files import read_json

    data = read_json(path, "pose file")
    if not isinstance(data, dict):
        raise ThaError(f"pose file {path} must hold a JSON object of name -> value, not {type(data).__name__}")
    try:
        return pose_from_dict(data, base=base, clamp=clamp)
    except ThaError as err:
        raise ThaError(f"pose file {path}: {err}") from None


def save_pose_file(path: str | Path, pose: np.ndarray) -> None:
    from tha.models.files import atomic_write_text

    atomic_write_text(Path(path), json.dumps(pose_to_dict(pose), indent=2) + "\n")
