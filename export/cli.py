"""`tha export`: a student (or, with --teacher, the teacher) to ONNX / TensorRT."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tha.models.errors import ThaError


def export(
    model_dir: Optional[Path] = typer.Argument(None, help="Character model directory (character_model.yaml)."),
    onnx: bool = typer.Option(False, "--onnx", help="Export ONNX graphs: face, body and the fused student."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write fp16 graphs (GEMMs fp16, sines fp32)."),
    trt: bool = typer.Option(False, "--trt", help="Build TensorRT engines from the graphs (needs CUDA)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default: MODEL_DIR/export)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Export the teacher in this directory instead."),
    verify_poses: int = typer.Option(8, "--verify-poses", min=0, help="Random poses for the self-check (0: skip)."),
    web: Optional[Path] = typer.Option(None, "--web", help="Write a static web page that poses the student here."),
) -> None:
    """Export a student to static ONNX graphs (and TensorRT engines), then check them against PyTorch."""
    if web is not None:
        if model_dir is None:
            raise ThaError("give a character model directory: `tha export MODEL_DIR --web OUT`")
        from tha.export.web import export_web

        export_web(model_dir, web)
        print(f"wrote the web page to {web}; serve it with `tha serve-web {web}`")
        if not onnx and not trt:
            return
    if not onnx and not trt:
        raise ThaError("nothing to export: pass --onnx (and optionally --fp16, --trt) or --web OUT")
    if teacher is not None:
        try:
            from tha.export.teacher_onnx import export_teacher_onnx
        except ImportError:
            raise ThaError("teacher export is not available in this installation (no tha.export.teacher_onnx)") from None
        from tha.models.files import check_output_dir

        check_output_dir(out or teacher / "export", "-o")
        path = export_teacher_onnx(teacher, out or teacher / "export")
        print(f"wrote {path}")
        return
    if model_dir is None:
        raise ThaError("give a character model directory: `tha export MODEL_DIR --onnx`")
    from tha.export.exporter import ExportOptions, export_student

    result = export_student(model_dir, out or model_dir / "export", ExportOptions(fp16, trt, verify_poses))
    for path in result.files:
        print(f"wrote {path}")
    for parity in result.parity:
        print(parity.line())
    if not result.ok:
        raise ThaError(f"exported graphs in {result.out_dir} exceed the error bounds against PyTorch (see above)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
