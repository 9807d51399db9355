"""ONNX Runtime backend: the exported face + body graphs (face patch cached), or the fused
student graph (pose -> RGBA uint8), on the CPU, CUDA or TensorRT execution provider."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tha.models.errors import ThaError
from tha.models.poser import FACE_COLS, FACE_ROWS
from tha.runtime.backends.base import Backend, FaceCache, Frame
from tha.models.image import rgba8

# Our names for the execution providers -> ONNX Runtime's.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def provider_list(provider: str, cache_dir: Path | None = None) -> list:
    """The provider chain for one of PROVIDERS' keys; refuses one this build lacks."""
    import onnxruntime as ort

    want = PROVIDERS[provider]
    if want not in ort.get_available_providers():
        raise ThaError(f"ONNX Runtime here has no {want} (it has {', '.join(ort.get_available_providers())}); "
                       "install onnxruntime-gpu on a CUDA machine, or use --backend ort")
    if provider == "trt":
        options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache_dir or Path.cwd())}
        return [(want, options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [want] if provider == "cpu" else [want, "CPUExecutionProvider"]


def open_session(path: Path, provider: str = "cpu", threads: int | None = None):
    """An InferenceSession on one graph, with one clear error for a missing or corrupt file."""
    import onnxruntime as ort

    from tha.export.onnx_graphs import load_checked

    load_checked(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 16)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=provider_list(provider, path.parent))
    except ThaError:
        raise
    except Exception as err:
        raise ThaError(f"ONNX Runtime cannot load {path} ({str(err).splitlines()[0][:160]}); "
                       "re-run `tha export`") from None


class OrtBackend(Backend):
    """face.onnx + body.onnx: the body runs every frame, the face only when pose[0:39] moves."""

    def __init__(self, image: torch.Tensor, export_dir: Path, provider: str = "cpu", fp16: bool = False,
                 face_pose_size: int = 39):
        suffix = ".fp16.onnx" if fp16 else ".onnx"
        self.face = open_session(export_dir / f"face{suffix}", provider)
        self.body = open_session(export_dir / f"body{suffix}", provider)
        self.image = np.ascontiguousarray(image[None].numpy(), dtype=np.float32)
        self.face_pose_size = face_pose_size
        self.face_cache = FaceCache(face_pose_size)
        self.name = "ort" + ("" if provider == "cpu" else f"-{provider}") + ("-fp16" if fp16 else "")

    def _patch(self, pose: np.ndarray) -> np.ndarray:
        return self.face.run(None, {"pose": pose[None, : self.face_pose_size]})[0]

    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        pose = np.asarray(pose, dtype=np.float32)
        image = self.image.copy()
        image[:, :, FACE_ROWS, FACE_COLS] = self.face_cache.get(pose, self._patch)
        return torch.from_numpy(self.body.run(None, {"image": image, "pose": pose[None]})[0])

    def render(self, pose: np.ndarray) -> Frame:
        return Frame(rgba8(self.render_tensor(pose)[0]).numpy())


class OrtFusedBackend(Backend):
    """student.onnx: pose in, display-ready RGBA uint8 out; nothing else on the host."""

    def __init__(self, export_dir: Path, provider: str = "cpu", fp16: bool = False):
        self.session = open_session(export_dir / ("student.fp16.onnx" if fp16 else "student.onnx"), provider)
        self.name = "ort-fused" + ("" if provider == "cpu" else f"-{provider}") + ("-fp16" if fp16 else "")

    def render(self, pose: np.ndarray) -> Frame:
        pose = np.asarray(pose, dtype=np.float32)[None]
        return Frame(self.session.run(None, {"pose": pose})[0])
