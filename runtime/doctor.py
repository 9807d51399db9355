"""What this machine can run (CUDA, TensorRT, ONNX Runtime providers, OpenGL, mediapipe), and
for each missing piece, why."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from tha.models.errors import ThaError, short_reason
from tha.runtime.backends.cudart import cudart


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {short_reason(err, 160)}" if str(err).strip() else type(err).__name__


def check_cuda() -> Check:
    """What --backend cuda / torch-cuda need: a CUDA build of torch and a visible NVIDIA GPU."""
    import torch

    if torch.version.cuda is None:
        return Check(False, f"torch {torch.__version__} is a CPU-only build; --backend cuda needs torch for CUDA "
                            "(pytorch.org) and an NVIDIA GPU")
    if not torch.cuda.is_available():
        return Check(False, f"torch built for CUDA {torch.version.cuda}, but no GPU/driver is visible")
    major, minor = torch.cuda.get_device_capability()
    return Check(True, f"{torch.cuda.get_device_name()} (compute {major}.{minor}), CUDA {torch.version.cuda}: "
                       "--backend cuda (fp16/fp32) and torch-cuda can run")


def check_module(name: str, hint: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # ImportError, or a broken native library underneath
        return Check(False, f"{_first_line(err)}; {hint}")
    return Check(True, f"version {getattr(module, '__version__', '?')}")


def check_triton() -> Check:
    # the kernels' own module, so a Triton too old for them reads as missing, with the reason
    hint = ("--backend cuda-fused needs Triton 3.2 or newer: `pip install -U triton` (CUDA builds of torch "
            "on Linux bring it; --backend cuda does not need it)")
    check = check_module("tha.runtime.backends.fused_levels", hint)
    if not check.ok:
        return check
    import triton

    return Check(True, f"version {triton.__version__}")


def check_cuda_python() -> Check:
    try:
        return Check(True, f"{cudart().__name__} importable")
    except ThaError as err:
        return Check(False, str(err))


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as err:
        return Check(False, f"{_first_line(err)}; `pip install onnxruntime`")
    return Check(True, f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}")


def check_onnxruntime_gpu() -> Check:
    """ort-cuda / ort-trt need onnxruntime-gpu (its CUDA provider); no wheel of it was reachable
    where tha is built and tested, so those backends are untested."""
    try:
        import onnxruntime as ort
    except ImportError:
        return Check(False, "onnxruntime missing; `pip install onnxruntime-gpu` for --backend ort-cuda/ort-trt")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return Check(True, "CUDAExecutionProvider available: --backend ort-cuda can run (untested by tha's CI)")
    return Check(False, "no CUDAExecutionProvider: --backend ort-cuda/ort-trt need `pip install onnxruntime-gpu` "
                        "(no wheel was reachable where tha is built and tested; untested)")


def check_gl() -> Check:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return Check(False, "no DISPLAY/WAYLAND_DISPLAY: no window can open (the viewer needs a desktop or "
                            "xvfb-run; --offscreen runs without one)")
    try:
        import glfw
    except ImportError as err:
        return Check(False, f"{_first_line(err)}; `pip install glfw`")
    if not glfw.init():
        return Check(False, "glfw.init() failed: the display exists but GLFW cannot use it")
    glfw.terminate()
    return Check(True, f"glfw {glfw.__version__} initialises on {os.environ.get('DISPLAY') or 'wayland'}")


def check_cpu_threads() -> Check:
    """Torch's CPU threads, and whether they wait for work passively (`tha` sets that unless the
    user chose; see tha.runtime.main.wait_passively)."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY") or ("spin count " + os.environ["GOMP_SPINCOUNT"]
                                                   if "GOMP_SPINCOUNT" in os.environ else "OpenMP's default (spinning)")
    return Check(True, f"{os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads; idle threads wait: "
                       f"{policy} (OMP_WAIT_POLICY)")


def capabilities() -> dict[str, Check]:
    return {
        "cpu": check_cpu_threads(),
        "cuda": check_cuda(),
        "tensorrt": check_module("tensorrt", "--backend trt needs `pip install tensorrt` and an NVIDIA GPU (no wheel "
                                             "was reachable where tha is built and tested, so trt is untested; "
                                             "--backend cuda needs neither)"),
        "triton": check_triton(),
        "cuda-python": check_cuda_python(),
        "onnxruntime": check_onnxruntime(),
        "onnxruntime-gpu": check_onnxruntime_gpu(),
        "opengl": check_gl(),
        "mediapipe": check_module("mediapipe", "`pip install mediapipe==0.10.14` (webcam puppeteering)"),
    }
