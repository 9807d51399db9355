"""The fast CPU backend: the folded student (``tha.export.folded``) run over reused buffers.

Where a plain PyTorch student spends a 2-core CPU's time, and what this does instead:
- every 1x1 conv is one GEMM on (C, pixels) whose bias rides along as an extra input row of
  ones, written straight into the next layer's buffer (no bias broadcast, no allocation: fresh
  100 MB tensors each frame cost more in page faults than the sine itself);
- each level runs band by band (a few rows at a time) from its first layer to the linear map
  that reads it, so activations stay in cache (``cpu_ops``);
- the sine runs in place (ATen's vectorised kernel, one pass);
- a level's output goes straight through the next level's feature weights, at the coarser
  size, and the 2x bilinear upsample of that is four ``lerp`` passes per band;
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
from tha.runtime.backends.cpu_ops import BiasGemm, SineChain, band_rows, ones_row_buffer, upsample2x
from tha.runtime.backends.pipeline import PipelineBackend


def bias_gemm(dense: Dense) -> BiasGemm:
    return BiasGemm(dense.weight, dense.bias, dense.sine)


def feature_gemm(first: FirstLayer) -> BiasGemm:
    """A level's feature weights: what reads the previous level's output."""
    return BiasGemm(first.w_feature)


class Level:
    """One SIREN level (or the face) run band by band: folded first layer, sine layers, then
    ``project`` (the next level's feature weights or the output layer); returns
    (projected channels, S, S) in a buffer rewritten next frame."""

    def __init__(self, first: FirstLayer, hidden: list[Dense], project: BiasGemm):
        self.first = first
        c, s = first.bias.shape[0], first.size
        widest = max([c, *(d.weight.shape[0] for d in hidden)])
        self.rows = min(s, band_rows(widest, s))
        self.chain = SineChain([bias_gemm(d) for d in hidden], project, self.rows * s)
        self.pre = ones_row_buffer(c, self.rows * s)
        self.tmp = torch.empty(c, self.rows, s // 2) if first.w_feature is not None else None
        self.out = torch.empty(project.out_channels, s, s)

    def __call__(self, pose: Tensor, coarse: Tensor | None = None) -> Tensor:
        """``coarse``: the feature term (C, S/2, S/2), already through this level's feature weights."""
        first, c, s = self.first, self.first.bias.shape[0], self.first.size
        row = first.row_and_pose(pose)
        if coarse is not None and 2 * coarse.shape[-1] != s:  # not a 2x level: interpolate it whole
            coarse = F.interpolate(coarse[None], size=(s, s), mode="bilinear", align_corners=False)[0]
        out = self.out.view(self.out.shape[0], s * s)
        for y0 in range(0, s, self.rows):
            y1 = min(s, y0 + self.rows)
            pre = self.pre[:, : (y1 - y0) * s]
            block = pre[:c].view(c, y1 - y0, s)
            if coarse is None:
                torch.add(first.column, row[:, y0:y1], out=block)
            else:
                if coarse.shape[-1] == s:
                    block.copy_(coarse[:, y0:y1])
                else:
                    upsample2x(coarse, self.tmp[:, : y1 - y0], block, y0 // 2, y1 // 2)
                block.add_(first.column)
                block.add_(row[:, y0:y1])
            self.chain(pre, out[:, y0 * s: y1 * s])
        return self.out


class FastBody:
    def __init__(self, body: FoldedBody, active_tiles: bool = True):
        self.body = body
        firsts, hidden = list(body.firsts), [list(level) for level in body.levels]
        projections = [feature_gemm(f) for f in firsts[1:]]
        self.levels = [Level(f, h, p) for f, h, p in zip(firsts[:-1], hidden[:-1], projections)]
        finest, last = firsts[-1], bias_gemm(body.last)
        sparse = active_tiles and len(firsts) > 1 and finest.feature_size * 2 == body.size
        if sparse:
            self.finest = ActiveTiles(finest, [bias_gemm(d) for d in hidden[-1]], last, body.size)
        else:
            self.finest = None
            self.levels.append(Level(finest, hidden[-1], last))

    def fields(self, image: Tensor, pose: Tensor) -> Tensor:
        """The morpher's raw output (1,7,S,S) for ``image`` (face pasted) into a reused buffer
        (rewritten next frame); the finest level only where the frame can change."""
        x = None
        for level in self.levels:
            x = level(pose, x)
        return x[None] if self.finest is None else self.finest.fields(image, pose, x)


class FastCPUEngine:
    name = "fastcpu"

    def __init__(self, model: CharacterModel, active_tiles: bool = True):
        face = FoldedFace(model.face_morpher).eval()
        self.fast_face = Level(face.first, list(face.hidden), bias_gemm(face.last))
        self.fast_body = FastBody(FoldedBody(model.body_morpher).eval(), active_tiles)

    def face(self, face_pose: Tensor) -> Tensor:
        return self.fast_face(face_pose)[None]

    def body(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.compose(image, self.fast_body.fields(image, pose))

    def compose(self, image: Tensor, fields: Tensor) -> Tensor:
        """Warp and blend ``image`` with body fields: the cheap part of a frame."""
        return self.fast_body.body.compose(image, fields)

    def scope(self) -> AbstractContextManager:
        return torch.inference_mode()  # no autograd bookkeeping on the reused buffers


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
        with self.lock, self.engine.scope():
            p = self.pose_tensor(pose)
            image = self.pasted_image(pose, p)
            return image.clone(), self.engine.fast_body.fields(image, p).clone()

    def compose(self, image: Tensor, fields: Tensor) -> Tensor:
        with self.engine.scope():
            return self.engine.compose(image, fields)
