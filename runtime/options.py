"""The options several `tha` commands share, defined once so their names, help and validation
cannot drift apart. Choices come from the registries they select from
(``tha.runtime.renderer.BACKENDS``, ``tha.runtime.video.FORMATS``), so a new backend or video
format shows up in every command's help and validation by itself."""
from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tha.models.limits import FPS_RANGE
from tha.runtime.backends import PRECISIONS
from tha.runtime.renderer import BACKENDS
from tha.runtime.video import FORMATS, check_video_output

_ALPHA_FORMATS = " and ".join(suffix for suffix, video_format in FORMATS.items() if video_format.keeps_alpha)

# "auto" is not a registry entry: open_backend resolves it to the fastest one that opens.
BackendChoice = Enum("BackendChoice", {name: name for name in ("auto", *BACKENDS)}, type=str)


PrecisionChoice = Enum("PrecisionChoice", {name: name for name in PRECISIONS}, type=str)


def precision_name(precision: PrecisionChoice | None) -> str | None:
    """What open_backend takes: "fp16", "fp32", or None for the backend's default."""
    return precision.value if precision is not None else None


def _torch_device(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"'{value}' is not a device; use cpu, cuda or cuda:N")
    if value != "cpu":
        import torch

        if not torch.cuda.is_available():  # else torch's own assertion, a traceback, at the first tensor
            raise typer.BadParameter(f"{value}: no CUDA device here (torch {torch.__version__}); use cpu, "
                                     "or see `tha doctor`")
        if value != "cuda" and int(value.split(":")[1]) >= torch.cuda.device_count():
            raise typer.BadParameter(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return value


ModelDir = Annotated[Path, typer.Argument(
    help="Character model directory (character_model.yaml and its files), or a fetched name like lambda_00.",
    show_default=False)]

Backend = Annotated[BackendChoice, typer.Option(
    "--backend", help="Inference backend; auto picks the fastest that opens here (`tha doctor` says which).")]

# bench takes several, each optionally with a precision, so it stays text for parse_backends.
BackendList = Annotated[str, typer.Option(
    "--backends", help=f"Comma-separated backends from {', '.join(BACKENDS)}; cuda:fp16 / cuda:fp32 pick the "
                       "precision. torch (fp32 eager, CPU) is the reference; on a GPU try torch-cuda,cuda:fp32,cuda:fp16.")]

Device = Annotated[str, typer.Option(
    "--device", callback=_torch_device,
    help="Torch device: cpu, cuda or cuda:N. Where --backend is offered torch runs on it, auto with cuda picks "
         "among the backends that run on the GPU; the others pick their own.")]

Precision = Annotated[Optional[PrecisionChoice], typer.Option(
    "--precision", help="fp16, or fp32 (exact), for a backend that offers both: cuda (default fp16), ort, "
                        "ort-fused, ort-cuda (their fp16 graphs; default fp32). cuda-fused runs fp16 only; torch, "
                        "torch-cuda and fastcpu fp32 only; trt and ort-trt run as their TensorRT engines were built.")]

Frames = Annotated[Optional[int], typer.Option(
    "--frames", min=1, help="Stop after N frames (default: until the input ends, the window closes or Ctrl+C).")]


def _emotion(value: str) -> str:
    from tha.runtime.emotions import load_emotions

    known = load_emotions()
    if value not in known:  # the server falls back to neutral, as SillyTavern expects; a typed name should not
        raise typer.BadParameter(f"'{value}' is not an emotion preset; use one of {', '.join(sorted(known))}")
    return value


Emotion = Annotated[str, typer.Option(
    "--emotion", callback=_emotion,
    help="Emotion preset to hold: one of SillyTavern's 28 labels (joy, anger, surprise, ...).")]


def video_output(value: Path | None) -> Path | None:
    """Checked as the command starts, not at its first frame: an unwritable folder or an unknown
    suffix is one line before any model loads."""
    return None if value is None else check_video_output(value)


RECORD_HELP = (f"Record at --fps, in real time (a slow frame is repeated), to a video ({', '.join(FORMATS)}) or, "
               f"with no suffix, a folder of PNGs: those and {_ALPHA_FORMATS} keep the character's transparency, "
               "the others show it over the viewer's background. The panel is never recorded.")


def record_option(note: str = ""):
    """--record, its help with a command's own ``note`` added (the one definition stays here)."""
    return Annotated[Optional[Path], typer.Option("--record", callback=video_output, help=RECORD_HELP + note)]


Record = record_option()


def frame_rate(value: float | None) -> float | None:
    """--fps and --model-fps in FPS_RANGE. Checked here, not by typer's min/max: NaN compares
    false with both bounds, and the range check then named a limit that was not the problem."""
    if value is None:
        return None
    low, high = FPS_RANGE
    if not low <= value <= high:  # NaN fails this too
        problem = "is not a number" if math.isnan(value) else f"is below {low:g}" if value < low else f"is above {high:g}"
        raise typer.BadParameter(f"{value:g} {problem}; give frames per second from {low:g} to {high:g}, e.g. 30")
    return value


RATE_RANGE_HELP = f"{FPS_RANGE[0]:g} to {FPS_RANGE[1]:g}"

FPS_HELP = (f"Frames per second ({RATE_RANGE_HELP}) of recordings, rendered files and windowless runs (a window "
            "follows the display).")


def fps_option(note: str = ""):
    """--fps, its help with a command's own ``note`` added (the one definition stays here)."""
    return Annotated[float, typer.Option("--fps", callback=frame_rate, help=FPS_HELP + note)]


Fps = fps_option()
