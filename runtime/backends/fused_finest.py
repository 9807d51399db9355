"""The body's finest level as one Triton kernel: upsample, first layer, sine layers and the
output layer for a block of pixels, with the activations kept on chip.

Run layer by layer (``FoldedBody``), the finest level is most of a GPU frame's memory traffic:
each of its 90-channel activations over 512x512 pixels (47 MB in fp16) is written and read again
by the next GEMM and by the sine between them, about 0.8 GB a frame. Here a program takes 64
pixels, builds their first-layer pre-activations in fp32 from four bilinear taps of the coarser
level (already through this level's feature weights) plus the column and row terms, and runs the
sine layers and the output layer on tensor cores (fp16 inputs, fp32 sums); only the 7 output
fields leave it. Same precision policy as ``fp16_gemms``, with the GEMM results kept in fp32.

Channels are padded to a power of two (90 -> 128) with zero weights, so the extra channels stay
exactly zero. ``TRITON_INTERPRET=1`` runs the same kernel on the CPU (how the tests check it
without a GPU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from tha.export.folded import FoldedBody
from tha.models.errors import ThaError



@triton.jit
def _finest_kernel(coarse_ptr, column_ptr, row_ptr, hidden_w_ptr, hidden_b_ptr, last_w_ptr, last_b_ptr, out_ptr,
                   S: tl.constexpr, SC: tl.constexpr, CP: tl.constexpr, LAYERS: tl.constexpr,
                   OUT: tl.constexpr, OP: tl.constexpr, BLOCK: tl.constexpr):
    """coarse (N, SC*SC, CP) fp16 pixel-major; column (CP, S) and row (N, CP, S) fp32; hidden
    weights (LAYERS, CP, CP) fp16 as (in, out), biases (LAYERS, CP) fp32; last (CP, OP) fp16 and
    (OP,) fp32; out (N, OUT, S, S) fp32."""
    n = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y, x = p // S, p % S
    c = tl.arange(0, CP)[None, :]
    # Bilinear 2x, align_corners=False, as PyTorch computes its source index: clamped at 0 and at the last pixel.
    sx = tl.maximum(x.to(tl.float32) * 0.5 - 0.25, 0.0)
    sy = tl.maximum(y.to(tl.float32) * 0.5 - 0.25, 0.0)
    x0, y0 = sx.to(tl.int32), sy.to(tl.int32)
    lx, ly = (sx - x0.to(tl.float32))[:, None], (sy - y0.to(tl.float32))[:, None]
    x1, y1 = tl.minimum(x0 + 1, SC - 1), tl.minimum(y0 + 1, SC - 1)
    base = coarse_ptr + n * SC * SC * CP
    top = (tl.load(base + (y0 * SC + x0)[:, None] * CP + c).to(tl.float32) * (1.0 - lx)
           + tl.load(base + (y0 * SC + x1)[:, None] * CP + c).to(tl.float32) * lx)
    bottom = (tl.load(base + (y1 * SC + x0)[:, None] * CP + c).to(tl.float32) * (1.0 - lx)
              + tl.load(base + (y1 * SC + x1)[:, None] * CP + c).to(tl.float32) * lx)
    pre = top * (1.0 - ly) + bottom * ly
    pre += tl.load(column_ptr + c * S + x[:, None])
    pre += tl.load(row_ptr + n * CP * S + c * S + y[:, None])
    h = tl.sin(pre)
    k = tl.arange(0, CP)[:, None]
    for i in tl.static_range(LAYERS):
        w = tl.load(hidden_w_ptr + i * CP * CP + k * CP + c)
        h = tl.sin(tl.dot(h.to(tl.float16), w) + tl.load(hidden_b_ptr + i * CP + c))
    o = tl.arange(0, OP)[None, :]
    fields = tl.dot(h.to(tl.float16), tl.load(last_w_ptr + k * OP + o)) + tl.load(last_b_ptr + o)
    tl.store(out_ptr + n * OUT * S * S + o * S * S + p[:, None], fields, mask=o < OUT)


def _pad(t: Tensor, *size: int) -> Tensor:
    """``t`` zero-padded at the end of each dimension to ``size``."""
    pads = [q for dim in reversed(range(t.dim())) for q in (0, size[dim] - t.shape[dim])]
    return F.pad(t, pads)


class FusedFinest:
    """The finest level of a folded body (fp16 GEMMs) as one kernel launch per frame or batch."""

    def __init__(self, body: FoldedBody, device: torch.device | str, block: int = 64):
        """``block``: pixels per program (a power of two; the CPU interpreter is faster with more)."""
        first, hidden, last = body.firsts[-1], list(body.levels[-1]), body.last
        if len(body.firsts) < 2 or first.feature_size * 2 != first.size or first.size ** 2 % block:
            raise ThaError("the fused finest level needs a body whose finest level is twice the previous one's size")
        channels = first.bias.shape[0]
        self.size, self.coarse_size = first.size, first.feature_size
        self.cp = max(16, triton.next_power_of_2(channels))
        self.outputs = last.weight.shape[0]
        self.op = max(16, triton.next_power_of_2(self.outputs))
        cp, f32, f16 = self.cp, dict(device=device, dtype=torch.float32), dict(device=device, dtype=torch.float16)
        with torch.no_grad():
            self.w_feature = _pad(first.w_feature.float(), cp, first.w_feature.shape[1]).to(**f16)
            self.w_pose = _pad(first.w_pose.float(), cp, first.w_pose.shape[1]).to(**f32)
            self.bias = _pad(first.bias.float(), cp).to(**f32)
            self.column = _pad(first.column[:, 0].float(), cp, self.size).contiguous().to(**f32)
            self.row = _pad(first.row[:, :, 0].float(), cp, self.size).contiguous().to(**f32)
            self.hidden_w = torch.stack([_pad(d.weight.float(), cp, cp).t() for d in hidden]).contiguous().to(**f16)
            self.hidden_b = torch.stack([_pad(d.bias[:, 0].float(), cp) for d in hidden]).to(**f32)
            self.last_w = _pad(last.weight.float(), self.op, cp).t().contiguous().to(**f16)
            self.last_b = _pad(last.bias[:, 0].float(), self.op).to(**f32)
        self.layers, self.block = len(hidden), block

    def __call__(self, features: Tensor, pose: Tensor) -> Tensor:
        """features (C', S'*S') or (N, C', S'*S'): the previous level's output; pose (N, 45) fp32
        -> fields (N, 7, S, S) fp32."""
        if features.dim() == 2:
            features = features[None]
        n, s = features.shape[0], self.size
        coarse = torch.matmul(features.transpose(1, 2).to(torch.float16), self.w_feature.t())  # (N, S'*S', CP)
        row = self.row + torch.addmm(self.bias, pose.float(), self.w_pose.t())[:, :, None]  # (N, CP, S)
        out = torch.empty(n, self.outputs, s, s, device=features.device, dtype=torch.float32)
        _finest_kernel[(s * s // self.block, n)](
            coarse.contiguous(), self.column, row, self.hidden_w, self.hidden_b, self.last_w, self.last_b, out,
            S=s, SC=self.coarse_size, CP=self.cp, LAYERS=self.layers, OUT=self.outputs, OP=self.op, BLOCK=self.block)
        return out
