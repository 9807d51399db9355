"""`tha demo`, `tha view`, `tha puppet`: the commands that show a character in the viewer (or
draw the viewer's frames headless with --offscreen)."""
from __future__ import annotations

from contextlib import closing
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from tha.models.errors import ThaError
from tha.runtime.options import (Backend, BackendChoice, Device, Emotion, Fps, Frames, ModelDir, Precision,
                                Record, fps_option, precision_name, record_option)
from tha.runtime.puppeteers import Puppeteer

# The viewer's keys (viewer/app.py KEYS, CTRL_KEYS); each command's help lists those that act there.
_KEYS = (("H", "hide/show the panel"), ("R", "reset the pose"), ("S", "screenshot (PNG in the current folder)"),
         ("B", "next background (checkerboard, green screen, white, black)"),
         ("C", "calibrate: take the tracked face as the rest face"),
         ("Ctrl+S", "save the pose JSON named in the panel"), ("Ctrl+O", "load the pose JSON named in the panel"),
         ("Esc or Q", "quit"))


def _keys_help(*left_out: str) -> str:
    return "Keys: " + "; ".join(f"{key} {does}" for key, does in _KEYS if key not in left_out) + "."


VIEW_HELP = (
    "Pose a character live in a window, with an ImGui slider panel.\n\n"
    + _keys_help("C") + "\n\n"  # sliders and the animator have no rest face
    "--offscreen draws with no window system (EGL), for servers and recordings; give --frames or it runs "
    "until interrupted."
)
PUPPET_HELP = (
    "Drive a character with your face: iFacialMocap, webcam or video.\n\n"
    "iFacialMocap sends ARKit blend shapes from a phone over UDP; a webcam or video file is tracked with "
    "MediaPipe.\n\n"
    + _keys_help("R", "Ctrl+O")  # the face drives the pose: reset and loading have nothing to set
)
OFFSCREEN_HELP = "No window: draw in a headless EGL context (servers, CI, recordings)."


def _say_wrote(path: Path) -> None:
    """The viewer's recording is in place (also after Ctrl+C or SIGTERM, which keep it)."""
    typer.echo(f"wrote {path}")


def _require_display_unless(offscreen: bool) -> None:
    """Fail with one line before any model loads when a window is wanted and there is no display."""
    if not offscreen:
        from tha.viewer.window import require_display

        require_display()


def demo(
    offscreen: bool = typer.Option(False, "--offscreen", help=OFFSCREEN_HELP),
    frames: Frames = None,
    record: Record = None,
    fps: Fps = 30.0,
    emotion: Emotion = "joy",
    backend: Backend = BackendChoice.auto,
    device: Device = "cpu",
    precision: Precision = None,
    interpolate: bool = typer.Option(True, help="Pose ahead and show frames blended between model "
                                     "frames (fastcpu); --no-interpolate: one model frame per shown frame."),
) -> None:
    """Open the viewer with the built-in demo character, idling.

    Needs no download: the demo student ships with tha (configs/demo)."""
    from tha.runtime.demo_character import DEMO_MODEL_DIR
    from tha.runtime.renderer import open_backend
    from tha.runtime.sources.animator import Animator
    from tha.viewer.app import run_viewer

    source = Animator()
    source.set_emotion(emotion)
    _require_display_unless(offscreen)
    with open_backend(backend.value, DEMO_MODEL_DIR, device, precision_name(precision)) as engine:
        run_viewer(engine, source, offscreen=offscreen, max_frames=frames, record=record, fps=fps,
                   title="tha demo", interpolate=interpolate, on_recorded=_say_wrote)


class ViewSource(str, Enum):
    sliders = "sliders"
    animator = "animator"


def view(
    model_dir: ModelDir,
    backend: Backend = BackendChoice.auto,
    precision: Precision = None,
    source: ViewSource = typer.Option(ViewSource.sliders, "--source", help="Where poses come from: the panel's "
                                      "sliders, or the idle animator (faces drive a character: `tha puppet`)."),
    device: Device = "cpu",
    offscreen: bool = typer.Option(False, "--offscreen", help=OFFSCREEN_HELP),
    frames: Frames = None,
    record: Record = None,
    fps: Fps = 30.0,
    no_overlay: bool = typer.Option(False, "--no-overlay", help="Start with the panel hidden."),
    interpolate: bool = typer.Option(True, help="With the animator source and fastcpu: pose ahead and show "
                                     "frames blended between model frames at --fps."),
) -> None:
    from tha.models.hub import resolve_model
    from tha.runtime.renderer import open_backend
    from tha.runtime.sources.animator import Animator
    from tha.runtime.sources.base import SliderSource
    from tha.viewer.app import run_viewer

    _require_display_unless(offscreen)
    pose_source = Animator() if source is ViewSource.animator else SliderSource()
    with open_backend(backend.value, resolve_model(model_dir), device, precision_name(precision)) as engine:
        run_viewer(engine, pose_source, offscreen=offscreen, max_frames=frames, record=record, fps=fps,
                   overlay=not no_overlay, title=f"tha - {Path(model_dir).name}", interpolate=interpolate,
                   on_recorded=_say_wrote)


def _video_poses(source, frames: int | None):
    """The pose of each video frame in turn, however slow the backend."""
    count = 0
    while (frames is None or count < frames) and source.step():
        count += 1
        yield source.read(0.0)


# Headless, a video is drawn one frame per video frame, so its recording keeps the video's rate.
_VIDEO_RATE = " With --source video --offscreen: one frame per video frame, at the video's own frame rate."
PuppetRecord = record_option(_VIDEO_RATE)
PuppetFps = fps_option(" Refused with --source video --offscreen, which draws one frame per video frame at the "
                       "video's own frame rate.")


def puppet(
    ctx: typer.Context,
    model_dir: ModelDir,
    video: Optional[Path] = typer.Argument(None, help="The video file, for --source video."),
    source: Puppeteer = typer.Option(Puppeteer.ifacialmocap, "--source", help="What drives the face."),
    phone: Optional[str] = typer.Option(None, "--phone", help="iFacialMocap: the phone's IP; sends it the start string."),
    bind: str = typer.Option("0.0.0.0", "--bind", help="iFacialMocap: address to listen on. Default: all "
                             "interfaces, so the phone can reach it; give this computer's LAN address "
                             "to listen on one network only."),
    port: int = typer.Option(49983, "--port", min=1, max=65535, help="iFacialMocap: UDP port to listen on."),
    # Bounded: OpenCV segfaults on a negative index (exit 139, no message) and raises an overflow
    # traceback on a huge one; 63 is far more cameras than a machine has.
    camera: int = typer.Option(0, "--camera", min=0, max=63, help="Webcam: device index (0 is the first)."),
    face_landmarker: Optional[Path] = typer.Option(
        None, "--face-landmarker", help="Webcam/video: a MediaPipe FaceLandmarker .task file (52 blend shapes)."),
    profile: Optional[Path] = typer.Option(None, "--profile", help="YAML converter profile (configs/puppet_profile.yaml)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Take the first tracked faces as your rest face (saved to --profile)."),
    backend: Backend = BackendChoice.auto,
    device: Device = "cpu",
    precision: Precision = None,
    offscreen: bool = typer.Option(False, "--offscreen", help=OFFSCREEN_HELP + " A live source needs --frames."),
    frames: Frames = None,
    record: PuppetRecord = None,
    fps: PuppetFps = 30.0,
) -> None:
    from tha.models.hub import resolve_model
    from tha.runtime.puppeteers import load_converter, make_puppeteer
    from tha.runtime.renderer import open_backend

    if source is Puppeteer.video and video is None:
        raise ThaError("--source video needs the video file: tha puppet MODEL_DIR --source video FILE")
    if source is not Puppeteer.video and video is not None:
        raise ThaError(f"'{video}' is only used with --source video")
    if source is not Puppeteer.video and offscreen and frames is None:
        raise ThaError("--offscreen with a live source needs --frames N")
    fps_source = ctx.get_parameter_source("fps")  # an enum of typer's own copy of click, not the click package's
    if source is Puppeteer.video and offscreen and fps_source is not type(fps_source).DEFAULT:
        raise ThaError("--fps does not apply to --source video --offscreen: each video frame is drawn once and "
                       "recorded at the video's own frame rate (drop --fps)")
    # Headless video renders frame by frame; in a window it plays in real time.
    driver = make_puppeteer(source, load_converter(profile, calibrate), bind=bind, port=port, phone=phone,
                            camera=camera, face_landmarker=face_landmarker, video=video, realtime=not offscreen)
    if offscreen and source is not Puppeteer.ifacialmocap:
        # a window shows "no camera" on its panel; a headless run has nobody to show it to. A
        # file that is no video is refused here (by start), before the model loads.
        driver.start()
        if not driver.opened:
            driver.close()
            raise ThaError(f"cannot open camera {camera}; pick another --camera (0 is the first), or run `tha doctor`")
    _require_display_unless(offscreen)
    if source is Puppeteer.ifacialmocap:
        driver.start()  # a busy port or a foreign --bind address is said before the model loads
    # closing(): a model that fails to load must not leave the source listening (closing twice is harmless)
    with closing(driver), open_backend(backend.value, resolve_model(model_dir), device,
                                       precision_name(precision)) as engine:
        if source is Puppeteer.video and offscreen:
            from tha.runtime.render_file import write_frames

            with driver:
                known = [n for n in (frames, driver.frame_count) if n is not None]
                drawn = write_frames(engine, _video_poses(driver, frames), record, driver.fps,
                                     total=min(known) if known else None, desc="puppet")
            plural = "s" if drawn != 1 else ""
            print(f"drew {drawn} frame{plural}" + (f" to {record}" if record else "") + f" ({driver.status})")
            return
        from tha.viewer.app import run_viewer

        run_viewer(engine, driver, offscreen=offscreen, max_frames=frames, record=record, fps=fps,
                   title=f"tha puppet: {source.value}", on_recorded=_say_wrote)
        if offscreen:  # no overlay shows the source's counters: say them once at the end
            print(f"{source.value}: {driver.status}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("view", help=VIEW_HELP)(view)
    app.command("puppet", help=PUPPET_HELP)(puppet)
