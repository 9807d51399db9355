"""The student rewritten for inference: the same function, every pose-independent term a constant.

What changes against ``tha.models.student`` (and why it is still the same function):
- omega_0 is folded into each sine layer's weight and bias;
- a level's first layer sees (x, y, pose) per pixel; its result is W_x*x (a per-column constant)
  + W_y*y (a per-row constant) + W_pose@pose + b (one number per channel per frame), so no
  coordinate grid, pose plane or concat is ever built;
- bilinear upsampling (align_corners=False) weights sum to one, so it commutes with a 1x1
  conv: the feature term W_f @ up(x) is computed as up(W_f @ x) at the coarser level, 4x
  fewer multiply-adds;
- 1x1 convs are matmuls on (C, H*W) for batch 1: the layout GEMMs want, no reorders;
- the warp's identity grid is a constant (no AffineGrid in the graph).
Static shapes, batch 1: this is what ``tha export`` traces and what the fast CPU backend runs.

``fp16_gemms`` makes the half-precision form the CUDA backend runs: the same policy as the fp16
ONNX graphs (``tha.export.fp16``), GEMMs in fp16 and everything else in fp32.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tha.models.character import CharacterModel
from tha.models.poser import paste_face
from tha.models.student import BodyMorpher, FaceMorpher, SineLayer, compose, position_grid
from tha.models.image import rgba8


def _const(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().float().contiguous(), requires_grad=False)


def _sine(x: Tensor) -> Tensor:
    # In place outside export: the big activations are then written once, not twice.
    return torch.sin(x) if torch.onnx.is_in_onnx_export() or x.requires_grad else x.sin_()


class FirstLayer(nn.Module):
    """sin(omega*(W [feature?, x, y, pose] + b)) with the x, y and pose terms folded."""

    def __init__(self, layer: SineLayer, size: int, feature_channels: int = 0, feature_size: int = 0):
        super().__init__()
        w = layer.linear.weight[:, :, 0, 0] * layer.omega_0
        f = feature_channels
        coords = position_grid(size)[0, 0, 0]  # x of each column == y of each row
        self.size = size
        self.feature_size = feature_size
        self.column = _const(w[:, f, None, None] * coords[None, None, :])  # (C,1,S)
        self.row = _const(w[:, f + 1, None, None] * coords[None, :, None])  # (C,S,1)
        self.w_pose = _const(w[:, f + 2:])
        self.bias = _const(layer.linear.bias * layer.omega_0)
        self.w_feature = _const(w[:, :f]) if f else None

    def row_and_pose(self, pose: Tensor) -> Tensor:
        """(C,S,1): the row term with the frame's pose term and bias added (the CPU engines add
        the column term as they go)."""
        return self.row + torch.addmv(self.bias, self.w_pose, pose[0])[:, None, None]

    def forward(self, pose: Tensor, features: Tensor | None = None) -> Tensor:
        per_frame = torch.addmm(self.bias[:, None], self.w_pose, pose.t())  # (C,1)
        # (column + per-frame) + row: no constant-only sum, so the exporter cannot fold the
        # separable grid term into a full (C,S,S) constant (165 MB for the body).
        pre = (self.column + per_frame[:, :, None]) + self.row
        if features is not None:
            side = self.feature_size
            coarse = _as(torch.mm(self.w_feature, _as(features, self.w_feature.dtype)), torch.float32)
            up = F.interpolate(coarse.reshape(1, -1, side, side), size=(self.size, self.size),
                               mode="bilinear", align_corners=False)
            pre = pre + up[0]
        return _sine(pre.reshape(pre.shape[0], -1))


class Dense(nn.Module):
    """A 1x1 conv as y = W x + b on (C, H*W), optionally followed by the folded sine."""

    def __init__(self, conv: nn.Conv2d, scale: float = 1.0, sine: bool = True):
        super().__init__()
        self.weight = _const(conv.weight[:, :, 0, 0] * scale)
        self.bias = _const(conv.bias[:, None] * scale)
        self.sine = sine

    def forward(self, x: Tensor) -> Tensor:
        y = torch.addmm(self.bias, self.weight, _as(x, self.weight.dtype))
        return _sine(y) if self.sine else y


def _as(x: Tensor, dtype: torch.dtype) -> Tensor:
    # A no-op (nothing traced) when the dtype already matches: the fp32 graphs stay as they were.
    return x if x.dtype == dtype else x.to(dtype)


def fp16_gemms(module: nn.Module) -> nn.Module:
    """Every GEMM of a folded face or body in fp16 (weights, inputs, outputs), in place; the
    first layers' pre-activations and sines, the warp and the blend stay fp32. Those hold values
    up to tens of radians and pixel coordinates, where fp16's step (1/32 at 32; 1/8 of a pixel
    at 512 px) is visible: all-fp16 frames scored 40.6-43 dB against fp32 on an H100."""
    for sub in module.modules():
        if isinstance(sub, Dense):
            sub.half()
        elif isinstance(sub, FirstLayer) and sub.w_feature is not None:
            sub.w_feature.data = sub.w_feature.data.half()
    return module


def per_sample(batch1: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A batch-1 folded module applied to N inputs: itself for one, ``vmap`` (batched GEMMs) for more."""
    def run(x: Tensor) -> Tensor:
        return batch1(x) if x.shape[0] == 1 else torch.func.vmap(lambda one: batch1(one[None])[0])(x)
    return run


def _hidden(layers: list[SineLayer]) -> nn.ModuleList:
    return nn.ModuleList(Dense(layer.linear, layer.omega_0) for layer in layers)


class FoldedFace(nn.Module):
    """pose (1,39) -> face patch (1,4,128,128)."""

    def __init__(self, face: FaceMorpher):
        super().__init__()
        layers = list(face.siren.sine_layers)
        self.size = face.config.image_size
        self.first = FirstLayer(layers[0], self.size)
        self.hidden = _hidden(layers[1:])
        self.last = Dense(face.siren.last_linear, sine=False)

    def forward(self, pose: Tensor) -> Tensor:
        x = self.first(pose)
        for layer in self.hidden:
            x = layer(x)
        return _as(self.last(x), torch.float32).reshape(1, -1, self.size, self.size)


class FoldedBody(nn.Module):
    """image with the face pasted (1,4,512,512) + pose (1,45) -> blended image (1,4,512,512)."""

    def __init__(self, body: BodyMorpher):
        super().__init__()
        c = body.config
        self.size = c.image_size
        self.firsts = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i, (size, level) in enumerate(zip(c.level_sizes, body.siren_layers)):
            layers = list(level)  # a level > 0 sees the previous level's output, this level's width
            self.firsts.append(FirstLayer(layers[0], size, c.level_channels[i] if i else 0,
                                          c.level_sizes[i - 1] if i else 0))
            self.levels.append(_hidden(layers[1:]))
        self.last = Dense(body.last_linear, sine=False)
        self.identity = _const(position_grid(c.image_size))  # (1,2,S,S): where each pixel samples unwarped

    def fields(self, pose: Tensor) -> Tensor:
        """The morpher's raw output (1,7,S,S): grid change (2), alpha (1), colour change (4)."""
        x = self.features(pose, len(self.firsts))
        return _as(self.last(x), torch.float32).reshape(1, -1, self.size, self.size)

    def features(self, pose: Tensor, levels: int) -> Tensor | None:
        """The output (C, S'*S') of the first ``levels`` levels: what the next level reads."""
        x = None
        for i in range(levels):
            x = self._level(i, pose, x)
        return x

    def _level(self, i: int, pose: Tensor, x: Tensor | None) -> Tensor:
        x = self.firsts[i](pose, x)
        for layer in self.levels[i]:
            x = layer(x)
        return x

    def compose(self, image: Tensor, fields: Tensor) -> Tensor:
        return compose(image, fields, self.identity).blended_image

    def forward(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.compose(image, self.fields(pose))


class FusedStudent(nn.Module):
    """pose (1,45) -> display-ready straight-alpha RGBA uint8 (512,512,4); the character image
    is a constant."""

    def __init__(self, model: CharacterModel):
        super().__init__()
        self.face = FoldedFace(model.face_morpher)
        self.body = FoldedBody(model.body_morpher)
        self.face_pose_size = model.face_morpher.config.pose_size
        self.image = _const(model.image_tensor()[None])

    def forward(self, pose: Tensor) -> Tensor:
        patch = self.face(pose[:, : self.face_pose_size])
        posed = self.body(paste_face(self.image, patch), pose)
        return rgba8(posed[0])
