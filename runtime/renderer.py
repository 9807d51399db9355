"""Where a pose becomes pixels: pick a backend for a character model and render frames."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from tha.models.character import CharacterModel, load_character_model
from tha.models.errors import ThaError
from tha.runtime.backends.base import Backend


def _torch(model: CharacterModel, device: str) -> Backend:
    from tha.runtime.backends.torch import TorchBackend

    return TorchBackend(model, device=device)


def _fastcpu(model: CharacterModel, device: str) -> Backend:
    from tha.runtime.backends.fastcpu import FastCPUBackend

    return FastCPUBackend(model)


def _export_dir(model: CharacterModel) -> Path:
    from tha.export.exporter import ensure_exported

    if model.source is None:
        raise ThaError("the ONNX/TensorRT backends need a model directory on disk; save the model first")
    return ensure_exported(model.source)


def _ort(provider: str, fused: bool = False) -> Callable[[CharacterModel, str], Backend]:
    def make(model: CharacterModel, device: str) -> Backend:
        from tha.runtime.backends.ort import OrtBackend, OrtFusedBackend

        export_dir = _export_dir(model)
        if fused:
            return OrtFusedBackend(export_dir, provider)
        return OrtBackend(model.image_tensor(), export_dir, provider, face_pose_size=model.face_morpher.config.pose_size)

    return make


def _trt(model: CharacterModel, device: str) -> Backend:
    from tha.runtime.backends.trt import TrtBackend

    export_dir = _export_dir(model)
    fp16 = (export_dir / "face.fp16.engine").is_file() or not (export_dir / "face.fp32.engine").is_file()
    return TrtBackend(model.image_tensor(), export_dir, fp16=fp16, face_pose_size=model.face_morpher.config.pose_size)


# name -> factory(model, device).
BACKENDS: dict[str, Callable[[CharacterModel, str], Backend]] = {
    "torch": _torch,
    "fastcpu": _fastcpu,
    "ort": _ort("cpu"),
    "ort-fused": _ort("cpu", fused=True),
    "ort-cuda": _ort("cuda"),
    "ort-trt": _ort("trt"),
    "trt": _trt,
}

# Fastest first. On a GPU TensorRT wins; on a CPU the folded student with in-place GEMM + sine
# beats ONNX Runtime (whose Sin kernel is scalar) by a wide margin.
PREFERENCE = ("trt", "ort-trt", "torch-cuda", "fastcpu")


def candidates(available: dict[str, bool]) -> list[str]:
    """Usable backends, fastest first; torch on the CPU always works."""
    return [name for name in PREFERENCE if available.get(name)] + ["torch"]


def choose_backend(available: dict[str, bool]) -> str:
    return candidates(available)[0]


def probe_available() -> dict[str, bool]:
    from tha.runtime.doctor import capabilities

    caps = capabilities()
    cuda = caps["cuda"].ok
    return {"trt": cuda and caps["tensorrt"].ok and caps["cuda-python"].ok,
            "ort-trt": cuda and "TensorrtExecutionProvider" in caps["onnxruntime"].detail,
            "torch-cuda": cuda, "fastcpu": True}


def open_backend(name: str, model: CharacterModel | str | Path, device: str = "cpu") -> Backend:
    """A ready backend by name ("auto" picks the best available and says which)."""
    if not isinstance(model, CharacterModel):
        model = load_character_model(model)
    if name == "auto":
        return _open_auto(model)
    if name not in BACKENDS:
        raise ThaError(f"unknown backend '{name}'; choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](model, device)


def _open_auto(model: CharacterModel) -> Backend:
    """The fastest backend that opens (a GPU backend may lack its engines); says which."""
    for name in candidates(probe_available()):
        factory, device = (BACKENDS["torch"], "cuda") if name == "torch-cuda" else (BACKENDS[name], "cpu")
        try:
            backend = factory(model, device)
        except ThaError as err:
            print(f"warning: backend {name} unavailable ({err})", file=sys.stderr)
            continue
        print(f"backend: auto picked {name}", file=sys.stderr)
        return backend
    raise ThaError("no backend could be opened; run `tha doctor`")
