"""`tha export` for a student: ONNX graphs (fp32, optionally fp16), optional TensorRT
engines, ``export.json``, and a self-check against PyTorch that fails loudly."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from tha.export.fp16 import gemms_to_fp16
from tha.export.onnx_graphs import GRAPHS, OPSET, export_graph, graph_file, graph_specs
from tha.export.verify import Parity, random_poses, torch_stages, verify_graphs
from tha.models.character import MODEL_FILE, CharacterModel, load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.files import (atomic_directory, atomic_write_bytes, atomic_write_text, check_replaceable_dir,
                              sha256_file)
from tha.models.limits import parse_json

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"


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


def check_export_target(model_dir: Path, out_dir: Path) -> None:
    """Refuse, before any work, an output that is not ours to replace: a file, a folder that
    holds something other than an export, or another model's ``export`` folder (its backends
    would load these graphs and draw the wrong character)."""
    check_replaceable_dir(out_dir, EXPORT_FILE, "-o", "an export")
    owner = out_dir.parent
    if out_dir.name == "export" and (owner / MODEL_FILE).is_file() and owner.resolve() != model_dir.resolve():
        raise ThaError(f"-o {out_dir} is where the model {owner} keeps its own graphs; export {model_dir} "
                       f"to {model_dir / 'export'} or another folder")


def export_student(model_dir: Path, out_dir: Path, options: ExportOptions) -> ExportResult:
    """Export every graph, verify, write export.json; raise ThaError past the bounds.

    Everything is written into a temporary folder beside ``out_dir`` that takes its place only
    when complete: a killed export leaves the old export (or none), never a mixture."""
    sources = model_paths(model_dir)
    check_export_target(model_dir, out_dir)
    if options.trt:
        from tha.export.trt_engine import require_tensorrt

        require_tensorrt()
    model = load_character_model(model_dir)
    with atomic_directory(out_dir) as work:
        result = ExportResult(work)
        specs = graph_specs(model)
        steps = tqdm(GRAPHS, desc="export", unit="graph")
        for name in steps:
            steps.set_postfix_str(name)
            path = export_graph(specs[name], work / graph_file(name, False))
            result.files.append(path)
            if options.fp16:
                result.files.append(write_fp16(path, work / graph_file(name, True)))
        if options.trt:
            from tha.export.trt_engine import build_engines

            result.files += build_engines(result.files, options.fp16)
        if options.verify_poses:
            result.parity = verify(model, work, options)
            if not result.ok:  # raised inside: the old export stays, these graphs are never used
                failed = "; ".join(p.line().removesuffix("  FAIL") for p in result.parity if not p.ok)
                raise ThaError(f"exported graphs exceed the error bounds against PyTorch ({failed}); "
                               f"nothing was written to {out_dir}")
        write_manifest(result, sources, options)
    return ExportResult(out_dir, [out_dir / p.name for p in result.files], result.parity)


def verify(model: CharacterModel, out_dir: Path, options: ExportOptions) -> list[Parity]:
    poses = random_poses(options.verify_poses, seed=1234)
    reference = torch_stages(model, poses)
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
        manifest = parse_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise ThaError(f"{out_dir} has no {EXPORT_FILE}; run `tha export MODEL_DIR --onnx -o {out_dir}`") from None
    except ThaError:
        raise ThaError(f"{path} is not valid JSON; re-run `tha export`") from None
    if not isinstance(manifest, dict):
        raise ThaError(f"{path} is not an export manifest; re-run `tha export`")
    return manifest


def export_problem(model_dir: Path, out_dir: Path, fp16: bool = False) -> str | None:
    """Why ``out_dir`` cannot be used for this model (None when it can): export.json must
    record this model's files by hash, list the fp32 graphs (and the fp16 ones when ``fp16``),
    and every graph present must match its recorded hash (an export of another model, or files
    swapped or half-written since, are caught here)."""
    if not (out_dir / EXPORT_FILE).is_file():
        return f"it has no {EXPORT_FILE} (an unfinished export?)"
    manifest = read_manifest(out_dir)
    recorded = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    for key, path in model_paths(model_dir).items():
        entry = recorded.get(key)
        if not isinstance(entry, dict) or entry.get("sha256") != sha256_file(path):
            return f"it was exported from another {path.name} (its {EXPORT_FILE} records a different file)"
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    needed = [graph_file(g, half) for half in ((False, True) if fp16 else (False,)) for g in GRAPHS]
    for name in needed:
        if name not in files:
            return f"its {EXPORT_FILE} does not list {name}" + (" (exported without --fp16)" if ".fp16." in name else "")
    for name, digest in files.items():
        path = out_dir / str(name)
        if (path.exists() or name in needed) and (not path.is_file() or sha256_file(path) != digest):
            return f"{name} does not match its hash in {EXPORT_FILE} (changed or half-written since)"
    return None


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


# The automatic export's self-check: fewer poses than `tha export`'s 8, so a first `--backend ort`
# on a CPU waits seconds for it, not a minute, and still no graph past its bounds is installed.
AUTO_VERIFY_POSES = 2


def ensure_exported(model_dir: Path, fp16: bool = False) -> Path:
    """The directory of this student's fp32 graphs (and fp16 ones when ``fp16``), verified to be
    this model's, exporting them once into the cache if needed, checked against PyTorch like
    `tha export` (on AUTO_VERIFY_POSES poses). A model's own ``export`` folder that does not
    match is an error, never used: it would draw another character."""
    out_dir = cached_export_dir(model_dir)
    problem = export_problem(model_dir, out_dir, fp16) if out_dir.is_dir() else "it does not exist"
    if problem is None:
        return out_dir
    if out_dir == model_dir / "export":
        raise ThaError(f"{out_dir} cannot be used for {model_dir}: {problem}; re-export with "
                       f"`tha export {model_dir} --onnx{' --fp16' if fp16 else ''}`")
    if out_dir.is_dir():
        shutil.rmtree(out_dir)  # our own cache, keyed by the weights' hash, and not usable
    log.info("exporting %s to %s (once; `tha export` does this explicitly)", model_dir, out_dir)
    result = export_student(model_dir, out_dir, ExportOptions(fp16=fp16, verify_poses=AUTO_VERIFY_POSES))
    for parity in result.parity:
        log.info("checked against PyTorch: %s", parity.line())
    return out_dir
