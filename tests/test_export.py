"""`tha export`: ONNX graphs against the PyTorch student and upstream's reference outputs,
fp16 PSNR, export.json, TensorRT sidecars, and bad input."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tha.export.exporter import ExportOptions, export_student
from tha.export.onnx_graphs import GRAPHS, OPSET, graph_file
from tha.export.trt_engine import EngineInfo, check_engine, sidecar_path
from tha.export.verify import (MAX_ABS, MEAN_ABS, MIN_PSNR_DB, UINT8_WITHIN_ONE, psnr, random_poses, rgba_parity,
                               tensor_parity, torch_stages)
from tha.models.errors import ThaError
from tha.models.files import sha256_file
from tha.models.image import tensor_to_rgba
from tha.runtime.backends.ort import OrtBackend, OrtFusedBackend
from cli import assert_one_line_error
from model_dirs import copy_model_directory
from cli import tha as run_cli
from upstream import assert_matches_upstream

@pytest.fixture(scope="session")
def export00(lambda00_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """lambda_00 exported once by the real CLI, fp32 + fp16, self-checked on 2 poses."""
    out = tmp_path_factory.mktemp("export00")
    proc = run_cli("export", lambda00_dir, "--onnx", "--fp16", "-o", out, "--verify-poses", "2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def export01(lambda01_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export01")
    export_student(lambda01_dir, out, ExportOptions(fp16=True, verify_poses=0))
    return out


@pytest.fixture(scope="session")
def random16() -> np.ndarray:
    return random_poses(16, seed=99)


@pytest.fixture(scope="session")
def torch16(lambda00, random16) -> torch.Tensor:
    return torch_stages(lambda00, random16)["image"]


def test_graphs_are_static_opset17_checked_and_grid_free(export00):
    out, _ = export00
    for name in GRAPHS:
        proto = onnx.load(str(out / graph_file(name, False)))
        onnx.checker.check_model(proto, full_check=True)
        assert proto.opset_import[0].version >= OPSET
        ops = {n.op_type for n in proto.graph.node}
        assert "AffineGrid" not in ops  # grids are constants
        if name != "student":  # no pose planes to concatenate (the fused graph pastes the face)
            assert "Concat" not in ops and "Expand" not in ops
        for value in [*proto.graph.input, *proto.graph.output]:
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            assert all(d > 0 for d in dims), f"{name}:{value.name} has a dynamic dim"
    student = onnx.load(str(out / "student.onnx"))
    assert [i.name for i in student.graph.input] == ["pose"]
    assert student.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_cli_self_check_prints_errors_and_writes_export_json(export00, lambda00_dir):
    out, proc = export00
    assert "face: max abs" in proc.stdout and "body: max abs" in proc.stdout and "student fp16" in proc.stdout
    assert "FAIL" not in proc.stdout
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["options"]["fp16"] is True and manifest["options"]["opset"] >= 17
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    assert manifest["source"]["face_morpher_file_name"]["sha256"] == sha256_file(lambda00_dir / "face_morpher.pt")
    assert len(manifest["parity"]) == 6 and all(p["ok"] for p in manifest["parity"])


def test_fp32_two_graph_matches_upstream_reference(export00, lambda00, student_reference):
    out, _ = export00
    backend = OrtBackend(lambda00.image_tensor(), out)
    got = torch.cat([backend.render_tensor(p) for p in student_reference["poses"].astype(np.float32)])
    assert_matches_upstream(got, student_reference["blended_image"], "ort fp32")


@pytest.mark.slow
def test_fp32_two_graph_and_fused_match_torch_on_random_poses(export00, lambda00, random16, torch16):
    out, _ = export00
    split = OrtBackend(lambda00.image_tensor(), out)
    got = torch.cat([split.render_tensor(p) for p in random16])
    parity = tensor_parity("face+body", got, torch16, fp16=False)
    print(parity.line())
    assert parity.ok and parity.max_abs <= MAX_ABS and parity.mean_abs <= MEAN_ABS
    fused = OrtFusedBackend(out)
    rgba = np.stack([fused.render(p).host() for p in random16])
    parity = rgba_parity("student", rgba, np.stack([tensor_to_rgba(t) for t in torch16]), fp16=False)
    print(parity.line())
    assert parity.within_one >= UINT8_WITHIN_ONE
    with pytest.raises(ThaError, match="a pose has 45 values, got 44"):  # was ONNX Runtime's own error
        fused.render(random16[0][:44])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lambda_00", "lambda_01"])
def test_fp16_psnr_against_fp32(name, request, random16, capsys):
    from tha.models.character import load_character_model

    out = request.getfixturevalue("export00")[0] if name == "lambda_00" else request.getfixturevalue("export01")
    image = load_character_model(request.getfixturevalue(name.replace("_", "") + "_dir")).image_tensor()
    fp32, fp16 = OrtBackend(image, out), OrtBackend(image, out, fp16=True)
    a = torch.cat([fp32.render_tensor(p) for p in random16])
    b = torch.cat([fp16.render_tensor(p) for p in random16])
    value = psnr((b + 1) / 2, (a + 1) / 2, 1.0)
    with capsys.disabled():
        print(f"\n{name}: fp16 vs fp32 ONNX (ORT CPU), 16 random poses: PSNR {value:.1f} dB")
    assert value >= MIN_PSNR_DB


def test_fp16_graph_keeps_sines_fp32_and_gemm_weights_half(export00):
    out, _ = export00
    proto = onnx.load(str(out / "body.fp16.onnx"))
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    gemms = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert gemms and all(inits[i] == onnx.TensorProto.FLOAT16 for n in gemms for i in n.input if i in inits)
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in (n for n in proto.graph.node if n.op_type == "Sin"):
        feeder = producers[node.input[0]]
        assert not (feeder.op_type == "Cast" and feeder.attribute[0].i == onnx.TensorProto.FLOAT16)


def test_parity_bounds_catch_real_errors(export00, lambda00, student_reference):
    out, _ = export00
    got = OrtBackend(lambda00.image_tensor(), out).render_tensor(student_reference["poses"][0].astype(np.float32))
    want = torch.from_numpy(student_reference["blended_image"][:1])
    assert tensor_parity("ok", got, want, fp16=False).ok
    assert not tensor_parity("noisy", got + 3e-3 * torch.randn_like(got), want, fp16=False).ok
    rgba = tensor_to_rgba(got)
    shifted = rgba.copy()
    shifted[::20, :, :3] = (shifted[::20, :, :3].astype(int) + 2).clip(0, 255).astype(np.uint8)
    assert rgba_parity("ok", rgba, tensor_to_rgba(want), fp16=False).ok
    assert not rgba_parity("shifted", shifted, rgba, fp16=False).ok


# --- bad input: one line, exit 2, no traceback -------------------------------------------

def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert_one_line_error(proc, *needles, code=2)


def test_missing_and_non_student_dirs_are_refused(tmp_path):
    _one_line_error(run_cli("export", tmp_path / "nope", "--onnx", "-o", tmp_path / "o"), "does not exist")
    _one_line_error(run_cli("export", tmp_path, "--onnx", "-o", tmp_path / "o"), "not a character model")


def test_trt_without_tensorrt_is_refused_before_any_work(lambda00_dir, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    _one_line_error(run_cli("export", lambda00_dir, "--onnx", "--trt", "-o", tmp_path / "o"), "needs TensorRT")
    assert not (tmp_path / "o").exists()


def test_corrupt_onnx_is_refused_by_the_cli(export00, lambda00_dir, tmp_path):

    out, _ = export00
    model = copy_model_directory(lambda00_dir, tmp_path / "model")
    shutil.copytree(out, model / "export")
    (model / "export" / "body.onnx").write_bytes(b"\x08\x07garbage" * 100)
    proc = run_cli("bench", model, "--backends", "ort", "--frames", "1", "--chart", tmp_path / "b.png")
    _one_line_error(proc, "body.onnx", "does not match its hash in export.json")


# --- TensorRT sidecars (pure Python here; the engine build itself is gpu-marked) -------

PLATFORM = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _engine_with_sidecar(tmp_path: Path, **changes: str) -> Path:
    engine = tmp_path / "body.fp16.engine"
    engine.write_bytes(b"serialized engine bytes")
    info = {**PLATFORM, "precision": "fp16", "onnx_sha256": "a" * 64, "onnx_file": "body.onnx", **changes}
    sidecar_path(engine).write_text(json.dumps(info))
    return engine


def test_sidecar_accepts_its_own_platform(tmp_path):
    info = check_engine(_engine_with_sidecar(tmp_path), PLATFORM, "a" * 64)
    assert info == EngineInfo(**PLATFORM, precision="fp16", onnx_sha256="a" * 64, onnx_file="body.onnx")


@pytest.mark.parametrize("changes,needle", [
    ({"tensorrt": "8.6.1"}, "tensorrt 8.6.1"),
    ({"compute_capability": "8.6"}, "compute capability 8.6"),
    ({"gpu": "NVIDIA GeForce RTX 3090"}, "RTX 3090"),
])
def test_foreign_engine_is_refused(tmp_path, changes, needle):
    with pytest.raises(ThaError, match="rebuild") as err:
        check_engine(_engine_with_sidecar(tmp_path, **changes), PLATFORM, "a" * 64)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_stale_missing_or_broken_sidecar_is_refused(tmp_path):
    engine = _engine_with_sidecar(tmp_path)
    with pytest.raises(ThaError, match="stale"):
        check_engine(engine, PLATFORM, "b" * 64)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ThaError, match="not a valid engine sidecar"):
        check_engine(engine, PLATFORM)
    sidecar_path(engine).unlink()
    with pytest.raises(ThaError, match="no sidecar"):
        check_engine(engine, PLATFORM)
    with pytest.raises(ThaError, match="does not exist"):
        check_engine(tmp_path / "none.engine", PLATFORM)


# --- GPU: TensorRT engines built, run, compared, refused when stale ---------------------

@pytest.mark.gpu
# A marker, not importorskip: the export fixtures would run (minutes) before the skip.
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")
def test_trt_engines_build_run_and_match(export00, lambda00, random16, torch16):
    from tha.export.trt_engine import build_engines
    from tha.runtime.backends.trt import TrtBackend

    out, _ = export00
    files = build_engines([out / graph_file(g, False) for g in GRAPHS], fp16=True)
    assert (out / "timing.cache").is_file() and all(f.is_file() for f in files)
    info = json.loads(sidecar_path(out / "body.fp16.engine").read_text())
    assert info["onnx_sha256"] == sha256_file(out / "body.onnx") and info["precision"] == "fp16"
    backend = TrtBackend(lambda00.image_tensor(), out, fp16=True)
    got = torch.cat([backend.render_tensor(p).float().cpu() for p in random16[:4]])
    value = psnr((got + 1) / 2, (torch16[:4] + 1) / 2, 1.0)
    print(f"TensorRT fp16 vs torch fp32: PSNR {value:.1f} dB")
    assert value >= MIN_PSNR_DB
    frame = backend.render(random16[0])
    assert frame.on_device and frame.host().shape == (512, 512, 4)
    sidecar = sidecar_path(out / "body.fp16.engine")
    sidecar.write_text(json.dumps({**info, "onnx_sha256": "0" * 64}))
    with pytest.raises(ThaError, match="stale"):
        TrtBackend(lambda00.image_tensor(), out, fp16=True)


# --- an export belongs to one model, and is written whole or not at all -------------------

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


@pytest.fixture()
def demo_exported(tmp_path) -> Path:
    """The small demo student copied and exported to its own export/ folder."""

    model = copy_model_directory(DEMO, tmp_path / "demo")
    export_student(model, model / "export", ExportOptions(verify_poses=0))
    return model


def test_another_models_export_is_refused_not_drawn(demo_exported, lambda00_dir, tmp_path):
    """`tha export B -o A/export` is refused; an export that does not match A's files (here A's
    body swapped after exporting, as a copied-in export of B looks) is an error, not B drawn."""
    model = demo_exported
    before = {p.name: p.read_bytes() for p in (model / "export").iterdir()}
    _one_line_error(run_cli("export", lambda00_dir, "--onnx", "-o", model / "export"), "keeps its own graphs")
    assert {p.name: p.read_bytes() for p in (model / "export").iterdir()} == before
    shutil.copyfile(lambda00_dir / "body_morpher.pt", model / "body_morpher.pt")
    proc = run_cli("bench", model, "--backends", "ort-fused", "--frames", "1", "--chart", tmp_path / "b.png")
    _one_line_error(proc, "cannot be used for", "body_morpher.pt", "tha export")


def test_graph_swapped_after_export_is_refused(demo_exported, tmp_path):
    """A's face graph beside another export's body graph (the half-written mixture) is refused."""
    other = tmp_path / "other"
    export_student(DEMO, other, ExportOptions(verify_poses=0))
    (demo_exported / "export" / "body.onnx").write_bytes((other / "body.onnx").read_bytes()[:-100])
    proc = run_cli("bench", demo_exported, "--backends", "ort", "--frames", "1", "--chart", tmp_path / "b.png")
    _one_line_error(proc, "body.onnx", "does not match its hash")


def test_export_killed_half_way_leaves_the_old_export_whole(demo_exported, monkeypatch):
    import tha.export.exporter as exporter

    out = demo_exported / "export"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = exporter.export_graph

    def die_on_body(spec, path):
        if path.name.startswith("body"):
            raise KeyboardInterrupt  # the user's Ctrl-C mid-export
        return real(spec, path)

    monkeypatch.setattr(exporter, "export_graph", die_on_body)
    with pytest.raises(KeyboardInterrupt):
        export_student(demo_exported, out, ExportOptions(verify_poses=0))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in demo_exported.iterdir() if p.name.startswith(".")) == []  # no leftovers
    assert exporter.export_problem(demo_exported, out) is None


def test_export_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me too")
    _one_line_error(run_cli("export", DEMO, "--onnx", "-o", tmp_path / "file"), "is a file")
    _one_line_error(run_cli("export", DEMO, "--onnx", "-o", tmp_path / "file" / "x"), "which is a file")
    _one_line_error(run_cli("export", DEMO, "--onnx", "-o", tmp_path / "mine"), "not an export")
    assert (tmp_path / "file").read_text() == "keep me"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    # with --web too: the page used to be built and put in place before -o was refused
    _one_line_error(run_cli("export", DEMO, "--web", tmp_path / "site", "--onnx", "-o", tmp_path / "mine"),
                    "not an export")
    _one_line_error(run_cli("export", DEMO, "--web", tmp_path / "both", "--onnx", "-o", tmp_path / "both"),
                    "--web and -o both name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


def test_export_files_follow_the_umask(tmp_path):
    """mkstemp/mkdtemp create 0600/0700; the finished export gets what open() would give."""
    old = os.umask(0o027)
    try:
        export_student(DEMO, tmp_path / "out", ExportOptions(verify_poses=0))
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o640}


def test_graphs_pick_the_batch_with_squeeze_not_a_copying_gather(export00):
    """``x[0]`` on batch-1 tensors is exported as Squeeze (free) rather than Gather (a full copy
    in ONNX Runtime), and no constant is left unused (runtimes warn about each)."""
    out, _ = export00
    for name in GRAPHS:
        graph = onnx.load(str(out / graph_file(name, False))).graph
        assert "Gather" not in {n.op_type for n in graph.node}, name
        used = {i for n in graph.node for i in n.input}
        assert not [t.name for t in graph.initializer if t.name not in used], name


def fail_one_check(monkeypatch, index: int) -> None:
    """Make the export's check against PyTorch report its ``index``-th graph past the bounds."""
    from tha.export import exporter

    real_verify = exporter.verify

    def one_graph_off(model, out_dir, options):
        parity = real_verify(model, out_dir, options)
        parity[index].ok = False  # as a graph past the bounds reports itself
        return parity

    monkeypatch.setattr(exporter, "verify", one_graph_off)


def test_an_export_past_the_bounds_replaces_nothing(demo_exported, monkeypatch):
    """Graphs that fail their check used to be swapped in (the good export deleted) before the
    error, and the backends then ran them. Now the old export stays and says nothing changed."""
    before = {p.name: p.read_bytes() for p in (demo_exported / "export").iterdir()}
    fail_one_check(monkeypatch, 0)
    with pytest.raises(ThaError, match="exceed the error bounds .* nothing was written to") as err:
        export_student(demo_exported, demo_exported / "export", ExportOptions(verify_poses=1))
    assert "FAIL" not in str(err.value)
    assert {p.name: p.read_bytes() for p in (demo_exported / "export").iterdir()} == before
    assert [p.name for p in demo_exported.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("option, needle", [(["-o", "graphs"], "-o is the folder of the --onnx/--trt graphs"),
                                            (["--fp16"], "--fp16 applies to the --onnx graphs"),
                                            (["--verify-poses", "8"], "--verify-poses checks the --onnx/--trt")])
def test_graph_options_with_web_alone_are_refused(tmp_path, option, needle):
    """`--web DIR` took -o, --fp16 and --verify-poses and did nothing with them; without --onnx
    or --trt they are refused, one line each, before any page is built."""
    _one_line_error(run_cli("export", DEMO, "--web", tmp_path / "site", *option), needle, "add --onnx")
    assert sorted(tmp_path.iterdir()) == []


# --- ort fp16, and the graphs the ort backends export for themselves ---------------------

@pytest.mark.slow
def test_ort_precision_fp16_opens_the_fp16_graphs_close_to_fp32(export00, lambda00_dir, tmp_path, monkeypatch):
    """`tha export --fp16` wrote fp16 graphs that no backend could open: --precision fp16 was
    refused for ort and ort-fused. Now they run them, within the fp16 bound of the fp32 frames."""
    from tha.models.character import load_character_model
    from tha.runtime.backends import ort
    from tha.runtime.renderer import open_backend

    model_dir = copy_model_directory(lambda00_dir, tmp_path / "model")
    shutil.copytree(export00[0], model_dir / "export")
    model = load_character_model(model_dir)
    opened, real_open = [], ort.open_session
    monkeypatch.setattr(ort, "open_session", lambda path, provider: opened.append(path.name) or real_open(path, provider))
    pose = random_poses(1, seed=31)[0]
    for name in ("ort", "ort-fused"):
        with open_backend(name, model, precision="fp16") as half, open_backend(name, model) as full:
            parity = rgba_parity(name, half.render(pose).host(), full.render(pose).host(), fp16=True)
            assert half.name == f"{name}-fp16" and parity.ok, parity.line()
    assert opened == ["face.fp16.onnx", "body.fp16.onnx", "face.onnx", "body.onnx", "student.fp16.onnx", "student.onnx"]


def test_ort_fp16_without_fp16_graphs_says_how_to_export_them(demo_exported):
    from tha.runtime.renderer import open_backend

    with pytest.raises(ThaError, match=r"does not list face.fp16.onnx \(exported without --fp16\); "
                                       r"re-export with `tha export .* --onnx --fp16`") as err:
        open_backend("ort", demo_exported, precision="fp16")
    assert "\n" not in str(err.value)


def test_an_automatic_export_past_the_bounds_is_not_installed(tmp_path, monkeypatch):
    """`--backend ort` exported into the cache unchecked against PyTorch; now it is checked like
    `tha export` (on fewer poses), and graphs past the bounds never reach the cache."""
    from tha.export import exporter

    monkeypatch.setenv("THA_HOME", str(tmp_path / "home"))
    model = copy_model_directory(DEMO, tmp_path / "demo")
    fail_one_check(monkeypatch, 1)
    with pytest.raises(ThaError, match="exceed the error bounds against PyTorch") as err:
        exporter.ensure_exported(model)
    cache = exporter.cached_export_dir(model)
    assert "\n" not in str(err.value) and not cache.exists() and list(cache.parent.iterdir()) == []


@pytest.mark.slow
def test_an_automatic_fp16_export_is_verified_in_both_precisions(tmp_path, monkeypatch):
    from tha.export import exporter

    monkeypatch.setenv("THA_HOME", str(tmp_path / "home"))
    model = copy_model_directory(DEMO, tmp_path / "demo")
    cache = exporter.ensure_exported(model, fp16=True)
    assert cache == exporter.cached_export_dir(model) and cache.parent.name == "exports"
    manifest = json.loads((cache / "export.json").read_text())
    assert manifest["options"]["verify_poses"] == exporter.AUTO_VERIFY_POSES == 2
    assert [p["graph"] for p in manifest["parity"]] == ["face", "body", "student", "face fp16", "body fp16",
                                                         "student fp16"]
    assert all(p["ok"] for p in manifest["parity"])
