"""Trace the folded student into static ONNX graphs: face, body, and the fused student.

Graph contracts (batch 1, float32 unless named):
- ``face``: ``pose`` (1,39) -> ``patch`` (1,4,128,128);
- ``body``: ``image`` (1,4,512,512, the face already pasted) + ``pose`` (1,45) -> ``image_out``
  (1,4,512,512) in the SPEC's [-1,1] space;
- ``student``: ``pose`` (1,45) -> ``rgba`` (512,512,4) uint8, straight alpha, display-ready.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch

from tha.export.folded import FoldedBody, FoldedFace, FusedStudent
from tha.models.character import CharacterModel
from tha.models.errors import ThaError, short_reason
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


def _picks_batch_zero(node: onnx.NodeProto, consts: dict, shapes: dict) -> bool:
    """Gather(axis 0, scalar index 0) on a tensor whose first dimension is 1."""
    if node.op_type != "Gather" or node.input[1] not in consts:
        return False
    axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
    index = onnx.numpy_helper.to_array(consts[node.input[1]])
    return axis == 0 and index.shape == () and int(index) == 0 and shapes.get(node.input[0], [0])[:1] == [1]


def squeeze_batch_gathers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``x[0]`` on a batch-1 tensor traces to Gather(index 0), which ONNX Runtime runs as a full
    copy (~10% of a CPU frame); Squeeze of axis 0 is the same value and costs nothing."""
    graph = proto.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    axes = "squeeze_axis_0"
    picks = [n for n in graph.node if _picks_batch_zero(n, consts, shapes)]
    for node in picks:
        node.op_type, node.input[1] = "Squeeze", axes
        del node.attribute[:]
    if picks:
        graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(1, dtype=np.int64), axes))
        _drop_unused_constants(graph)
    return proto


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    """Constants nothing reads any more (runtimes warn about each one)."""
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return squeeze_batch_gathers(onnxslim.slim(proto))


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
        raise ThaError(f"{path} is not a valid ONNX graph ({short_reason(err)}); re-run `tha export`") from None
    return proto
