"""TensorRT backend: the face and body engines on one CUDA stream in the one frame path,
buffers owned by torch, frames left on the GPU for the viewer.

Device memory and the stream come from torch (no second allocator); the one CUDA runtime call
we make ourselves, the stream synchronisation, goes through cuda-python. Engines are checked
against their sidecar before TensorRT sees them (see ``tha.export.trt_engine``).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from tha.export.onnx_graphs import graph_file
from tha.export.trt_engine import check_engine, current_platform, graph_engine
from tha.models.errors import ThaError
from tha.models.pose import FACE_SLICE
from tha.runtime.backends.cudart import cudart
from tha.runtime.backends.pipeline import PipelineBackend


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


def require_tensorrt():
    """The tensorrt module, or one line saying what this machine lacks for the trt backend
    (cuda-python included: asked for after the export, it would be missing minutes late)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ThaError("the trt backend needs TensorRT: `pip install tensorrt` (see `tha doctor`)") from None
    if not torch.cuda.is_available():
        raise ThaError("the trt backend needs a CUDA GPU; none is visible (see `tha doctor`)")
    cudart()
    return trt


class TrtEngine:
    """face.<p>.engine + body.<p>.engine on one stream. The face engine's output tensor is the
    face cache (it is only overwritten on a miss) and the face is pasted straight into the body
    engine's input tensor."""

    def __init__(self, export_dir: Path, fp16: bool):
        trt = require_tensorrt()
        from tha.export.exporter import read_manifest

        hashes = read_manifest(export_dir).get("files", {})
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.face_engine, self.body_engine = (
            Engine(graph_engine(export_dir, graph, fp16), runtime, trt, hashes.get(graph_file(graph, False)))
            for graph in ("face", "body"))
        self.stream = torch.cuda.Stream()
        self.cudart = cudart()
        self.name = f"trt-{'fp16' if fp16 else 'fp32'}"

    def face(self, face_pose: torch.Tensor) -> torch.Tensor:
        self.face_engine.tensors["pose"].copy_(face_pose)
        self.face_engine.run(self.stream)
        return self.face_engine.tensors["patch"]

    def body(self, image: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        self.body_engine.tensors["pose"].copy_(pose)
        self.body_engine.run(self.stream)
        return self.body_engine.tensors["image_out"].to(torch.float32, copy=True)  # fp16 engines: float32 out

    @contextmanager
    def scope(self) -> Iterator[None]:
        """The frame's work on this engine's stream; returns once the GPU has finished it."""
        with torch.cuda.stream(self.stream):
            yield
        (err,) = self.cudart.cudaStreamSynchronize(self.stream.cuda_stream)
        if int(err) != 0:
            raise ThaError(f"CUDA error {err} while rendering; check the GPU with `tha doctor`")


class TrtBackend(PipelineBackend):
    def __init__(self, image: torch.Tensor, export_dir: Path, fp16: bool = True,
                 face_pose_size: int = FACE_SLICE.stop):
        engine = TrtEngine(export_dir, fp16)
        super().__init__(engine, image[None].to("cuda", torch.float32), face_pose_size,
                         pasted=engine.body_engine.tensors["image"])
