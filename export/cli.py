"""`tha export`: a student to ONNX / TensorRT (and a web page); `tha teacher export`: the
THA4 teacher to ONNX."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tha.models.cli import teacher_app
from tha.models.errors import ThaError
from tha.runtime.options import ModelDir


def export(
    model_dir: ModelDir,
    onnx: bool = typer.Option(False, "--onnx", help="Export ONNX graphs: face, body and the fused student."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write fp16 graphs (GEMMs fp16, sines fp32)."),
    trt: bool = typer.Option(False, "--trt", help="Build TensorRT engines from the graphs (needs CUDA)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default: MODEL_DIR/export)."),
    verify_poses: Optional[int] = typer.Option(None, "--verify-poses", min=0,
                                               help="Random poses for the self-check (0: skip; default 8)."),
    web: Optional[Path] = typer.Option(None, "--web", help="Write a static web page that poses the student here."),
) -> None:
    """Export a student to ONNX and TensorRT, or to a web page.

    The graphs are checked against PyTorch on random poses (--verify-poses)."""
    from tha.models.hub import resolve_model

    if web is not None and not onnx and not trt:
        _refuse_graph_options(out, fp16, verify_poses)
    model_dir = resolve_model(model_dir)  # a fetched model's name, as every other command takes
    if not onnx and not trt and web is None:
        raise ThaError("nothing to export: pass --onnx (and optionally --fp16, --trt) or --web OUT")
    out_dir = out or model_dir / "export"
    if onnx or trt:  # both outputs are checked before either is written
        _check_graph_target(model_dir, out_dir, web, trt)
    if web is not None:
        from tha.web.build import export_web

        export_web(model_dir, web)
        print(f"wrote the web page to {web}; serve it with `tha serve-web {web}`")
    if not onnx and not trt:
        return
    from tha.export.exporter import ExportOptions, export_student

    options = ExportOptions(fp16, trt) if verify_poses is None else ExportOptions(fp16, trt, verify_poses)
    result = export_student(model_dir, out_dir, options)
    for path in result.files:
        print(f"wrote {path}")
    for parity in result.parity:
        print(parity.line())


def _check_graph_target(model_dir: Path, out_dir: Path, web: Optional[Path], trt: bool) -> None:
    from tha.export.exporter import check_export_target

    check_export_target(model_dir, out_dir)
    if web is not None and web.resolve() == out_dir.resolve():
        raise ThaError(f"--web and -o both name {out_dir}; give the page and the graphs a folder each")
    if trt:
        from tha.export.trt_engine import require_tensorrt

        require_tensorrt()


def _refuse_graph_options(out: Optional[Path], fp16: bool, verify_poses: Optional[int]) -> None:
    """--web alone: the options of the --onnx/--trt graphs would do nothing, so they are refused."""
    if out is not None:
        raise ThaError("-o is the folder of the --onnx/--trt graphs; the web page goes to the folder --web names "
                       "(drop -o, or add --onnx)")
    if fp16:
        raise ThaError("--fp16 applies to the --onnx graphs; the web page always has fp32 and fp16 graphs "
                       "(drop --fp16, or add --onnx)")
    if verify_poses is not None:
        raise ThaError("--verify-poses checks the --onnx/--trt graphs against PyTorch; the web page is not checked "
                       "that way (drop --verify-poses, or add --onnx)")


def export_teacher(
    teacher: Path = typer.Argument(..., help="Directory of upstream's teacher .pt files."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default: TEACHER/export)."),
) -> None:
    """Export the THA4 teacher to one ONNX graph.

    The graph is checked against PyTorch with ONNX Runtime on a few poses."""
    from tha.export.teacher_onnx import export_teacher_onnx

    # minutes on a CPU: each step is printed as it starts
    print(f"wrote {export_teacher_onnx(teacher, out or teacher / 'export', progress=lambda line: print(line, flush=True))}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    # Beside `tha teacher pose` and `random-weights`: everything about the teacher in one group.
    teacher_app.command("export")(export_teacher)
