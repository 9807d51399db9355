"""The fast CPU backend: the folded student (``tha.export.folded``) run over preallocated buffers.

Where a plain PyTorch student spends a 2-core CPU's time, and what this does instead:
- every 1x1 conv is one GEMM on (C, H*W) whose bias rides along as an extra input row of
  ones, written straight into the next layer's buffer (no bias broadcast copy, no allocation:
  fresh 100 MB tensors each frame cost more in page faults than the sine itself);
- the sine runs in place on that buffer (ATen's vectorised kernel, one pass);
- the 2x bilinear upsample between levels is four ``lerp`` passes (the 0.25/0.75 taps),
  ~2.5x faster than ``interpolate`` here, and exactly the same numbers;
- the pose never becomes per-pixel planes: it is one bias per channel per frame.
"""
from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tha.export.folded import Dense, FirstLayer, FoldedBody, FoldedFace
from tha.models.character import CharacterModel
from tha.runtime.backends.active_tiles import ActiveTiles
from tha.runtime.backends.pipeline import PipelineBackend


def upsample2x(x: Tensor, tmp: Tensor, out: Tensor) -> Tensor:
    """Bilinear 2x (align_corners=False, edge-clamped) of (C,S,S) into out (C,2S,2S).
    Each output pixel is 0.75 of its nearer and 0.25 of its farther input neighbour."""
    c, s, _ = x.shape
    rows = tmp.view(c, s, 2, s)  # height pass: whole contiguous rows
    torch.lerp(x[:, 1:], x[:, :-1], 0.25, out=rows[:, 1:, 0])
    rows[:, 0, 0] = x[:, 0]
    torch.lerp(x[:, :-1], x[:, 1:], 0.25, out=rows[:, :-1, 1])
    rows[:, -1, 1] = x[:, -1]
    t = tmp.view(c, 2 * s, s)
    cols = out.view(c, 2 * s, s, 2)
    torch.lerp(t[:, :, 1:], t[:, :, :-1], 0.25, out=cols[:, :, 1:, 0])
    cols[:, :, 0, 0] = t[:, :, 0]
    torch.lerp(t[:, :, :-1], t[:, :, 1:], 0.25, out=cols[:, :, :-1, 1])
    cols[:, :, -1, 1] = t[:, :, -1]
    return out


class Workspace:
    """Reused activation buffers: (C+1, pixels) with the last row all ones (the bias input)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, Tensor] = {}

    def get(self, channels: int, pixels: int, slot: int) -> Tensor:
        key = (channels, pixels, slot)
        if key not in self._buffers:
            buf = torch.empty(channels + 1, pixels)
            buf[channels] = 1.0
            self._buffers[key] = buf
        return self._buffers[key]

    def scratch(self, *shape: int, slot: str) -> Tensor:
        key = (slot, shape)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(*shape)
        return self._buffers[key]


class _Gemm:
    """A ``Dense`` layer as one GEMM with the bias as an extra weight column."""

    def __init__(self, dense: Dense):
        self.weight = torch.cat([dense.weight, dense.bias], dim=1).contiguous()
        self.out_channels = dense.weight.shape[0]
        self.sine = dense.sine

    def __call__(self, x: Tensor, out: Tensor) -> Tensor:
        y = torch.mm(self.weight, x, out=out[: self.out_channels])
        return y.sin_() if self.sine else y


class FastPlan:
    """The folded face or body morpher's layers, executed into a workspace."""

    def __init__(self, workspace: Workspace):
        self.ws = workspace
        self._slot = 0

    def _next(self, channels: int, pixels: int) -> Tensor:
        self._slot ^= 1
        return self.ws.get(channels, pixels, self._slot)

    def first(self, layer: FirstLayer, pose: Tensor, features: Tensor | None) -> Tensor:
        """The folded first layer into a fresh buffer; returns it with its ones row."""
        c, s = layer.bias.shape[0], layer.size
        buf = self._next(c, s * s)
        pre = buf[:c].view(c, s, s)
        per_frame = torch.addmv(layer.bias, layer.w_pose, pose[0])
        row = layer.row + per_frame[:, None, None]  # (C,S,1): the pose term rides with the row term
        if features is None:
            torch.add(layer.column, row, out=pre)
        else:
            side = layer.feature_size
            coarse = self.ws.scratch(c, side * side, slot="coarse")
            torch.mm(layer.w_feature, features[:-1], out=coarse)
            coarse = coarse.view(c, side, side)
            if 2 * side == s:
                upsample2x(coarse, self.ws.scratch(c, 2 * side, side, slot="up"), pre)
            else:
                pre.copy_(F.interpolate(coarse[None], size=(s, s), mode="bilinear", align_corners=False)[0])
            pre.add_(layer.column)
            pre.add_(row)
        pre.sin_()
        return buf

    def dense(self, layer: _Gemm, x: Tensor) -> Tensor:
        out = self._next(layer.out_channels, x.shape[1])
        layer(x, out)
        return out


class FastFace:
    def __init__(self, face: FoldedFace, ws: Workspace):
        self.face = face
        self.hidden = [_Gemm(d) for d in face.hidden]
        self.last = _Gemm(face.last)
        self.plan = FastPlan(ws)

    def __call__(self, pose: Tensor) -> Tensor:
        x = self.plan.first(self.face.first, pose, None)
        for layer in self.hidden:
            x = self.plan.dense(layer, x)
        s = self.face.size
        return torch.mm(self.last.weight, x).view(1, -1, s, s)


class FastBody:
    def __init__(self, body: FoldedBody, ws: Workspace, active_tiles: bool = True):
        self.body = body
        self.levels = [[_Gemm(d) for d in level] for level in body.levels]
        self.last = _Gemm(body.last)
        self.plan = FastPlan(ws)
        finest = body.firsts[-1]
        sparse = active_tiles and len(self.levels) > 1 and finest.feature_size * 2 == body.size
        self.finest = ActiveTiles(finest, self.levels[-1], self.last, body.size) if sparse else None

    def fields(self, image: Tensor, pose: Tensor) -> Tensor:
        """The morpher's raw output (1,7,S,S) for ``image`` (face pasted) into a reused buffer
        (rewritten next frame); the finest level only where the frame can change."""
        x = None
        levels = list(zip(self.body.firsts, self.levels))
        dense = levels if self.finest is None else levels[:-1]
        for first, hidden in dense:
            x = self.plan.first(first, pose, x)
            for layer in hidden:
                x = self.plan.dense(layer, x)
        if self.finest is not None:
            return self.finest.fields(image, pose, x)
        s = self.body.size
        return torch.mm(self.last.weight, x).view(1, -1, s, s)


class FastCPUEngine:
    name = "fastcpu"

    def __init__(self, model: CharacterModel, active_tiles: bool = True):
        ws = Workspace()
        self.fast_face = FastFace(FoldedFace(model.face_morpher).eval(), ws)
        self.fast_body = FastBody(FoldedBody(model.body_morpher).eval(), ws, active_tiles)

    def face(self, face_pose: Tensor) -> Tensor:
        return self.fast_face(face_pose)

    def body(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.compose(image, self.fast_body.fields(image, pose))

    def compose(self, image: Tensor, fields: Tensor) -> Tensor:
        """Warp and blend ``image`` with body fields: the cheap part of a frame."""
        return self.fast_body.body.compose(image, fields)

    def scope(self) -> AbstractContextManager:
        return torch.inference_mode()  # the workspace buffers are inference tensors


class FastCPUBackend(PipelineBackend):
    """The folded student on the CPU with in-place GEMM + sine; same numbers as torch. It also
    hands out a pose's fields, so frames between model frames can be blended
    (``tha.runtime.interpolate``)."""

    def __init__(self, model: CharacterModel, active_tiles: bool = True):
        """``active_tiles``: evaluate the finest level only where the frame can change
        (``tha.runtime.backends.active_tiles``); False runs the whole grid."""
        super().__init__(FastCPUEngine(model, active_tiles), model.image_tensor()[None],
                         model.face_morpher.config.pose_size)

    def fields(self, pose: np.ndarray) -> tuple[Tensor, Tensor]:
        """(face-pasted image, body fields) of a pose, both the caller's to keep."""
        with self.engine.scope():
            p = self.pose_tensor(pose)
            image = self.pasted_image(pose, p)
            return image.clone(), self.engine.fast_body.fields(image, p).clone()

    def compose(self, image: Tensor, fields: Tensor) -> Tensor:
        with self.engine.scope():
            return self.engine.compose(image, fields)
