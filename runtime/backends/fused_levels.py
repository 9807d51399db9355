"""SIREN levels as single Triton kernels: upsample, first layer, sine layers and the linear map
out for a block of pixels, with the activations kept on chip.

Run layer by layer (``FoldedBody``), the big levels' activations dominate a GPU frame's memory
traffic: each (90 channels over 512x512 pixels, or 180 over 256x256: 47 or 24 MB in fp16) is
written, then read and rewritten by the sine, then read by the next GEMM. Here a program takes a
block of pixels, builds their first-layer pre-activations in fp32 from four bilinear taps of the
coarser level (already through this level's feature weights) plus the column and row terms, and
runs the sine layers and the map out (the next level's feature weights, or the output layer) on
tensor cores: fp16 inputs, fp32 sums and results. Only the map's output leaves the chip: the
next fused level's input, pixel-major, or the fields. Same precision policy as ``fp16_gemms``.

Channels are padded to a power of two (90 -> 128, 180 -> 256) with zero weights, so the extra
channels stay exactly zero; levels wider than ``MAX_CHANNELS`` (the 360-channel 128x128 level)
stay layer by layer. ``TRITON_INTERPRET=1`` runs the same kernels on the CPU (how the tests
check them without a GPU).
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime import OutOfResources

from tha.export.folded import Dense, FirstLayer, FoldedBody, FoldedFace, per_sample
from tha.models.errors import ThaError

MAX_CHANNELS = 256  # padded width: a 256x256 fp16 weight (128 KB) still fits one SM's shared memory
# Triton 3.0 (torch 2.4's) rejects these kernels (tl.arange of constexpr arguments); 3.2, 3.6 and
# 3.9 run them (measured in the interpreter)
MIN_TRITON = (3, 2)


def _triton_release(version: str) -> tuple[int, int] | None:
    """major.minor of a release or of a build such as "3.6.0+git1234" or "3.5.0.dev0"."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


_release = _triton_release(triton.__version__)
if _release is None:
    raise ImportError(f"Triton's version {triton.__version__!r} is not major.minor")
if _release < MIN_TRITON:
    raise ImportError(f"Triton {triton.__version__} is older than {'.'.join(map(str, MIN_TRITON))}")


@triton.jit
def _level_kernel(coarse_ptr, column_ptr, row_ptr, hidden_w_ptr, hidden_b_ptr, out_w_ptr, out_b_ptr, out_ptr,
                  out_stride_n, out_stride_o, out_stride_p,
                  S: tl.constexpr, SC: tl.constexpr, HAS_COARSE: tl.constexpr, CP: tl.constexpr,
                  LAYERS: tl.constexpr, OUT: tl.constexpr, OP: tl.constexpr, BLOCK: tl.constexpr):
    """coarse (N, SC*SC, CP) fp16 pixel-major; column (CP, S) and row (N, CP, S) fp32; hidden
    weights (LAYERS, CP, CP) fp16 as (in, out), biases (LAYERS, CP) fp32; map out (CP, OP) fp16
    and (OP,) fp32; out[n, o, p] at the given strides, its first OUT channels."""
    n = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y, x = p // S, p % S
    c = tl.arange(0, CP)[None, :]
    pre = tl.load(column_ptr + c * S + x[:, None]) + tl.load(row_ptr + n * CP * S + c * S + y[:, None])
    if HAS_COARSE:
        # Bilinear 2x, align_corners=False, with PyTorch's source index: clamped at 0 and at the last pixel.
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
        pre += top * (1.0 - ly) + bottom * ly
    h = tl.sin(pre)
    k = tl.arange(0, CP)[:, None]
    for i in tl.static_range(LAYERS):
        w = tl.load(hidden_w_ptr + i * CP * CP + k * CP + c)
        h = tl.sin(tl.dot(h.to(tl.float16), w) + tl.load(hidden_b_ptr + i * CP + c))
    o = tl.arange(0, OP)[None, :]
    out = tl.dot(h.to(tl.float16), tl.load(out_w_ptr + k * OP + o)) + tl.load(out_b_ptr + o)
    target = out_ptr + n * out_stride_n + o * out_stride_o + p[:, None] * out_stride_p
    tl.store(target, out.to(out_ptr.dtype.element_ty), mask=o < OUT)


def block_size(channels: int) -> int:
    """Pixels per program: 64 (32 for the 256-wide level, to fit its weights beside the
    activations); Triton's CPU interpreter pays per program, so it gets 1024."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 1024
    return 64 if channels <= 128 else 32


def padded(channels: int) -> int:
    return max(16, triton.next_power_of_2(channels))


def _pad(t: Tensor, *size: int) -> Tensor:
    """``t`` (float32) zero-padded at the end of each dimension to ``size``."""
    pads = [q for dim in reversed(range(t.dim())) for q in (0, size[dim] - t.shape[dim])]
    return F.pad(t.detach().float(), pads)


class FusedLevel:
    """One level as one kernel launch per frame or batch. It ends with ``next_first``'s feature
    weights (output: the next level's input, (N, S*S, CP') fp16) or with ``last`` (output:
    (N, OUT, S, S) fp32)."""

    def __init__(self, first: FirstLayer, hidden: list[Dense], device: torch.device | str,
                 next_first: FirstLayer | None = None, last: Dense | None = None):
        c, s = first.bias.shape[0], first.size
        self.cp, self.size, self.coarse_size, self.layers = padded(c), s, first.feature_size, len(hidden)
        self.block = block_size(self.cp)
        if self.cp > MAX_CHANNELS or s * s % self.block or (first.w_feature is not None and 2 * first.feature_size != s):
            raise ThaError(f"a fused level needs <= {MAX_CHANNELS} channels and twice the previous level's size")
        cp, f32, f16 = self.cp, dict(device=device, dtype=torch.float32), dict(device=device, dtype=torch.float16)
        if first.w_feature is not None:
            self.w_feature = _pad(first.w_feature, cp, first.w_feature.shape[1]).to(**f16)
        self.w_pose = _pad(first.w_pose, cp, first.w_pose.shape[1]).to(**f32)
        self.bias = _pad(first.bias, cp).to(**f32)
        self.column = _pad(first.column[:, 0], cp, s).to(**f32)
        self.row = _pad(first.row[:, :, 0], cp, s).to(**f32)
        self.hidden_w = torch.stack([_pad(d.weight, cp, cp).t() for d in hidden]).contiguous().to(**f16)
        self.hidden_b = torch.stack([_pad(d.bias[:, 0], cp) for d in hidden]).to(**f32)
        if next_first is not None:  # into the next level's feature space: no bias, pixel-major fp16
            self.outputs = self.op = padded(next_first.bias.shape[0])
            weight, bias = next_first.w_feature, torch.zeros(self.op)
        else:
            self.outputs, self.op = last.weight.shape[0], padded(last.weight.shape[0])
            weight, bias = last.weight, last.bias[:, 0]
        self.pixel_major = next_first is not None
        self.out_w = _pad(weight, self.op, cp).t().contiguous().to(**f16)
        self.out_b = _pad(bias, self.op).to(**f32)

    def project(self, features: Tensor) -> Tensor:
        """A layer-by-layer level's output (N, C', S'*S') through this level's feature weights:
        the kernel's coarse input, (N, S'*S', CP) fp16."""
        return torch.matmul(features.transpose(1, 2).to(torch.float16), self.w_feature.t())

    def fits(self) -> bool:
        """Whether this GPU runs the kernel. Triton compiles it on the first launch and refuses one
        that needs more shared memory than an SM has: the 256-wide level's weights alone are
        128 KB, within an H100's 227 KB but not a GeForce RTX 30/40's ~100 KB. One block of one
        frame is launched, so the check costs the compile (which the first frame would pay) and
        almost nothing else."""
        pose = torch.zeros(1, self.w_pose.shape[1], device=self.bias.device)
        coarse = None if self.coarse_size == 0 else torch.zeros(
            1, self.coarse_size ** 2, self.cp, device=self.bias.device, dtype=torch.float16)
        try:
            self(coarse, pose, programs=1)
        except OutOfResources as err:
            warnings.warn(f"cuda-fused: a {self.cp}-channel {self.size}x{self.size} level needs {err.required} "
                          f"of {err.name}, this GPU has {err.limit}: it runs layer by layer", stacklevel=2)
            return False
        return True

    def __call__(self, coarse: Tensor | None, pose: Tensor, programs: int | None = None) -> Tensor:
        """coarse (N, S'*S', CP) fp16 or None (a first level); pose (N, P) -> this level's output
        (only its first ``programs`` blocks of pixels when given)."""
        n, s = pose.shape[0], self.size
        row = self.row + torch.addmm(self.bias, pose.float(), self.w_pose.t())[:, :, None]  # (N, CP, S)
        if self.pixel_major:
            out = torch.empty(n, s * s, self.op, device=pose.device, dtype=torch.float16)
            strides = (s * s * self.op, 1, self.op)
        else:
            out = torch.empty(n, self.outputs, s, s, device=pose.device, dtype=torch.float32)
            strides = (self.outputs * s * s, s * s, 1)
        _level_kernel[(programs or s * s // self.block, n)](
            self.bias if coarse is None else coarse.contiguous(), self.column, row, self.hidden_w, self.hidden_b,
            self.out_w, self.out_b, out, *strides, S=s, SC=max(self.coarse_size, 1), HAS_COARSE=coarse is not None,
            CP=self.cp, LAYERS=self.layers, OUT=self.outputs, OP=self.op, BLOCK=self.block)
        return out


class FusedBody:
    """A folded body (fp16 GEMMs) whose trailing levels run fused; the leading ones (too wide,
    or too big for this GPU's shared memory) layer by layer, as ``FoldedBody`` runs them."""

    def __init__(self, body: FoldedBody, device: torch.device | str):
        firsts, n = list(body.firsts), len(body.firsts)
        self.body, self.lead, self.levels = body, n, []
        # from the finest level back: a fused level reads the previous one's output, so the
        # fused levels are the trailing run of those narrow enough that this GPU can run
        while self.lead > 1 and padded(firsts[self.lead - 1].bias.shape[0]) <= MAX_CHANNELS:
            i = self.lead - 1
            level = FusedLevel(firsts[i], list(body.levels[i]), device,
                               next_first=firsts[i + 1] if i + 1 < n else None, last=body.last if i + 1 == n else None)
            if not level.fits():
                break
            self.levels.insert(0, level)
            self.lead = i
        if not self.levels:
            raise ThaError(f"no level of this body can be fused on this device (<= {MAX_CHANNELS} channels, "
                           "within its shared memory); use --backend cuda")

    def fields(self, pose: Tensor) -> Tensor:
        """pose (N, 45) fp32 -> the morpher's raw output (N, 7, S, S) fp32."""
        lead = per_sample(lambda one: self.body.features(one, self.lead)[None])(pose)
        x = self.levels[0].project(lead)
        for level in self.levels:
            x = level(x, pose)
        return x


def face_patches(face: FoldedFace, device: torch.device | str) -> Callable[[Tensor], Tensor]:
    """face pose (N, 39) -> patches (N, 4, S, S): the whole face morpher as one fused level, or
    layer by layer where this GPU cannot run its kernel."""
    level = FusedLevel(face.first, list(face.hidden), device, last=face.last)
    return (lambda pose: level(None, pose)) if level.fits() else per_sample(face)
