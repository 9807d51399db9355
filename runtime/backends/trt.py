"""TensorRT backend: the face and body engines on one CUDA stream, buffers owned by torch,
the face patch cached, frames left on the GPU for the viewer.

Device memory and the stream come from torch (no second allocator); the one CUDA runtime call
we make ourselves, the stream synchronisation, goes through cuda-python. Engines are checked
against their sidecar before TensorRT sees them (see ``tha.export.trt_engine``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tha.export.trt_engine import check_engine, current_platform
from tha.models.errors import ThaError
from tha.models.poser import FACE_COLS, FACE_ROWS
from tha.runtime.backends.base import Backend, FaceCache, Frame
from tha.models.image import rgba8


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def _torch_dtype(trt, dtype) -> torch.dtype:
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.uint8: torch.uint8}[dtype]


class Engine:
    """One deserialized engine with torch-allocated I/O tensors bound by name."""

    def __init__(self, path: Path, runtime, trt, onnx_sha256: str | None):
        check_engine(path, current_platform(), onnx_sha256)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ThaError(f"TensorRT refused {path}; rebuild it with `tha export MODEL_DIR --onnx --trt`")
        self.context = self.engine.create_execution_context()
        self.tensors: dict[str, torch.Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            t = torch.empty(shape, dtype=_torch_dtype(trt, self.engine.get_tensor_dtype(name)), device="cuda")
            self.tensors[name] = t
            self.context.set_tensor_address(name, t.data_ptr())

    def run(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ThaError("TensorRT failed to run an engine; rebuild it with `tha export MODEL_DIR --onnx --trt`")


class TrtBackend(Backend):
    """face.<p>.engine + body.<p>.engine from an export directory."""

    def __init__(self, image: torch.Tensor, export_dir: Path, fp16: bool = True, face_pose_size: int = 39):
        try:
            import tensorrt as trt
        except ImportError:
            raise ThaError("the trt backend needs TensorRT: `pip install tensorrt` (see `tha doctor`)") from None
        if not torch.cuda.is_available():
            raise ThaError("the trt backend needs a CUDA GPU; none is visible (see `tha doctor`)")
        from tha.export.exporter import read_manifest

        hashes = read_manifest(export_dir).get("files", {})
        precision = "fp16" if fp16 else "fp32"
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.face = Engine(export_dir / f"face.{precision}.engine", runtime, trt, hashes.get("face.onnx"))
        self.body = Engine(export_dir / f"body.{precision}.engine", runtime, trt, hashes.get("body.onnx"))
        self.stream = torch.cuda.Stream()
        self.cudart = _cudart()
        self.image = image[None].to("cuda", torch.float32)
        self.face_pose_size = face_pose_size
        self.face_cache = FaceCache(face_pose_size)
        self.name = f"trt-{precision}"

    def _sync(self) -> None:
        (err,) = self.cudart.cudaStreamSynchronize(self.stream.cuda_stream)
        if int(err) != 0:
            raise ThaError(f"CUDA error {err} while rendering; check the GPU with `tha doctor`")

    def _patch(self, pose: torch.Tensor) -> None:
        self.face.tensors["pose"].copy_(pose[:, : self.face_pose_size])
        self.face.run(self.stream)

    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            p = torch.from_numpy(np.asarray(pose, dtype=np.float32)[None]).to("cuda", non_blocking=True)
            # The face engine's output tensor *is* the cache: it is only overwritten on a miss.
            if self.face_cache.changed(pose):
                self._patch(p)
            image = self.body.tensors["image"]
            image.copy_(self.image)
            image[:, :, FACE_ROWS, FACE_COLS] = self.face.tensors["patch"]
            self.body.tensors["pose"].copy_(p)
            self.body.run(self.stream)
            out = self.body.tensors["image_out"].clone()
        self._sync()
        return out

    def render(self, pose: np.ndarray) -> Frame:
        frame = self.render_tensor(pose)
        with torch.cuda.stream(self.stream):
            rgba = rgba8(frame[0].float())
        self._sync()
        return Frame(rgba)
