"""ONNX Runtime backend: the exported face + body graphs (face patch cached), or the fused
student graph (pose -> RGBA uint8), fp32 or fp16 (``tha export --fp16``), on the CPU, CUDA or
TensorRT execution provider (sessions: ``tha.export.sessions``)."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from tha.export.onnx_graphs import graph_file
from tha.export.sessions import open_session
from tha.models.pose import FACE_SLICE, check_pose
from tha.runtime.backends.base import Backend, Frame
from tha.runtime.backends.pipeline import PipelineBackend


def _name(base: str, provider: str, fp16: bool) -> str:
    return base + ("" if provider == "cpu" else f"-{provider}") + ("-fp16" if fp16 else "")


class OrtEngine:
    """face.onnx + body.onnx as the frame path's two networks (CPU tensors in and out, no copies)."""

    def __init__(self, export_dir: Path, provider: str, fp16: bool):
        self.face_session = open_session(export_dir / graph_file("face", fp16), provider)
        self.body_session = open_session(export_dir / graph_file("body", fp16), provider)
        self.name = _name("ort", provider, fp16)

    def face(self, face_pose: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.face_session.run(None, {"pose": face_pose.numpy()})[0])

    def body(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.body_session.run(None, {"image": image.numpy(), "pose": pose.numpy()})[0])

    def scope(self) -> AbstractContextManager:
        return nullcontext()


class OrtBackend(PipelineBackend):
    """The body graph runs every frame, the face graph only when the face pose moves."""

    def __init__(self, image: torch.Tensor, export_dir: Path, provider: str = "cpu", fp16: bool = False,
                 face_pose_size: int = FACE_SLICE.stop):
        super().__init__(OrtEngine(export_dir, provider, fp16), image.float()[None].contiguous(), face_pose_size)


class OrtFusedBackend(Backend):
    """student.onnx: pose in, display-ready RGBA uint8 out; nothing else on the host."""

    def __init__(self, export_dir: Path, provider: str = "cpu", fp16: bool = False):
        self.session = open_session(export_dir / graph_file("student", fp16), provider)
        self.name = _name("ort-fused", provider, fp16)

    def render(self, pose: np.ndarray) -> Frame:
        return Frame(self.session.run(None, {"pose": check_pose(pose)[None]})[0])
