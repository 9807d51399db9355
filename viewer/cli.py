"""`tha view`: the interactive viewer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = (
    "Show a character posed live in a window, with an ImGui slider panel.\n\n"
    "Keys: H hide/show the panel; R reset the pose; S screenshot (PNG in the current folder); "
    "B next background (checkerboard, green screen, white, black); C calibrate the puppet source's rest face; Ctrl+S / Ctrl+O save / load the pose JSON "
    "named in the panel; Esc or Q quit.\n\n"
    "--offscreen draws with no window system (EGL), for servers and recordings; give --frames or it runs "
    "until interrupted."
)


def view(
    model_dir: Path = typer.Argument(..., help="Character model directory (or a fetched name like lambda_00)."),
    backend: str = typer.Option("auto", "--backend", help="auto, cuda, torch-cuda, fastcpu, torch, ort or trt."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16 or fp32 for --backend cuda (default fp16; fp32 is exact)."),
    source: str = typer.Option("sliders", "--source", help="Where poses come from: sliders (the panel) or another registered source (see tha.runtime.sources.registry)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (CUDA frames reach GL through interop)."),
    offscreen: bool = typer.Option(False, "--offscreen", help="No window: headless EGL context."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Stop after N frames showing the character."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the drawn frames (no panel) to .mp4/.webm/.gif or a folder of PNGs."),
    fps: float = typer.Option(30.0, "--fps", min=1.0, help="Frame rate for --record and --offscreen."),
    no_overlay: bool = typer.Option(False, "--no-overlay", help="Start with the panel hidden."),
    interpolate: bool = typer.Option(True, help="With the animator source and fastcpu: pose ahead and show "
                                     "frames blended between model frames at --fps."),
) -> None:
    from tha.models.hub import resolve_model
    from tha.runtime.renderer import open_backend
    from tha.runtime.sources.registry import make_source
    from tha.viewer.app import run_viewer
    from tha.viewer.window import require_display

    if not offscreen:
        require_display()
    pose_source = make_source(source)
    with open_backend(backend, resolve_model(model_dir), device, precision=precision) as engine:
        run_viewer(engine, pose_source, offscreen=offscreen, max_frames=frames, record=record, fps=fps,
                   overlay=not no_overlay, title=f"tha - {Path(model_dir).name}", interpolate=interpolate)
    if record is not None:
        typer.echo(f"wrote {record}")


def register(app: typer.Typer) -> None:
    app.command("view", help=HELP)(view)
