"""TensorRT engines from the exported ONNX graphs, each with a JSON sidecar that says what it
was built with; an engine from another TensorRT, GPU or graph is refused, not loaded.

Engines are tied to the TensorRT version and the GPU (compute capability) that built them;
loading a foreign one fails deep in TensorRT or, worse, runs the wrong graph. The sidecar
makes that a one-line error that says to rebuild.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tha.export.onnx_graphs import graph_file
from tha.models.errors import ThaError
from tha.models.files import atomic_write_bytes, atomic_write_text

TIMING_CACHE = "timing.cache"
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class EngineInfo:
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str  # "fp32" or "fp16"
    onnx_sha256: str
    onnx_file: str


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def engine_path(onnx_path: Path, fp16: bool) -> Path:
    stem = onnx_path.name.removesuffix(".onnx").removesuffix(".fp16")
    return onnx_path.with_name(f"{stem}.{'fp16' if fp16 else 'fp32'}.engine")


def graph_engine(export_dir: Path, graph: str, fp16: bool) -> Path:
    """The engine ``build_engines`` makes from one of an export's graphs (``GRAPHS``' names)."""
    return engine_path(export_dir / graph_file(graph, False), fp16)


def current_platform() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of this machine."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def read_sidecar(engine: Path) -> EngineInfo:
    path = sidecar_path(engine)
    try:
        data = json.loads(path.read_text())
        return EngineInfo(**{k: str(data[k]) for k in EngineInfo.__dataclass_fields__})
    except FileNotFoundError:
        raise ThaError(f"{engine} has no sidecar {path.name}; rebuild it with `tha export MODEL_DIR --onnx --trt`") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ThaError(f"{path} is not a valid engine sidecar; rebuild with `tha export MODEL_DIR --onnx --trt`") from None


def check_engine(engine: Path, platform: dict[str, str], onnx_sha256: str | None = None) -> EngineInfo:
    """Refuse an engine built elsewhere, by another TensorRT, or from another graph."""
    if not engine.is_file():
        raise ThaError(f"{engine} does not exist; build it with `tha export MODEL_DIR --onnx --trt`")
    info = read_sidecar(engine)
    for key in ("tensorrt", "gpu", "compute_capability"):
        built, here = getattr(info, key), platform[key]
        if built != here:
            raise ThaError(f"{engine.name} was built for {key.replace('_', ' ')} {built}, this machine has {here}; "
                           "rebuild it with `tha export MODEL_DIR --onnx --trt`")
    if onnx_sha256 is not None and info.onnx_sha256 != onnx_sha256:
        raise ThaError(f"{engine.name} is stale: {info.onnx_file} changed since it was built; "
                       "rebuild it with `tha export MODEL_DIR --onnx --trt`")
    return info


def _mark_sines_fp32(network, trt) -> None:
    """Keep every sine (and what feeds it through the bias add) in fp32 under the FP16 flag."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.UNARY and layer.op == trt.UnaryOperation.SIN:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)


def build_engine(onnx_path: Path, fp16: bool) -> Path:
    """Parse ``onnx_path`` with TensorRT's parser and build a serialized engine beside it."""
    import tensorrt as trt

    from tha.models.files import sha256_file

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ThaError(f"TensorRT cannot parse {onnx_path} ({errors[:200]}); re-run `tha export --onnx`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache_file = onnx_path.parent / TIMING_CACHE
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _mark_sines_fp32(network, trt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ThaError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    engine = engine_path(onnx_path, fp16)
    atomic_write_bytes(engine, bytes(serialized))
    atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    info = EngineInfo(**current_platform(), precision="fp16" if fp16 else "fp32",
                      onnx_sha256=sha256_file(onnx_path), onnx_file=onnx_path.name)
    atomic_write_text(sidecar_path(engine), json.dumps(asdict(info), indent=2) + "\n")
    return engine


def require_tensorrt() -> None:
    """Fail before any work when TensorRT or a GPU is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise ThaError("--trt needs TensorRT: `pip install tensorrt` on a machine with an NVIDIA GPU") from None
    import torch

    if not torch.cuda.is_available():
        raise ThaError("--trt needs a CUDA GPU; none is visible here (see `tha doctor`)")


def build_engines(onnx_files: list[Path], fp16: bool) -> list[Path]:
    """One engine per fp32 graph (the FP16 flag, sines pinned to fp32, when ``fp16``)."""
    require_tensorrt()
    sources = [p for p in onnx_files if not p.name.endswith(".fp16.onnx")]
    out = []
    for path in sources:
        engine = build_engine(path, fp16)
        out += [engine, sidecar_path(engine)]
    return out
