"""`tha puppet`: the viewer driven by a face: iFacialMocap on a phone, a webcam, or a video file."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from tha.models.errors import ThaError


class Puppeteer(str, Enum):
    ifacialmocap = "ifacialmocap"
    webcam = "webcam"
    video = "video"


def _converter(profile: Path | None, calibrate: bool):
    """The ARKit converter from the profile; with ``calibrate`` it takes the first tracked
    faces as the rest face and writes them back to the profile."""
    from tha.runtime.sources.arkit import ArkitConverter, ConverterSettings, load_profile, save_profile

    if profile is not None and (profile.exists() or not calibrate):
        settings = load_profile(profile)
    else:
        settings = ConverterSettings()
    converter = ArkitConverter(settings)
    if calibrate:
        converter.request_calibration()
        if profile is not None:
            def saved(s) -> None:
                save_profile(profile, s)
                print(f"calibrated: rest face saved to {profile}")

            converter.on_calibrated = saved
    return converter


def render_video_offline(backend, source, frames: int | None, record: Path | None) -> int:
    """Every video frame -> exactly one drawn (and recorded) frame, however slow the backend."""
    from tqdm import tqdm

    from tha.viewer.app import Viewer

    with Viewer(backend, source, offscreen=True, overlay=False, record=record, fps=source.fps) as viewer:
        with tqdm(total=frames, unit="frame", desc="puppet") as progress:
            while (frames is None or viewer.frames < frames) and source.step():
                viewer.wait_for_pose(source.read(0.0))
                viewer.step()
                progress.update(1)
        return viewer.frames


def puppet(
    model_dir: Path = typer.Argument(..., help="Character model directory (or a hub name)."),
    video: Optional[Path] = typer.Argument(None, help="The video file, for --source video."),
    source: Puppeteer = typer.Option(Puppeteer.ifacialmocap, "--source", help="What drives the face."),
    phone: Optional[str] = typer.Option(None, "--phone", help="iFacialMocap: the phone's IP; sends it the start string."),
    bind: str = typer.Option("0.0.0.0", "--bind", help="iFacialMocap: address to listen on. Default: all "
                             "interfaces, so the phone can reach it; give this computer's LAN address "
                             "to listen on one network only."),
    port: int = typer.Option(49983, "--port", help="iFacialMocap: UDP port to listen on."),
    camera: int = typer.Option(0, "--camera", help="Webcam: device index."),
    face_landmarker: Optional[Path] = typer.Option(
        None, "--face-landmarker", help="Webcam/video: a MediaPipe FaceLandmarker .task file (52 blend shapes)."),
    profile: Optional[Path] = typer.Option(None, "--profile", help="YAML converter profile (configs/puppet_profile.yaml)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Take the first tracked faces as your rest face (saved to --profile)."),
    backend: str = typer.Option("auto", "--backend", help="Inference backend."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    offscreen: bool = typer.Option(False, "--offscreen", help="No window (needs --frames, or a video)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Stop after this many drawn frames."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the drawn frames: .mp4/.webm/.mov/.gif or a folder of PNGs."),
    fps: float = typer.Option(30.0, "--fps", min=1.0, help="Frame rate for headless and recorded runs."),
) -> None:
    """Drive a character with your face: iFacialMocap over UDP, a webcam, or a video file."""
    from tha.models.hub import resolve_model
    from tha.runtime.renderer import open_backend
    from tha.runtime.sources.registry import make_source

    if source is Puppeteer.video and video is None:
        raise ThaError("--source video needs the video file: tha puppet MODEL_DIR --source video FILE")
    if source is not Puppeteer.video and video is not None:
        raise ThaError(f"'{video}' is only used with --source video")
    if source is not Puppeteer.video and offscreen and frames is None:
        raise ThaError("--offscreen with a live source needs --frames N")
    converter = _converter(profile, calibrate)
    if source is Puppeteer.ifacialmocap:
        driver = make_source("ifacialmocap", bind=bind, port=port, phone=phone, converter=converter)
    else:
        options = dict(converter=converter, face_landmarker=face_landmarker)
        if source is Puppeteer.webcam:
            driver = make_source("webcam", camera=camera, **options)
        else:  # headless video renders frame by frame; in a window it plays in real time
            driver = make_source("video", path=video, realtime=not offscreen, **options)

    if not offscreen:
        from tha.viewer.window import require_display

        require_display()
    with open_backend(backend, resolve_model(model_dir), device) as engine:
        if source is Puppeteer.video and offscreen:
            drawn = render_video_offline(engine, driver, frames, record)
            print(f"drew {drawn} frames" + (f" to {record}" if record else "") + f" ({driver.status})")
            return
        from tha.viewer.app import run_viewer

        run_viewer(engine, driver, offscreen=offscreen, max_frames=frames, record=record, fps=fps,
                   title=f"tha puppet: {source.value}")
        if offscreen:  # no overlay shows the source's counters: say them once at the end
            print(f"{source.value}: {driver.status}")


def register(app: typer.Typer) -> None:
    app.command("puppet")(puppet)
