"""`tha bench`: every backend on the same poses in one run, ms/frame against torch fp32, as a
table and a bar chart."""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tha.export.verify import random_poses
from tha.models.errors import ThaError
from tha.models.pose import FACE_SLICE
from tha.runtime.backends import PRECISIONS
from tha.runtime.backends.base import Backend

log = logging.getLogger(__name__)

# The upstream-style eager fp32 student the ratios are against: on the CPU, else on the GPU.
REFERENCES = ("torch", "torch-cuda")


@dataclass(frozen=True)
class Row:
    label: str
    ms: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.ms if self.ms > 0 else float("inf")


def bench_poses(frames: int, head_only: bool, seed: int = 7) -> np.ndarray:
    """Random full poses, or (head_only) one face pose with moving head/body/breathing, the
    case the face cache serves."""
    poses = random_poses(frames, seed)
    if head_only:
        poses[:, FACE_SLICE] = poses[0, FACE_SLICE]
    return poses


def _finish(frame) -> None:
    """A host frame is done when render returns; a GPU frame when the GPU says so (synchronise,
    no download: the viewer takes it on the GPU)."""
    if isinstance(frame, torch.Tensor) and frame.is_cuda:
        torch.cuda.synchronize(frame.device)


def time_backend(backend: Backend, poses: np.ndarray, warmup: int) -> float:
    """Mean milliseconds per frame over ``poses[warmup:]``, the first ``warmup`` rendered untimed
    (timing them again would make the first timed frame a face-cache hit): host frames as
    returned, GPU frames left on the GPU with one synchronise after the last."""
    frame = None
    for pose in poses[:warmup]:
        frame = backend.render(pose).rgba
    _finish(frame)
    timed = poses[warmup:]
    start = time.perf_counter()
    for pose in timed:
        frame = backend.render(pose).rgba
    _finish(frame)
    return (time.perf_counter() - start) * 1000.0 / len(timed)


def time_batch(backend: Backend, poses: np.ndarray, batch: int, repeats: int) -> float:
    """Mean milliseconds per frame rendering ``batch`` poses per call (after one untimed call,
    which captures the batch's graph), frames left where the backend puts them."""
    chunk = np.resize(poses, (batch, poses.shape[1]))
    _finish(backend.render_batch(chunk))
    start = time.perf_counter()
    for _ in range(repeats):
        frames = backend.render_batch(chunk)
    _finish(frames)
    return (time.perf_counter() - start) * 1000.0 / (batch * repeats)


def time_blend(backend: Backend, poses: np.ndarray, frames: int) -> float:
    """Mean milliseconds per frame blended between two model frames (``tha.runtime.interpolate``):
    what each shown frame between model frames costs."""
    from tha.runtime.interpolate import between, keyframe

    a, b = keyframe(backend, poses[0]), keyframe(backend, poses[-1])
    between(backend, a, b, 0.5)
    start = time.perf_counter()
    for i in range(frames):
        between(backend, a, b, (i + 0.5) / frames)
    return (time.perf_counter() - start) * 1000.0 / frames


def split_precision(name: str) -> tuple[str, str | None]:
    """'cuda:fp16' -> ('cuda', 'fp16'); 'torch' -> ('torch', None)."""
    base, _, precision = name.partition(":")
    return base, precision or None


# --viewer/--puppet/--distill/--feed: each area's measure function, every one taking (model
# directory, frames) and giving (label, ms) rows. Named, not imported: the viewer and train layers
# sit above this one (tests/test_layers.py). All four are in-tree: one that does not resolve is a
# bug to see, not a missing install whose rows to drop.
EXTRA_MEASURES = {
    "viewer": ("tha.viewer.bench", "measure_viewer"),
    "puppet": ("tha.runtime.sources.bench", "measure_puppet"),
    "distill": ("tha.train.bench", "measure_distill"),
    "feed": ("tha.runtime.feed_bench", "measure_feed"),
}


def extra_rows(kind: str, model_dir: Path, frames: int) -> list[Row]:
    """Rows from another area's measure function; none, with its reason, if it cannot run here
    (it raises ThaError for that, e.g. no OpenGL driver for --viewer: the backends' rows still count)."""
    module_name, func_name = EXTRA_MEASURES[kind]
    measure = getattr(importlib.import_module(module_name), func_name)
    try:
        rows = measure(model_dir, frames)
    except ThaError as err:
        log.warning("--%s: skipped (%s)", kind, err)
        return []
    return [Row(str(label), float(ms)) for label, ms in rows]


def reference(rows: list[Row]) -> Row | None:
    return next((r for label in REFERENCES for r in rows if r.label == label), None)


def ms_text(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"  # GPU rows are fractions of a millisecond


def format_table(rows: list[Row]) -> list[str]:
    ref = reference(rows)
    header = f"x {ref.label if ref else REFERENCES[0]}"
    width, ratio_width = max(24, *(len(r.label) + 2 for r in rows)), len(header) + 2
    lines = [f"{'backend':<{width}}{'ms/frame':>10}{'FPS':>8}{header:>{ratio_width}}"]
    for r in rows:
        ratio = f"{ref.ms / r.ms:.2f}x" if ref else "-"
        lines.append(f"{r.label:<{width}}{ms_text(r.ms):>10}{r.fps:>8.2f}{ratio:>{ratio_width}}")
    return lines


def write_chart(rows: list[Row], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tha.models.files import atomic_path

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    labels = [r.label for r in rows]
    ref = reference(rows)
    ax.barh(labels, [r.ms for r in rows], color=["#888" if r is ref else "#3a7" for r in rows])
    for i, r in enumerate(rows):
        ax.text(r.ms, i, f" {ms_text(r.ms)} ms ({r.fps:.2f} FPS)", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(r.ms for r in rows) * 1.45)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def parse_backends(text: str, known: list[str]) -> list[str]:
    """Comma-separated names, each optionally with a precision: torch-cuda,cuda:fp32,cuda:fp16."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if split_precision(n)[0] not in known or split_precision(n)[1] not in (None, *PRECISIONS)]
    if unknown:
        raise ThaError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not names:
        raise ThaError("--backends is empty; give e.g. torch,fastcpu,ort")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # timing one twice would be a row that compares nothing
        raise ThaError(f"--backends names {', '.join(repeated)} more than once; list each backend once")
    return names
