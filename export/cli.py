"""`tha export`: a student to ONNX / TensorRT (and a web page); `tha teacher export`: the
THA4 teacher to ONNX."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tha.models.cli import teacher_app
from tha.models.errors import ThaError


def export(
    model_dir: Path = typer.Argument(..., help="Character model directory (character_model.yaml)."),
    onnx: bool = typer.Option(False, "--onnx", help="Export ONNX graphs: face, body and the fused student."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write fp16 graphs (GEMMs fp16, sines fp32)."),
    trt: bool = typer.Option(False, "--trt", help="Build TensorRT engines from the graphs (needs CUDA)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default: MODEL_DIR/export)."),
    verify_poses: int = typer.Option(8, "--verify-poses", min=0, help="Random poses for the self-check (0: skip)."),
    web: Optional[Path] = typer.Option(None, "--web", help="Write a static web page that poses the student here."),
) -> None:
    """Export a student to ONNX and TensorRT, or to a web page.

    The graphs are checked against PyTorch on random poses (--verify-poses)."""
    from tha.models.hub import resolve_model

    model_dir = resolve_model(model_dir)  # a fetched model's name, as every other command takes
    if web is not None:
        from tha.web.build import export_web

        export_web(model_dir, web)
        print(f"wrote the web page to {web}; serve it with `tha serve-web {web}`")
        if not onnx and not trt:
            return
    if not onnx and not trt:
        raise ThaError("nothing to export: pass --onnx (and optionally --fp16, --trt) or --web OUT")
    from tha.export.exporter import ExportOptions, export_student

    result = export_student(model_dir, out or model_dir / "export", ExportOptions(fp16, trt, verify_poses))
    for path in result.files:
        print(f"wrote {path}")
    for parity in result.parity:
        print(parity.line())


def export_teacher(
    teacher: Path = typer.Argument(..., help="Directory of upstream's teacher .pt files."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default: TEACHER/export)."),
) -> None:
    """Export the THA4 teacher to one ONNX graph.

    The graph is checked against PyTorch with ONNX Runtime on a few poses."""
    from tha.export.teacher_onnx import export_teacher_onnx
    from tha.models.files import check_output_dir

    out_dir = out or teacher / "export"
    check_output_dir(out_dir, "-o")
    print(f"wrote {export_teacher_onnx(teacher, out_dir)}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    # Beside `tha teacher pose` and `random-weights`: everything about the teacher in one group.
    teacher_app.command("export")(export_teacher)
