"""Emotion presets: the 28 labels SillyTavern's classifier emits -> pose values.

The shipped set lives in ``configs/emotions.json`` as ``{emotion: {parameter: value}}``;
parameters left out stay neutral. SillyTavern-extras' ``_emotions.json`` spells parameters
with an ``_index`` suffix (``eyebrow_troubled_left_index``); both spellings are accepted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tha.configs import CONFIGS
from tha.models.errors import ThaError
from tha.models.files import read_json
from tha.models.pose import pose_from_dict

DEFAULT_EMOTIONS_FILE = CONFIGS / "emotions.json"
NEUTRAL = "neutral"

# SillyTavern's expressions extension (the go_emotions classifier) emits exactly these.
EMOTION_LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "neutral", "optimism", "pride", "realization",
    "relief", "remorse", "sadness", "surprise",
)

Emotions = dict[str, np.ndarray]


def _parameter_name(key: str) -> str:
    return key[: -len("_index")] if key.endswith("_index") else key


def parse_emotions(data: Any, label: str = "emotion templates") -> Emotions:
    """``{emotion: {parameter: value}}`` -> ``{emotion: (45,) pose}``; bad input is one ThaError."""
    if not isinstance(data, Mapping):
        raise ThaError(f"{label} must be a JSON object of emotion -> {{parameter: value}}, "
                       f"not {type(data).__name__}")
    emotions: Emotions = {}
    for name, values in data.items():
        if not isinstance(values, Mapping):
            raise ThaError(f"{label}: emotion '{name}' must map parameter names to numbers, "
                           f"not {type(values).__name__}")
        try:
            emotions[str(name)] = pose_from_dict({_parameter_name(str(k)): v for k, v in values.items()})
        except ThaError as err:
            raise ThaError(f"{label}: emotion '{name}': {err}") from None
    return emotions


def load_emotions(path: str | Path | None = None) -> Emotions:
    """The shipped presets, or those of ``path`` laid over them."""
    emotions = _read(DEFAULT_EMOTIONS_FILE)
    if path is not None:
        emotions.update(_read(Path(path)))
    return emotions


def _read(path: Path) -> Emotions:
    return parse_emotions(read_json(path, "emotion file"), str(path))


def resolve(emotions: Emotions, name: str) -> str:
    """The preset to use for ``name``: itself if known, else neutral (as SillyTavern-extras does)."""
    return name if name in emotions else NEUTRAL
