"""The face-driven pose sources `tha puppet` offers (iFacialMocap on a phone, a webcam, a
video file), each turning tracked ARKit-style faces into poses through a converter whose gains
and rest face come from a YAML profile (configs/puppet_profile.yaml)."""
from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

from tha.runtime.sources.arkit import ArkitConverter
from tha.runtime.sources.base import PoseSource

log = logging.getLogger(__name__)


class Puppeteer(str, Enum):
    ifacialmocap = "ifacialmocap"
    webcam = "webcam"
    video = "video"


def load_converter(profile: Path | None, calibrate: bool) -> ArkitConverter:
    """The ARKit converter from the profile; with ``calibrate`` it takes the first tracked
    faces as the rest face and writes them back to the profile."""
    from tha.models.errors import ThaError
    from tha.models.files import check_output_path
    from tha.runtime.sources.arkit import ConverterSettings, load_profile, save_profile

    if profile is not None and (profile.exists() or not calibrate):
        settings = load_profile(profile)
    else:
        settings = ConverterSettings()
    if calibrate and profile is not None:
        # now, not when the first faces arrive: by then the puppet is running and nobody reads a failure
        check_output_path(profile, "--profile")
    converter = ArkitConverter(settings)
    if calibrate:
        converter.request_calibration()
        if profile is not None:
            def saved(s) -> None:
                # runs on the tracking thread: a failure (disk full, folder removed since startup)
                # is said here, and the rest face still applies to this run
                try:
                    save_profile(profile, s)
                except ThaError as err:
                    log.warning("calibrated, but the rest face was not saved: %s", err)
                    return
                log.info("calibrated: rest face saved to %s", profile)

            converter.on_calibrated = saved
    return converter


def make_puppeteer(kind: Puppeteer, converter: ArkitConverter, *, bind: str, port: int, phone: str | None,
                   camera: int, face_landmarker: Path | None, video: Path | None, realtime: bool) -> PoseSource:
    """The pose source of ``kind``; the other kinds' settings are ignored. ``realtime`` plays a
    video at its own rate, otherwise it yields every frame however slow the reader."""
    if kind is Puppeteer.ifacialmocap:
        from tha.runtime.sources.ifacialmocap import IFacialMocapSource

        return IFacialMocapSource(bind=bind, port=port, phone=phone, converter=converter)
    from tha.runtime.sources.webcam import CaptureSource  # mediapipe and OpenCV: imported on use

    tracking = dict(converter=converter, face_landmarker=face_landmarker)
    if kind is Puppeteer.webcam:
        return CaptureSource(device=camera, **tracking)
    return CaptureSource(path=video, realtime=realtime, **tracking)
