"""`tha export` for a student: ONNX graphs (fp32, optionally fp16), optional TensorRT
engines, ``export.json``, and a self-check against PyTorch that fails loudly."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from tha.export.fp16 import gemms_to_fp16
from tha.export.onnx_graphs import GRAPHS, OPSET, export_graph, graph_file, graph_specs
from tha.export.verify import Parity, random_poses, torch_reference, verify_graphs
from tha.models.character import CharacterModel, load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.files import atomic_write_bytes, atomic_write_text

EXPORT_FILE = "export.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ExportOptions:
    fp16: bool = False
    trt: bool = False
    verify_poses: int = 8


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    parity: list[Parity] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parity)


def write_fp16(src: Path, dst: Path) -> Path:
    proto = gemms_to_fp16(onnx.load(str(src)))
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(dst, proto.SerializeToString())
    return dst


def export_student(model_dir: Path, out_dir: Path, options: ExportOptions) -> ExportResult:
    """Export every graph, write export.json, verify; raise ThaError past the bounds."""
    sources = model_paths(model_dir)
    if options.trt:
        from tha.export.trt_engine import require_tensorrt

        require_tensorrt()
    model = load_character_model(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir)
    specs = graph_specs(model)
    steps = tqdm(GRAPHS, desc="export", unit="graph")
    for name in steps:
        steps.set_postfix_str(name)
        path = export_graph(specs[name], out_dir / graph_file(name, False))
        result.files.append(path)
        if options.fp16:
            result.files.append(write_fp16(path, out_dir / graph_file(name, True)))
    if options.trt:
        from tha.export.trt_engine import build_engines

        result.files += build_engines(result.files, options.fp16)
    if options.verify_poses:
        result.parity = verify(model, out_dir, options)
    write_manifest(result, sources, options)
    return result


def verify(model: CharacterModel, out_dir: Path, options: ExportOptions) -> list[Parity]:
    poses = random_poses(options.verify_poses, seed=1234)
    reference = torch_reference(model, poses)
    parity = verify_graphs(model, out_dir, poses, False, reference)
    if options.fp16:
        parity += verify_graphs(model, out_dir, poses, True, reference)
    return parity


def write_manifest(result: ExportResult, sources: dict[str, Path], options: ExportOptions) -> Path:
    manifest = {
        "kind": "student",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {key: {"path": str(p.resolve()), "sha256": sha256_file(p)} for key, p in sources.items()},
        "options": {"fp16": options.fp16, "trt": options.trt, "opset": OPSET, "batch": 1, "size": 512,
                    "verify_poses": options.verify_poses},
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "files": {p.name: sha256_file(p) for p in result.files},
        "parity": [p.as_dict() for p in result.parity],
    }
    path = result.out_dir / EXPORT_FILE
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(out_dir: Path) -> dict:
    path = out_dir / EXPORT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ThaError(f"{out_dir} has no {EXPORT_FILE}; run `tha export MODEL_DIR --onnx -o {out_dir}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ThaError(f"{path} is not valid JSON; re-run `tha export`") from None


def cached_export_dir(model_dir: Path) -> Path:
    """Where backends find a student's graphs: ``MODEL_DIR/export`` if exported there, else a
    cache directory keyed by the weights' hash."""
    local = model_dir / "export"
    if (local / EXPORT_FILE).is_file():
        return local
    from tha.models.hub import cache_dir

    paths = model_paths(model_dir)
    digest = hashlib.sha256("".join(sha256_file(p) for p in paths.values()).encode()).hexdigest()[:16]
    return cache_dir().parent / "exports" / f"{model_dir.resolve().name}-{digest}"


def ensure_exported(model_dir: Path) -> Path:
    """The directory of this student's fp32 graphs, exporting them once (unverified) if needed."""
    out_dir = cached_export_dir(model_dir)
    if not all((out_dir / graph_file(g, False)).is_file() for g in GRAPHS) or not (out_dir / EXPORT_FILE).is_file():
        print(f"exporting {model_dir} to {out_dir} (once; `tha export` does this explicitly)")
        export_student(model_dir, out_dir, ExportOptions(verify_poses=0))
    return out_dir
