"""`tha bench`: real backends timed side by side, the table, the chart, the extra rows."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tha.models.errors import ThaError
from tha.runtime.backends.fastcpu import FastCPUBackend
from tha.runtime.bench import Row, bench_poses, extra_rows, format_table, parse_backends, time_backend, write_chart
from cli import assert_one_line_error, tha
from model_dirs import copy_model_directory

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def test_bench_cli_times_backends_and_writes_a_chart(lambda00_dir, tmp_path):
    chart = tmp_path / "bench.png"
    proc = tha("bench", lambda00_dir, "--backends", "torch,fastcpu", "--frames", "1", "--warmup", "0",
               "--chart", chart, env={"THA_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    rows = {m[0]: (float(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(r"^(\S+(?: \S+)*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$", proc.stdout, re.M)}
    # fastcpu can show frames blended between model frames: their cost is a row of its own
    assert set(rows) == {"torch", "fastcpu", "fastcpu blended frame"}, proc.stdout
    assert rows["torch"][2] == 1.0
    ms, fps, ratio = rows["fastcpu"]
    assert abs(fps - 1000 / ms) < 0.02 * fps and abs(ratio - rows["torch"][0] / ms) < 0.02 * ratio
    with Image.open(chart) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_timed_frames_all_run_the_face_and_exclude_the_warm_up(lambda00):
    """The timed loop rendered the warm-up poses again: its first frame was a face-cache hit, so
    "full poses (every frame runs the face morpher too)" was not what was timed."""
    backend = FastCPUBackend(lambda00)
    time_backend(backend, bench_poses(3 + 1, head_only=False), warmup=1)
    assert (backend.face_cache.misses, backend.face_cache.hits) == (4, 0)


def test_table_ratios_are_against_torch():
    lines = format_table([Row("torch", 2000.0), Row("fastcpu", 400.0)])
    assert lines[1].split()[-1] == "1.00x" and lines[2].split()[-1] == "5.00x"
    assert lines[2].split()[2] == "2.50"


def test_gpu_rows_are_against_torch_cuda_to_the_microsecond():
    """The GPU set `tha bench --help` suggests has no CPU torch row: its ratios were all "-"."""
    lines = format_table([Row("torch-cuda", 6.0), Row("cuda:fp16", 1.15)])
    assert lines[0].split()[-2:] == ["x", "torch-cuda"]
    assert lines[2].split() == ["cuda:fp16", "1.150", "869.57", "5.22x"]
    assert format_table([Row("fastcpu", 400.0)])[1].split()[-1] == "-"


def test_chart_is_a_png(tmp_path):
    path = write_chart([Row("torch", 2000.0), Row("ort", 700.0)], tmp_path / "c.png", "t")
    assert np.asarray(Image.open(path)).ndim == 3


def test_head_only_poses_keep_the_face_fixed():
    poses = bench_poses(6, head_only=True)
    assert np.all(poses[:, :39] == poses[0, :39]) and len(np.unique(poses[:, 39])) == 6


def _fake_extra(monkeypatch, measure) -> None:
    """--viewer's measure replaced by ``measure``, through the registry as the real one is found."""
    import sys
    import types

    from tha.runtime import bench

    monkeypatch.setitem(bench.EXTRA_MEASURES, "viewer", ("fake_viewer_bench", "measure_viewer"))
    monkeypatch.setitem(sys.modules, "fake_viewer_bench", types.SimpleNamespace(measure_viewer=measure))


def test_an_extra_measure_that_cannot_run_is_skipped_with_its_reason(tmp_path, caplog, monkeypatch):
    """`--viewer` on a machine whose OpenGL has no driver raised after every backend was timed:
    no table, no chart. Its row is now left out with the reason."""
    def no_driver(model_dir, frames):
        raise ThaError("no EGL display: no OpenGL driver")

    _fake_extra(monkeypatch, no_driver)
    assert extra_rows("viewer", tmp_path, 1) == []
    assert caplog.messages == ["--viewer: skipped (no EGL display: no OpenGL driver)"]


def test_a_bug_in_an_extra_measure_is_not_taken_for_a_missing_install(tmp_path, caplog, monkeypatch):
    """An AttributeError inside a measure (or a renamed measure) was logged as "not installed"
    and its rows dropped; every extra is in-tree, so it is a bug and surfaces as one."""
    from tha.runtime import bench

    def buggy(model_dir, frames):
        return None.rows

    _fake_extra(monkeypatch, buggy)
    with pytest.raises(AttributeError, match="rows"):
        extra_rows("viewer", tmp_path, 1)
    monkeypatch.setitem(bench.EXTRA_MEASURES, "viewer", ("fake_viewer_bench", "renamed_measure"))
    with pytest.raises(AttributeError, match="renamed_measure"):
        extra_rows("viewer", tmp_path, 1)
    assert "not installed" not in caplog.text


def test_every_extra_measure_exists_and_takes_model_dir_and_frames():
    """One call for all four: the distill measure took (frames) alone, the others (model_dir, frames)."""
    import importlib
    import inspect

    from tha.runtime.bench import EXTRA_MEASURES

    for kind, (module, name) in EXTRA_MEASURES.items():
        measure = getattr(importlib.import_module(module), name)
        signature = inspect.signature(measure)
        signature.bind(Path("model"), 1)  # a TypeError if it takes other arguments
        assert list(signature.parameters)[:2] in (["model_dir", "frames"], ["model_dir", "examples"]), kind


def test_a_chart_name_that_is_not_png_is_refused_before_timing(tmp_path):
    result = tha("bench", DEMO, "--backends", "fastcpu", "--chart", tmp_path / "out.jpg")
    assert_one_line_error(result, "--chart", "out.jpg", "written as a PNG", "out.png", code=2)
    assert "bench:" not in result.stderr and not (tmp_path / "out.jpg").exists()


def test_backend_list_is_validated():
    assert parse_backends("torch, ort", ["torch", "ort"]) == ["torch", "ort"]
    assert parse_backends("cuda:fp32,cuda:fp16", ["cuda"]) == ["cuda:fp32", "cuda:fp16"]
    with pytest.raises(ThaError, match="unknown backend"):
        parse_backends("cuda:fp8", ["cuda"])
    with pytest.raises(ThaError, match="unknown backend"):
        parse_backends("torch,cuda9", ["torch", "ort"])


def test_a_backend_named_twice_is_refused(tmp_path):
    """`--backends fastcpu,fastcpu` timed the same backend twice, as two rows."""
    with pytest.raises(ThaError, match="--backends names fastcpu more than once; list each backend once"):
        parse_backends("fastcpu, ort,fastcpu", ["fastcpu", "ort"])
    result = tha("bench", DEMO, "--backends", "fastcpu,fastcpu", "--chart", tmp_path / "bench.png")
    assert_one_line_error(result, "fastcpu more than once", code=2)
    assert not (tmp_path / "bench.png").exists()


def test_a_chart_that_is_the_models_own_image_is_refused(tmp_path):
    """`--chart MODEL/character.png` replaced the character's image with the chart."""
    model = copy_model_directory(DEMO, tmp_path / "model")
    image = (model / "character.png").read_bytes()
    result = tha("bench", model, "--backends", "fastcpu", "--frames", "1", "--chart", model / "character.png")
    assert_one_line_error(result, "--chart", "character.png", "is also this command's input", code=2)
    assert "bench:" not in result.stderr and (model / "character.png").read_bytes() == image


def test_batch_is_bounded(tmp_path):
    """`--batch 100000` sat at "bench: 0%" for minutes, with no word of what it was doing."""
    result = tha("bench", DEMO, "--backends", "fastcpu", "--batch", "100000", "--chart", tmp_path / "bench.png")
    assert_one_line_error(result, "'--batch'", "1024", code=2)
    assert "bench:" not in result.stderr
