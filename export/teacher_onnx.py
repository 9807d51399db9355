"""Trace the full THA4 teacher into one static ONNX graph, checked against PyTorch.

Graph contract (batch 1, float32): ``image`` (1,4,512,512) + ``pose`` (1,45) ->
``image_out`` (1,4,512,512, the final posed image in the SPEC's [-1,1] space), plus the
intermediates ``face_morphed_full`` (1,4,512,512) and ``body_morpher_image`` (1,4,256,256)
so a runtime or a test can check each half. The eyebrow cache is a Python-side shortcut;
the graph always decomposes (its cost is small next to the U-Nets).
"""
from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from tha.models.errors import ThaError
from tha.export.exporter import EXPORT_FILE
from tha.models.files import atomic_directory, check_replaceable_dir
from tha.models.pose import neutral_pose
from tha.models.teacher import TeacherPoser, load_teacher_poser
from tha.models.teacher.poser import EYEBROW_COLS, EYEBROW_ROWS

GRAPH_FILE = "teacher.onnx"
INPUT_NAMES = ("image", "pose")
OUTPUT_NAMES = ("image_out", "face_morphed_full", "body_morpher_image")


class TeacherGraph(nn.Module):
    """The teacher's five networks in one uncached forward, for tracing."""

    def __init__(self, poser: TeacherPoser):
        super().__init__()
        self.poser = poser

    def forward(self, image: Tensor, pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        layers = self.poser.eyebrow_decomposer(image[:, :, EYEBROW_ROWS, EYEBROW_COLS])
        face = self.poser.face_stages(image, pose, layers)
        body = self.poser.body_stages(face["face_morphed_full"], pose)
        return body["full_posed_image"], face["face_morphed_full"], body["body_morpher_image"]


def check_poses() -> np.ndarray:
    """Neutral, and one with every group moved (head and body turned, mouth open, blinking)."""
    moved = neutral_pose()
    moved[[12, 13, 26]] = (0.7, 0.7, 0.8)  # eye_wink left/right, mouth_aaa
    moved[[37, 38, 39, 40, 41, 42, 43, 44]] = (0.3, -0.2, 0.5, -0.4, 0.3, 0.4, -0.3, 0.6)
    return np.stack([neutral_pose(), moved]).astype(np.float32)


def trace(graph: TeacherGraph, image: Tensor, pose: Tensor, opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(graph, (image, pose), buf, dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _errors(got, want) -> dict[str, dict[str, float]]:
    return {name: {"max_abs": float(np.abs(a - b).max()), "mean_abs": float(np.abs(a - b).mean())}
            for name, a, b in zip(OUTPUT_NAMES, got, want)}


def verify(path: Path, graph: TeacherGraph, image: Tensor, poses: np.ndarray) -> dict[str, dict]:
    """|ORT - torch| per output and pose on ONNX Runtime's CPU, beside a baseline: how far
    torch itself moves when the image is nudged at float32 rounding level (1e-6). With random
    weights the U-Nets amplify such nudges (SPEC), so the baseline, not a fixed number, is the
    yardstick; with trained weights both are small."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nudged = image + 1e-6 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    report = {}
    for i, pose in enumerate(poses):
        pose_t = torch.from_numpy(pose[None])
        got = session.run(list(OUTPUT_NAMES), {"image": image.numpy(), "pose": pose[None]})
        with torch.no_grad():
            want = [t.numpy() for t in graph(image, pose_t)]
            baseline = [t.numpy() for t in graph(nudged, pose_t)]
        report[f"pose_{i}"] = {"ort_vs_torch": _errors(got, want), "torch_nudged_vs_torch": _errors(baseline, want)}
    return report


def disagreement(report: dict) -> str | None:
    """The first output whose ORT error is well beyond the rounding baseline, described."""
    for pose, errors in report.items():
        for name in OUTPUT_NAMES:
            ort_err = errors["ort_vs_torch"][name]["mean_abs"]
            allowed = 4 * errors["torch_nudged_vs_torch"][name]["mean_abs"] + 1e-4
            if ort_err > allowed:
                return f"{name} on {pose}: mean abs error {ort_err:.3g} > {allowed:.3g}"
    return None


def export_teacher_onnx(teacher_dir: Path, out_dir: Path, opset: int = 17, image: Tensor | None = None,
                        progress: Callable[[str], None] | None = None) -> Path:
    """Export ``teacher_dir``'s five networks to ``out_dir/teacher.onnx`` (static shapes,
    batch 1), simplified with onnxslim, validated by onnx.checker, verified against PyTorch
    with ONNX Runtime; writes ``out_dir/export.json``. ``out_dir`` is replaced whole, and only
    when verified: it must be new, empty, or an export. ``image`` (1,4,512,512) is the
    verification input (default: a transparent frame with an opaque square where the face goes).
    ``progress`` receives one line per step (the whole export takes minutes on a CPU)."""
    import onnxslim

    say = progress or (lambda line: None)
    started = time.perf_counter()
    # ours to replace (a new or empty folder, or an export) before minutes of tracing, not after
    out_dir = check_replaceable_dir(Path(out_dir), EXPORT_FILE, "-o", "an export")
    graph = TeacherGraph(load_teacher_poser(teacher_dir)).eval()
    if image is None:
        image = -torch.ones(1, 4, 512, 512)
        image[:, :, 32:480, 96:416] = 0.2
    poses = check_poses()
    say(f"tracing the teacher from {teacher_dir} (opset {opset})")
    proto = trace(graph, image, torch.from_numpy(poses[:1]), opset)
    say("simplifying with onnxslim")
    proto = onnxslim.slim(proto)
    # Built and verified in a folder beside out_dir that takes its place only when complete: a
    # failed check or Ctrl+C leaves the old export whole (or none), never an unverified graph.
    with atomic_directory(out_dir) as work:
        path = work / GRAPH_FILE
        path.write_bytes(proto.SerializeToString())
        del proto
        say("checking the graph")
        onnx.checker.check_model(str(path), full_check=True)
        say(f"verifying against PyTorch on {len(poses)} poses with ONNX Runtime")
        report = verify(path, graph, image, poses)
        problem = disagreement(report)
        if problem is not None:
            raise ThaError(f"the traced teacher graph disagrees with PyTorch ({problem}); nothing was written to "
                           f"{out_dir}; report this with your onnxruntime version")
        (work / EXPORT_FILE).write_text(json.dumps({
            "kind": "teacher",
            "teacher_dir": str(Path(teacher_dir).resolve()),
            "graph": GRAPH_FILE,
            "opset": opset,
            "dtype": "float32",
            "inputs": {"image": [1, 4, 512, 512], "pose": [1, 45]},
            "outputs": {"image_out": [1, 4, 512, 512], "face_morphed_full": [1, 4, 512, 512],
                        "body_morpher_image": [1, 4, 256, 256]},
            "verified_poses": len(poses),
            "verification": report,
            "seconds": round(time.perf_counter() - started, 1),
        }, indent=2) + "\n")
    return out_dir / GRAPH_FILE
