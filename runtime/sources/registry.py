"""Pose sources by name, for `tha view --source NAME` and friends.

Factories import their module on use, so listing sources stays cheap (mediapipe and OpenCV
are heavy)."""
from __future__ import annotations

from typing import Callable

from tha.models.errors import ThaError
from tha.runtime.sources.base import PoseSource, SliderSource


def _animator(**options) -> PoseSource:
    from tha.runtime.sources.animator import Animator, AnimatorSettings

    return Animator(AnimatorSettings(**options))


def _ifacialmocap(**options) -> PoseSource:
    from tha.runtime.sources.ifacialmocap import IFacialMocapSource

    return IFacialMocapSource(**options)


def _webcam(camera: int = 0, **options) -> PoseSource:
    from tha.runtime.sources.webcam import CaptureSource

    return CaptureSource(device=camera, **options)


def _video(path: str, **options) -> PoseSource:
    from tha.runtime.sources.webcam import CaptureSource

    return CaptureSource(path=path, **options)


SOURCES: dict[str, Callable[..., PoseSource]] = {
    "sliders": SliderSource,
    "animator": _animator,
    "ifacialmocap": _ifacialmocap,
    "webcam": _webcam,
    "video": _video,
}


def make_source(name: str, **options) -> PoseSource:
    if name not in SOURCES:
        raise ThaError(f"unknown pose source '{name}'; choose one of {', '.join(sorted(SOURCES))}")
    return SOURCES[name](**options)
