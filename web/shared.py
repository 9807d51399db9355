"""The data the web page shares with Python, generated from Python's own definitions.

``tha export --web`` writes this as ``tha.json``; the page reads every number it needs for
poses, sliders, emotions, the idle animator and the webcam puppeteer from it, so nothing is
kept twice: the pose layout (``models/pose.py``), the slider groups (the viewer's panel),
the emotion presets (``configs/emotions.json``), the animator's settings, the FaceMesh ->
ARKit measurements (``sources/webcam.py``), the ARKit -> pose converter's settings
(``sources/arkit.py``) and the One Euro filter's (``sources/filters.py``).
"""
from __future__ import annotations

from dataclasses import asdict

from tha.models.pose import POSE_PARAMETERS, groups_in
from tha.runtime.emotions import load_emotions
from tha.runtime.sources import animator, webcam
from tha.runtime.sources.arkit import BLENDSHAPE_NAMES, ConverterSettings, settings_to_dict


def _pose_layout() -> list[dict]:
    return [{"name": p.name, "index": p.index, "group": p.group.name, "category": p.category.value,
             "lower": p.lower, "upper": p.upper, "default": p.default} for p in POSE_PARAMETERS]


def _slider_panels() -> list[dict]:
    """The viewer's panels in its order: a "chooser" panel picks one group, then its sliders."""
    from tha.viewer.overlay import CHOOSERS, PLAIN, TITLES

    panels = []
    for category in (*CHOOSERS, *PLAIN):
        panels.append({"title": TITLES[category], "category": category.value,
                       "chooser": category in CHOOSERS,
                       "groups": [{"name": g.name, "parameters": list(g.parameter_names)}
                                  for g in groups_in(category)]})
    return panels


def _animator() -> dict:
    settings = asdict(animator.AnimatorSettings())
    settings.pop("seed")
    return {"settings": settings, "blink": ["eye_wink_left", "eye_wink_right"], "breathing": "breathing",
            "sway": list(animator.SWAY_PARAMETERS), "sway_scale": animator._SWAY_SCALE.tolist()}


def _facemesh() -> dict:
    """Landmark indices and geometry scales of the FaceMesh -> blend shape measurement."""
    names = ("RIGHT_EYE", "LEFT_EYE", "FOREHEAD", "CHIN", "LIP_UPPER", "LIP_LOWER", "MOUTH_RIGHT", "MOUTH_LEFT",
             "EYE_CLOSED", "EYE_OPEN", "EYE_WIDE", "IRIS_REST_RISE", "IRIS_RANGE", "MOUTH_OPEN_FULL",
             "MOUTH_WIDTH_REST", "MOUTH_WIDTH_RANGE", "SMILE_START", "SMILE_FULL", "BROW_REST", "BROW_RANGE",
             "PITCH_BIAS")
    return {name.lower(): getattr(webcam, name) for name in names}


def shared_definition() -> dict:
    converter = settings_to_dict(ConverterSettings())
    return {
        "pose": _pose_layout(),
        "panels": _slider_panels(),
        "emotions": {name: pose.tolist() for name, pose in sorted(load_emotions().items())},
        "animator": _animator(),
        "facemesh": _facemesh(),
        "blendshapes": list(BLENDSHAPE_NAMES),
        "converter": converter,
        "one_euro": converter["smoothing"],
    }
