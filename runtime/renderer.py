"""Where a pose becomes pixels: pick a backend for a character model and render frames."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tha.models.errors import ThaError
from tha.runtime.backends import PRECISIONS

if TYPE_CHECKING:  # torch loads when a backend opens, not when the CLI lists backend names
    from tha.models.character import CharacterModel
    from tha.runtime.backends.base import Backend

log = logging.getLogger(__name__)


def _torch(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.torch import TorchBackend

    return TorchBackend(model, device=device)


def _torch_cuda(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.cuda_env import require_cuda
    from tha.runtime.backends.torch import TorchBackend

    require_cuda("--backend torch-cuda")
    return TorchBackend(model, device="cuda")


def _cuda(fused: bool = False) -> Callable[..., Backend]:
    def make(model: CharacterModel, device: str, precision: str = "fp16") -> Backend:
        from tha.runtime.backends.cuda import CudaBackend

        return CudaBackend(model, precision=precision, fused=fused)
    return make


def _fastcpu(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
    from tha.runtime.backends.fastcpu import FastCPUBackend

    return FastCPUBackend(model)


def _export_dir(model: CharacterModel, fp16: bool = False) -> Path:
    from tha.export.exporter import ensure_exported

    if model.source is None:
        raise ThaError("the ONNX/TensorRT backends need a model directory on disk; save the model first")
    return ensure_exported(model.source, fp16)


def _ort(provider: str, fused: bool = False) -> Callable[..., Backend]:
    def make(model: CharacterModel, device: str, precision: str = "fp32") -> Backend:
        from tha.export.sessions import provider_list
        from tha.runtime.backends.ort import OrtBackend, OrtFusedBackend

        provider_list(provider)  # a missing provider is refused before the export, not after it
        # ort-trt builds its engines fp16 from the fp32 graphs whatever is asked (export.sessions)
        fp16 = precision == "fp16" and provider != "trt"
        export_dir = _export_dir(model, fp16)
        if fused:
            return OrtFusedBackend(export_dir, provider, fp16)
        return OrtBackend(model.image_tensor(), export_dir, provider, fp16, model.face_morpher.config.pose_size)

    return make


def _trt(model: CharacterModel, device: str, precision: str = "fp16") -> Backend:
    from tha.export.trt_engine import graph_engine
    from tha.runtime.backends.trt import TrtBackend, require_tensorrt

    require_tensorrt()  # before the export, which takes a while and writes a folder
    export_dir = _export_dir(model)
    fp16 = graph_engine(export_dir, "face", True).is_file() or not graph_engine(export_dir, "face", False).is_file()
    return TrtBackend(model.image_tensor(), export_dir, fp16=fp16, face_pose_size=model.face_morpher.config.pose_size)


# the backends that run fp32 whatever they are asked (trt and ort-trt run as their engines were built)
FP32_ONLY = ("torch", "torch-cuda", "fastcpu")
# the backends that run on the CPU whatever --device says: auto passes them over for a CUDA device
CPU_ONLY = ("fastcpu", "ort", "ort-fused")

# name -> factory(model, device, precision); precision matters to cuda and ort (fp16 | fp32) only,
# device to torch only.
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

    from tha.runtime.backends.cudart import MODULES as CUDART_MODULES

    cuda = torch.cuda.is_available()
    trt_ep = False
    if cuda and _installed("onnxruntime"):
        import onnxruntime

        trt_ep = "TensorrtExecutionProvider" in onnxruntime.get_available_providers()
    return {"trt": cuda and _installed("tensorrt") and any(_installed(m) for m in CUDART_MODULES),
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
        return _open_auto(model, device, precision)
    if name not in BACKENDS:
        raise ThaError(f"unknown backend '{name}'; choose one of auto, {', '.join(BACKENDS)}")
    if precision == "fp16" and name in FP32_ONLY:
        raise ThaError(f"--backend {name} runs fp32 only; --precision fp16 is for --backend cuda, cuda-fused, "
                       "ort, ort-fused or ort-cuda")
    return BACKENDS[name](model, device, **({"precision": precision} if precision else {}))


def _auto_candidates(device: str) -> list[str]:
    """What auto tries for ``device``: for the CPU (the default, so no constraint) any backend;
    for the default GPU the ones that run on it, torch there included. Another GPU is refused:
    torch alone takes a device, the GPU backends run on the default one."""
    import torch

    from tha.runtime.backends.cuda_env import require_cuda

    if torch.device(device).type == "cpu":
        return candidates(probe_available())
    require_cuda(f"--backend auto --device {device}", instead="--device cpu")
    if torch.device(device).index not in (None, 0):
        raise ThaError(f"--backend auto runs its GPU backends on the default GPU, not {device}; use --backend torch "
                       f"--device {device}, or CUDA_VISIBLE_DEVICES to pick the GPU")
    return [name for name in candidates(probe_available()) if name not in CPU_ONLY]


def _open_auto(model: CharacterModel, device: str, precision: str | None = None) -> Backend:
    """The fastest backend that opens for ``device`` (a GPU backend may lack its engines); says which."""
    for name in _auto_candidates(device):
        try:
            backend = BACKENDS[name](model, device, **({"precision": precision} if precision else {}))
        except ThaError as err:
            log.warning("backend %s unavailable (%s)", name, err)
            continue
        log.info("backend: auto picked %s", name)
        if precision == "fp16" and name in FP32_ONLY:
            log.warning("%s runs fp32 only: --precision fp16 has no effect", name)
        return backend
    raise ThaError("no backend could be opened; run `tha doctor`")
