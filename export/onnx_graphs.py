"""Trace the folded student into static ONNX graphs: face, body, and the fused student.

Graph contracts (batch 1, float32 unless named):
- ``face``: ``pose`` (1,39) -> ``patch`` (1,4,128,128);
- ``body``: ``image`` (1,4,512,512, the face already pasted) + ``pose`` (1,45) -> ``image``
  (1,4,512,512) in the SPEC's [-1,1] space;
- ``student``: ``pose`` (1,45) -> ``rgba`` (512,512,4) uint8, straight alpha, display-ready.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from tha.export.folded import FoldedBody, FoldedFace, FusedStudent
from tha.models.character import CharacterModel
from tha.models.errors import ThaError
from tha.models.files import atomic_write_bytes

OPSET = 17
GRAPHS = ("face", "body", "student")


@dataclass(frozen=True)
class GraphSpec:
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def graph_specs(model: CharacterModel) -> dict[str, GraphSpec]:
    face_pose = model.face_morpher.config.pose_size
    pose = torch.zeros(1, model.body_morpher.config.pose_size)
    image = model.image_tensor()[None]
    return {
        "face": GraphSpec(FoldedFace(model.face_morpher).eval(), (pose[:, :face_pose],), ("pose",), ("patch",)),
        "body": GraphSpec(FoldedBody(model.body_morpher).eval(), (image, pose), ("image", "pose"), ("image_out",)),
        "student": GraphSpec(FusedStudent(model).eval(), (pose,), ("pose",), ("rgba",)),
    }


def graph_file(name: str, fp16: bool) -> str:
    return f"{name}.fp16.onnx" if fp16 else f"{name}.onnx"


def trace(spec: GraphSpec) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(spec.module, spec.inputs, buf, dynamo=False, opset_version=OPSET,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(proto)


def export_graph(spec: GraphSpec, path: Path) -> Path:
    proto = simplify(trace(spec))
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def load_checked(path: Path) -> onnx.ModelProto:
    """An ONNX file, or one clear error if it is missing or not a valid graph."""
    if not path.is_file():
        raise ThaError(f"{path} does not exist; run `tha export MODEL_DIR --onnx` first")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...: all mean "corrupt"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ThaError(f"{path} is not a valid ONNX graph ({first[:120]}); re-run `tha export`") from None
    return proto
