"""Where a pose becomes pixels: pick a backend for a character model and render frames."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tha.models.errors import ThaError

if TYPE_CHECKING:  # torch loads when a backend opens, not when the CLI lists backend names
    from tha.models.character import CharacterModel
    from tha.runtime.backends.base import Backend

log = logging.getLogger(__name__)


def _torch(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.torch import TorchBackend

    return TorchBackend(model, device=device)


def _torch_cuda(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.cuda import require_cuda
    from tha.runtime.backends.torch import TorchBackend

    require_cuda("torch-cuda")
    return TorchBackend(model, device="cuda")


def _cuda(fused: bool = False) -> Callable[..., Backend]:
    def make(model: CharacterModel, device: str, precision: str = "fp16") -> Backend:
        from tha.runtime.backends.cuda import CudaBackend

        return CudaBackend(model, precision=precision, fused=fused)
    return make


def _fastcpu(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.fastcpu import FastCPUBackend

    return FastCPUBackend(model)


def _export_dir(model: CharacterModel) -> Path:
    from tha.export.exporter import ensure_exported

    if model.source is None:
        raise ThaError("the ONNX/TensorRT backends need a model directory on disk; save the model first")
    return ensure_exported(model.source)


def _ort(provider: str, fused: bool = False) -> Callable[[CharacterModel, str], Backend]:
    def make(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
        from tha.export.sessions import provider_list
        from tha.runtime.backends.ort import OrtBackend, OrtFusedBackend

        provider_list(provider)  # a missing provider is refused before the export, not after it
        export_dir = _export_dir(model)
        if fused:
            return OrtFusedBackend(export_dir, provider)
        return OrtBackend(model.image_tensor(), export_dir, provider, face_pose_size=model.face_morpher.config.pose_size)

    return make


def _trt(model: CharacterModel, device: str, precision: str = "fp16") -> Backend:
    from tha.runtime.backends.trt import TrtBackend, require_tensorrt

    require_tensorrt()  # before the export, which takes a while and writes a folder
    export_dir = _export_dir(model)
    fp16 = (export_dir / "face.fp16.engine").is_file() or not (export_dir / "face.fp32.engine").is_file()
    return TrtBackend(model.image_tensor(), export_dir, fp16=fp16, face_pose_size=model.face_morpher.config.pose_size)


PRECISIONS = ("fp16", "fp32")  # what --precision takes
# the backends that run fp32 whatever they are asked (trt and ort-trt run as their engines were built)
FP32_ONLY = ("torch", "torch-cuda", "fastcpu", "ort", "ort-fused", "ort-cuda")

# name -> factory(model, device, precision); precision matters to cuda (fp16 | fp32) only.
BACKENDS: dict[str, Callable[..., Backend]] = {
    "torch": _torch,
    "torch-cuda": _torch_cuda,
    "cuda": _cuda(),
    "cuda-fused": _cuda(fused=True),
    "fastcpu": _fastcpu,
    "ort": _ort("cpu"),
    "ort-fused": _ort("cpu", fused=True),
    "ort-cuda": _ort("cuda"),
    "ort-trt": _ort("trt"),
    "trt": _trt,
}

# Fastest first. On a GPU TensorRT wins, then the folded student as CUDA graphs; on a CPU the
# folded student with in-place GEMM + sine beats ONNX Runtime (whose Sin kernel is scalar).
PREFERENCE = ("trt", "ort-trt", "cuda", "torch-cuda", "fastcpu")


def candidates(available: dict[str, bool]) -> list[str]:
    """Usable backends, fastest first; torch on the CPU always works."""
    return [name for name in PREFERENCE if available.get(name)] + ["torch"]


def choose_backend(available: dict[str, bool]) -> str:
    return candidates(available)[0]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def probe_available() -> dict[str, bool]:
    """Cheap per-backend checks for `auto` (no MediaPipe, no GL: `tha doctor` is the full story)."""
    import torch

    cuda = torch.cuda.is_available()
    trt_ep = False
    if cuda and _installed("onnxruntime"):
        import onnxruntime

        trt_ep = "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    return {"trt": cuda and _installed("tensorrt") and (_installed("cuda.bindings") or _installed("cuda.cudart")),
            "ort-trt": trt_ep, "cuda": cuda, "torch-cuda": cuda, "fastcpu": True}


def open_backend(name: str, model: CharacterModel | str | Path, device: str = "cpu",
                 precision: str | None = None) -> Backend:
    """A ready backend by name ("auto" picks the best available and says which)."""
    from tha.models.character import CharacterModel, load_character_model

    if not isinstance(model, CharacterModel):
        model = load_character_model(model)
    if precision not in (None, *PRECISIONS):
        raise ThaError(f"unknown precision '{precision}'; choose {' or '.join(PRECISIONS)}")
    if name == "auto":
        return _open_auto(model, precision)
    if name not in BACKENDS:
        raise ThaError(f"unknown backend '{name}'; choose one of auto, {', '.join(BACKENDS)}")
    if precision == "fp16" and name in FP32_ONLY:
        raise ThaError(f"--backend {name} runs fp32 only; --precision fp16 is for --backend cuda")
    return BACKENDS[name](model, device, **({"precision": precision} if precision else {}))


def _open_auto(model: CharacterModel, precision: str | None = None) -> Backend:
    """The fastest backend that opens (a GPU backend may lack its engines); says which."""
    for name in candidates(probe_available()):
        try:
            backend = BACKENDS[name](model, "cpu", **({"precision": precision} if precision else {}))
        except ThaError as err:
            log.warning("backend %s unavailable (%s)", name, err)
            continue
        log.info("backend: auto picked %s", name)
        if precision == "fp16" and name in FP32_ONLY:
            log.warning("%s runs fp32 only: --precision fp16 has no effect", name)
        return backend
    raise ThaError("no backend could be opened; run `tha doctor`")
