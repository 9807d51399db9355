"""Live-mode commands: `tha serve`, `tha render`, `tha demo`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tha.configs import CONFIGS

DEMO_MODEL_DIR = CONFIGS / "demo"


def _settings(path: Optional[Path]):
    """Animator settings from a JSON file (SillyTavern-extras `_animator.json` style) or defaults."""
    from tha.models.files import read_json
    from tha.runtime.sources.animator import AnimatorSettings, settings_from_dict

    if path is None:
        return AnimatorSettings()
    settings, unknown = settings_from_dict(read_json(path, "animator settings file"))
    if unknown:
        typer.echo(f"warning: {path}: ignoring unknown settings {', '.join(unknown)}", err=True)
    return settings


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        model_dir: Path = typer.Argument(..., help="Character model directory (or a `tha models` name)."),
        host: str = typer.Option("127.0.0.1", help="Address to listen on; loopback keeps it private."),
        port: int = typer.Option(5100, help="Port (5100 is SillyTavern-extras' default)."),
        backend: str = typer.Option("auto", help="Inference backend."),
        device: str = typer.Option("cpu", help="Device for the torch backend (cpu, cuda)."),
        students: list[Path] = typer.Option([], "--students", help="More model dirs, or folders of them, that "
                                            "an uploaded talkinghead.png may switch to (repeatable)."),
        animator: Optional[Path] = typer.Option(None, help="Animator settings JSON (timings, strengths)."),
        emotions: Optional[Path] = typer.Option(None, help="Emotion presets JSON laid over the shipped set."),
        virtual_camera: bool = typer.Option(False, "--virtual-camera", help="Also send frames to a virtual "
                                            "camera (OBS) through pyvirtualcam."),
        microphone: bool = typer.Option(False, "--microphone", help="Lip-sync live from the default audio "
                                        "input (needs sounddevice)."),
        interpolate: bool = typer.Option(True, help="Render model frames ahead and show display-rate frames "
                                         "between them (fastcpu); --no-interpolate: newest pose, no lead."),
    ) -> None:
        """Serve the SillyTavern-extras talkinghead API (point SillyTavern's Extras URL here)."""
        from tha.models.hub import resolve_model
        from tha.runtime.server import ServeConfig, serve as run

        config = ServeConfig(resolve_model(model_dir), backend, device, tuple(students), _settings(animator),
                             emotions, microphone, interpolate)
        run(config, host, port, virtual_camera)

    @app.command()
    def render(
        model_dir: Path = typer.Argument(..., help="Character model directory (or a `tha models` name)."),
        output: Path = typer.Option(..., "-o", "--output", help="out.mp4, out.webm / out.mov (with alpha), "
                                    "out.gif, or a directory for PNG frames."),
        audio: Optional[Path] = typer.Option(None, help="Speech WAV: lip sync; the video lasts as long."),
        poses: Optional[Path] = typer.Option(None, help="Pose track: JSON lines, one {parameter: value} "
                                             "object per frame."),
        fps: float = typer.Option(30.0, help="Frames per second."),
        emotion: str = typer.Option("neutral", help="Emotion preset to hold."),
        idle: bool = typer.Option(True, help="Blink, breathe and sway (--no-idle for none)."),
        animator: Optional[Path] = typer.Option(None, help="Animator settings JSON (timings, strengths)."),
        max_frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
        backend: str = typer.Option("auto", help="Inference backend."),
        device: str = typer.Option("cpu", help="Device for the torch backend."),
        model_fps: Optional[float] = typer.Option(None, help="Run the student at about this rate and "
                                                  "interpolate the frames between (fastcpu; faster)."),
    ) -> None:
        """Render an animated character to a video file or PNG frames (idle animation + lip sync)."""
        from tha.models.hub import resolve_model
        from tha.models.limits import FPS_RANGE, check_range
        from tha.runtime.render_file import render_to_file

        check_range("--fps", fps, FPS_RANGE)
        count = render_to_file(resolve_model(model_dir), output, audio=audio, poses=poses, fps=fps,
                               backend=backend, device=device, settings=_settings(animator), emotion=emotion,
                               idle=idle, max_frames=max_frames, model_fps=model_fps)
        typer.echo(f"wrote {count} frames to {output}")

    @app.command()
    def demo(
        offscreen: bool = typer.Option(False, help="Render without a window (headless machines, CI)."),
        frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
        record: Optional[Path] = typer.Option(None, help="Also write the frames to this video file."),
        emotion: str = typer.Option("joy", help="Emotion preset the demo character shows."),
        backend: str = typer.Option("auto", help="Inference backend."),
        device: str = typer.Option("cpu", help="Device for the torch backend."),
        interpolate: bool = typer.Option(True, help="Pose ahead and show frames blended between model "
                                         "frames (fastcpu); --no-interpolate: one model frame per shown frame."),
    ) -> None:
        """Open the viewer with the built-in demo character, idling (no download needed)."""
        from tha.runtime.renderer import open_backend
        from tha.runtime.sources.animator import Animator
        from tha.viewer.app import run_viewer

        source = Animator()
        source.set_emotion(emotion)
        if not offscreen:
            from tha.viewer.window import require_display

            require_display()
        with open_backend(backend, DEMO_MODEL_DIR, device) as engine:
            run_viewer(engine, source, offscreen=offscreen, max_frames=frames, record=record,
                       title="tha demo", interpolate=interpolate)
