"""`tha export MODEL --web OUT`: a self-contained static site that poses the character in a
browser (ONNX Runtime Web on WebGPU or WebAssembly, MediaPipe FaceMesh for the webcam).

The site holds the page (this folder), ``tha.json`` (``shared``), the character image, the
fused student graph (fp32, and fp16 for WebGPU with shader-f16) and every script and
WebAssembly file it loads, copied from the npm packages pinned by ``web/package-lock.json``.
Those packages are installed once with ``npm ci`` into a cache keyed by the lock file, so
Node.js is needed on the first export only, never by the site or at run time.
"""
from __future__ import annotations

import hashlib
import logging
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tha.export.exporter import write_fp16
from tha.export.onnx_graphs import export_graph, graph_specs
from tha.web.shared import shared_definition
from tha.models.character import load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.files import atomic_directory, check_replaceable_dir
from tha.web.serve import SITE_FILE

log = logging.getLogger(__name__)

WEB_SOURCES = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "app.js", "puppet.js", "style.css")
# npm package -> files the site needs from it (under vendor/<short name>/).
VENDORED = {
    "onnxruntime-web/dist": ("ort", ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.jsep.mjs",
                                     "ort-wasm-simd-threaded.jsep.wasm")),
    "@mediapipe/face_mesh": ("face_mesh", ("face_mesh.js", "face_mesh.binarypb", "face_mesh_solution_packed_assets.data",
                                           "face_mesh_solution_packed_assets_loader.js",
                                           "face_mesh_solution_simd_wasm_bin.js", "face_mesh_solution_simd_wasm_bin.wasm",
                                           "face_mesh_solution_wasm_bin.js", "face_mesh_solution_wasm_bin.wasm")),
}


def web_sources() -> Path:
    if not (WEB_SOURCES / "package-lock.json").is_file():
        raise ThaError(f"the web page sources are missing ({WEB_SOURCES}); reinstall tha from its repository")
    return WEB_SOURCES


def npm_packages(cache_root: Path | None = None) -> Path:
    """node_modules of web/package-lock.json, installed once (``npm ci``) into a cache. The install
    runs in a folder of its own that is renamed into place whole, so two exports at once (or one
    killed half-way) never leave or read a half-installed cache."""
    from tha.models.hub import cache_dir

    sources = web_sources()
    lock = (sources / "package-lock.json").read_bytes()
    root = (cache_root or cache_dir().parent / "web-npm") / hashlib.sha256(lock).hexdigest()[:16]
    if (root / "installed").is_file():
        return root / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise ThaError("the first `tha export --web` needs Node.js and npm to fetch ONNX Runtime Web and MediaPipe "
                       "(e.g. `sudo apt-get install nodejs npm`); later exports reuse the cache")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(sources / name, work / name)
        log.info("installing the page's npm packages into %s (once)", root)
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=work,
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["npm failed"])[-1]
            raise ThaError(f"`npm ci` failed in {work} ({last[:160]}); check the network to the npm registry")
        (work / "installed").write_text("ok\n")
        if root.is_dir() and not (root / "installed").is_file():
            shutil.rmtree(root)  # an install an older tha left unfinished
        try:
            work.rename(root)
        except OSError:
            if not (root / "installed").is_file():  # not another export's finished install: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root / "node_modules"


def export_web(model_dir: Path, out: Path) -> None:
    """Write the site into ``out`` whole or not at all (built beside it, then swapped in)."""
    check_replaceable_dir(out, SITE_FILE, "--web", "an exported page")
    image = model_paths(model_dir)["character_image_file_name"]  # one clear error for a non-student
    modules = npm_packages()
    model = load_character_model(model_dir)
    with atomic_directory(out) as site_dir:
        export_graph(graph_specs(model)["student"], site_dir / "student.onnx")
        write_fp16(site_dir / "student.onnx", site_dir / "student.fp16.onnx")
        shutil.copyfile(image, site_dir / "character.png")
        site = {"name": model_dir.resolve().name,
                "graphs": {"fp32": "student.onnx", "fp16": "student.fp16.onnx"},
                **shared_definition()}
        (site_dir / SITE_FILE).write_text(json.dumps(site) + "\n")
        for name in PAGE_FILES:
            shutil.copyfile(WEB_SOURCES / name, site_dir / name)
        for package, (short, files) in VENDORED.items():
            (site_dir / "vendor" / short).mkdir(parents=True, exist_ok=True)
            for name in files:
                source = modules / package / name
                if not source.is_file():
                    raise ThaError(f"{source} is missing from the npm cache; delete {modules.parent} and export again")
                shutil.copyfile(source, site_dir / "vendor" / short / name)
