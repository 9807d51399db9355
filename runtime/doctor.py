"""What this machine can run (CUDA, TensorRT, ONNX Runtime providers, OpenGL, mediapipe), and
for each missing piece, why."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:160]}" if text else type(err).__name__


def check_cuda() -> Check:
    import torch

    if torch.version.cuda is None:
        return Check(False, f"torch {torch.__version__} is a CPU-only build")
    if not torch.cuda.is_available():
        return Check(False, f"torch built for CUDA {torch.version.cuda}, but no GPU/driver is visible")
    major, minor = torch.cuda.get_device_capability()
    return Check(True, f"{torch.cuda.get_device_name()} (compute {major}.{minor}), CUDA {torch.version.cuda}")


def check_module(name: str, hint: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # ImportError, or a broken native library underneath
        return Check(False, f"{_first_line(err)}; {hint}")
    return Check(True, f"version {getattr(module, '__version__', '?')}")


def check_cuda_python() -> Check:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            importlib.import_module(name)
            return Check(True, f"{name} importable")
        except ImportError:
            continue
    return Check(False, "not installed; `pip install cuda-python` (needed by the trt backend and GL interop)")


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as err:
        return Check(False, f"{_first_line(err)}; `pip install onnxruntime`")
    return Check(True, f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}")


def check_gl() -> Check:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return Check(False, "no DISPLAY/WAYLAND_DISPLAY: no window can open (the viewer needs a desktop or xvfb-run)")
    try:
        import glfw
    except ImportError as err:
        return Check(False, f"{_first_line(err)}; `pip install glfw`")
    if not glfw.init():
        return Check(False, "glfw.init() failed: the display exists but GLFW cannot use it")
    glfw.terminate()
    return Check(True, f"glfw {glfw.__version__} initialises on {os.environ.get('DISPLAY') or 'wayland'}")


def capabilities() -> dict[str, Check]:
    return {
        "cuda": check_cuda(),
        "tensorrt": check_module("tensorrt", "`pip install tensorrt` on a machine with an NVIDIA GPU"),
        "cuda-python": check_cuda_python(),
        "onnxruntime": check_onnxruntime(),
        "opengl": check_gl(),
        "mediapipe": check_module("mediapipe", "`pip install mediapipe==0.10.14` (webcam puppeteering)"),
    }
