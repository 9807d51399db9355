"""ONNX Runtime sessions on exported graphs: the execution providers we name, and one clear
error for a graph file that is missing, corrupt or needs a provider this build lacks."""
from __future__ import annotations

import os
from pathlib import Path

from tha.export.onnx_graphs import load_checked
from tha.models.errors import ThaError, short_reason

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


def open_session(path: Path, provider: str = "cpu"):
    """An InferenceSession on one graph, with one clear error for a missing or corrupt file."""
    import onnxruntime as ort

    load_checked(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(os.cpu_count() or 1, 16)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=provider_list(provider, path.parent))
    except ThaError:
        raise
    except Exception as err:
        raise ThaError(f"ONNX Runtime cannot load {path} ({short_reason(err, 160)}); "
                       "re-run `tha export`") from None
