"""`tha serve`, `tha render`, `tha bench`, `tha doctor`: the runtime's window-free commands."""
from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tha.runtime.options import (RATE_RANGE_HELP, Backend, BackendChoice, BackendList, Device, Emotion, Fps, Frames,
                                ModelDir, Precision, frame_rate, precision_name, video_output)

ANIMATOR_HELP = "Animator settings JSON (timings, strengths)."
# `bench --batch`: 1024 poses already hold 1 GiB of 512x512 RGBA frames, besides every pose's
# intermediate images, and take minutes per call on a CPU; --batch 100000 sat at "bench: 0%"
# for minutes before running out of memory.
MAX_BENCH_BATCH = 1024


def _settings(path: Optional[Path]):
    """Animator settings from a JSON file (SillyTavern-extras `_animator.json` style) or defaults."""
    from tha.models.files import read_json
    from tha.runtime.sources.animator import AnimatorSettings, load_animator_settings

    if path is None:
        return AnimatorSettings()
    # extras-only keys are dropped with a warning; any other unknown key is an error
    return load_animator_settings(read_json(path, "animator settings file"), str(path))


def _origins(values: List[str]) -> List[str]:
    """--allow-origin: ``*`` or origins as a browser sends them (scheme://host[:port], lower case,
    no path): CORS compares the strings exactly, so any other spelling would match no page and
    be refused by nothing."""
    from urllib.parse import urlsplit

    for value in values:
        if value == "*":
            continue
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            valid = bool(re.fullmatch(r"[a-z][a-z0-9+.-]*://[a-z0-9.\-\[\]:]+", value)) and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise typer.BadParameter(f"'{value}' is not a web origin; give scheme://host[:port] as the browser "
                                     "sends it (lower case, no path), e.g. http://127.0.0.1:8000, or * for any")
    return values


def serve(
    model_dir: ModelDir,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; loopback keeps it private."),
    port: int = typer.Option(5100, min=1, max=65535, help="Port (5100 is SillyTavern-extras' default)."),
    backend: Backend = BackendChoice.auto,
    device: Device = "cpu",
    precision: Precision = None,
    students: List[Path] = typer.Option([], "--students", help="More model dirs, or folders of them, that "
                                        "an uploaded talkinghead.png may switch to (repeatable)."),
    animator: Optional[Path] = typer.Option(None, help=ANIMATOR_HELP),
    emotions: Optional[Path] = typer.Option(None, help="Emotion presets JSON laid over the shipped set."),
    virtual_camera: bool = typer.Option(False, "--virtual-camera", help="Also send frames to a virtual "
                                        "camera (OBS) through pyvirtualcam."),
    microphone: bool = typer.Option(False, "--microphone", help="Lip-sync live from the default audio "
                                    "input (needs sounddevice)."),
    interpolate: bool = typer.Option(True, help="Render model frames ahead and show display-rate frames "
                                     "between them (fastcpu); --no-interpolate: newest pose, no lead."),
    classify: Optional[str] = typer.Option(None, "--classify", metavar="MODEL", help="Offer extras' classify "
                                           "module (chat text -> emotion) with this Hugging Face text-classification "
                                           "model or folder, e.g. joeddav/distilbert-base-uncased-go-emotions-student "
                                           "(extras' default; needs `pip install 'tha\\[classify]'`)."),  # \\[: not Rich markup
    allow_origin: List[str] = typer.Option(["*"], "--allow-origin", callback=_origins, help="Web origins whose pages may call "
                                           "the API (repeatable), e.g. http://127.0.0.1:8000 for SillyTavern "
                                           "only; default: any, as SillyTavern-extras."),
) -> None:
    """Serve the SillyTavern-extras talkinghead API.

    Point SillyTavern's Extras URL here; the expressions extension works unchanged."""
    from tha.models.hub import resolve_model
    from tha.runtime.live_state import ServeConfig
    from tha.runtime.server import serve as run

    config = ServeConfig(model_dir=resolve_model(model_dir), backend=backend.value, device=device,
                         students=tuple(students), animator=_settings(animator), emotions_file=emotions,
                         microphone=microphone, interpolate=interpolate, precision=precision_name(precision),
                         allow_origins=tuple(allow_origin), classify_model=classify)
    run(config, host, port, virtual_camera)


def render(
    model_dir: ModelDir,
    output: Path = typer.Option(..., "-o", "--output", callback=video_output, help="out.mp4, out.webm / out.mov (with alpha), "
                                "out.gif, or a directory for PNG frames."),
    audio: Optional[Path] = typer.Option(None, help="Speech audio (WAV, MP3, Ogg, FLAC, a video's sound "
                                         "track): lip sync; the video lasts as long."),
    poses: Optional[Path] = typer.Option(None, help="Pose track: JSON lines, one {parameter: value} "
                                         "object per frame."),
    fps: Fps = 30.0,
    emotion: Emotion = "neutral",
    idle: bool = typer.Option(True, help="Blink, breathe and sway (--no-idle for none)."),
    animator: Optional[Path] = typer.Option(None, help=ANIMATOR_HELP),
    frames: Frames = None,
    backend: Backend = BackendChoice.auto,
    device: Device = "cpu",
    precision: Precision = None,
    model_fps: Optional[float] = typer.Option(None, callback=frame_rate,
                                              help=f"Run the student at about this rate ({RATE_RANGE_HELP}) "
                                              "and interpolate the frames between (fastcpu; faster)."),
) -> None:
    """Render an animated character to a video file or PNG frames.

    Idle animation with lip sync to speech audio (WAV, MP3, Ogg, FLAC: anything FFmpeg reads), or a pose track."""
    from tha.models.hub import resolve_model
    from tha.runtime.render_file import render_to_file

    count = render_to_file(resolve_model(model_dir), output, audio=audio, poses=poses, fps=fps,
                           backend=backend.value, device=device, precision=precision_name(precision),
                           settings=_settings(animator), emotion=emotion,
                           idle=idle, max_frames=frames, model_fps=model_fps)
    typer.echo(f"wrote {count} frames to {output}")


def bench(
    model_dir: ModelDir,
    backends: BackendList = "torch,fastcpu,ort,ort-fused",
    batch: int = typer.Option(0, "--batch", min=0, max=MAX_BENCH_BATCH, help="Also time N poses per call "
                              "(render_batch) for each backend."),
    frames: int = typer.Option(5, "--frames", min=1, help="Timed frames per backend."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed frames first."),
    head_only: bool = typer.Option(False, "--head-only", help="Keep the face pose fixed (face cache hits)."),
    chart: Path = typer.Option(Path("bench.png"), "--chart", help="Bar chart PNG to write."),
    viewer: bool = typer.Option(False, "--viewer", help="Also measure the viewer (tha.viewer.bench)."),
    puppet: bool = typer.Option(False, "--puppet", help="Also measure puppeteering sources."),
    distill: bool = typer.Option(False, "--distill", help="Also measure distillation steps."),
    feed: bool = typer.Option(False, "--feed", help="Also measure `tha serve`'s feed: distinct frames/s while "
                              "talking, with and without interpolation (tha.runtime.feed_bench)."),
) -> None:
    """Time backends on the same random poses, with a bar chart.

    Reports ms/frame, FPS and the ratio to torch fp32."""
    from tqdm import tqdm

    from tha.models.character import load_character_model
    from tha.models.files import check_not_input, check_png_output
    from tha.models.hub import resolve_model
    from tha.runtime.bench import (Row, bench_poses, extra_rows, format_table, parse_backends, split_precision,
                                   time_backend, time_batch, time_blend, write_chart)
    from tha.models.character import model_files
    from tha.runtime.interpolate import can_interpolate
    from tha.runtime.renderer import BACKENDS, open_backend

    model_dir = resolve_model(model_dir)
    check_png_output(chart, "--chart")  # before minutes of timing, not after
    check_not_input(chart, model_files(model_dir), "--chart")
    names = parse_backends(backends, list(BACKENDS))
    poses = bench_poses(frames + warmup, head_only)
    rows: list[Row] = []
    for name in tqdm(names, desc="bench", unit="backend"):
        base, precision = split_precision(name)
        with open_backend(base, load_character_model(model_dir), precision=precision) as backend:
            rows.append(Row(name, time_backend(backend, poses, warmup)))
            if batch:  # one call can take minutes on a CPU: say what is running
                tqdm.write(f"{name}: timing calls of {batch} poses", file=sys.stderr)
                rows.append(Row(f"{name} batch {batch}", time_batch(backend, poses, batch, max(1, frames // batch))))
            if can_interpolate(backend):
                rows.append(Row(f"{name} blended frame", time_blend(backend, poses, frames)))
    for kind, wanted in (("viewer", viewer), ("puppet", puppet), ("distill", distill), ("feed", feed)):
        if wanted:
            rows += extra_rows(kind, model_dir, frames)
    import torch

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
               f"{torch.get_num_threads()}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"{model_dir.name}: {frames} frames after {warmup} warm-up, {'head-only' if head_only else 'full'} poses; {machine}")
    for line in format_table(rows):
        print(line)
    path = write_chart(rows, chart, f"tha bench {model_dir.name} ({machine})")
    print(f"wrote {path}")


def doctor() -> None:
    """Report what this machine can run, and why not.

    CUDA, TensorRT, ONNX Runtime providers, OpenGL and MediaPipe."""
    from tha.runtime.doctor import capabilities
    from tha.runtime.renderer import choose_backend, probe_available

    for name, check in capabilities().items():
        print(f"{'ok ' if check.ok else 'no '} {name:<16} {check.detail}")
    print(f"--backend auto would pick: {choose_backend(probe_available())}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("render")(render)
    app.command("bench")(bench)
    app.command("doctor")(doctor)
