"""`tha bench`, `tha doctor` and `tha serve-web`."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import typer

from tha.runtime.web_serve import serve_web


def bench(
    model_dir: Path = typer.Argument(..., help="Character model directory."),
    backends: str = typer.Option("torch,fastcpu,ort,ort-fused", "--backends",
                                 help="Comma-separated backends, cuda with a precision (cuda:fp16, cuda:fp32); "
                                      "torch (fp32 eager, CPU) is the reference. On a GPU: torch-cuda,cuda:fp32,cuda:fp16."),
    batch: int = typer.Option(0, "--batch", min=0, help="Also time N poses per call (render_batch) for each backend."),
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
    """Time every backend on the same random poses: ms/frame, FPS and the ratio to torch fp32."""
    from tqdm import tqdm

    from tha.models.character import load_character_model
    from tha.runtime.bench import (Row, bench_poses, extra_rows, format_table, parse_backends, split_precision,
                                   time_backend, time_batch, time_blend, write_chart)
    from tha.runtime.interpolate import can_interpolate
    from tha.runtime.renderer import BACKENDS, open_backend

    names = parse_backends(backends, list(BACKENDS))
    poses = bench_poses(frames + warmup, head_only)
    rows: list[Row] = []
    for name in tqdm(names, desc="bench", unit="backend"):
        base, precision = split_precision(name)
        with open_backend(base, load_character_model(model_dir), precision=precision) as backend:
            rows.append(Row(name, time_backend(backend, poses, warmup)))
            if batch:
                rows.append(Row(f"{name} batch {batch}", time_batch(backend, poses, batch, max(1, frames // batch))))
            if can_interpolate(backend):
                rows.append(Row(f"{name} blended frame", time_blend(backend, poses, frames)))
    for kind, wanted in (("viewer", viewer), ("puppet", puppet), ("distill", distill), ("feed", feed)):
        if wanted:
            rows += extra_rows(kind, model_dir, frames)
    import torch

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"{model_dir.name}: {frames} frames after {warmup} warm-up, {'head-only' if head_only else 'full'} poses; {machine}")
    for line in format_table(rows):
        print(line)
    path = write_chart(rows, chart, f"tha bench {model_dir.name} ({machine})")
    print(f"wrote {path}")


def doctor() -> None:
    """Report what this machine can run (CUDA, TensorRT, ONNX Runtime providers, OpenGL, mediapipe) and why not."""
    from tha.runtime.doctor import capabilities
    from tha.runtime.renderer import choose_backend, probe_available

    for name, check in capabilities().items():
        print(f"{'ok ' if check.ok else 'no '} {name:<16} {check.detail}")
    print(f"--backend auto would pick: {choose_backend(probe_available())}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("doctor")(doctor)
    app.command("serve-web")(serve_web)
