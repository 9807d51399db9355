"""The in-place CPU operations the fast backend (``fastcpu``) and its active tiles are built from.

A SIREN level is a first layer's pre-activation, sine layers, then one linear map to whatever
reads the level (the next level's feature weights, or the output fields). Run over a whole
512x512 grid, each layer's activations (~95 MB) go through main memory between one GEMM and the
next, and the GEMMs and sines wait on it; run band by band over a few thousand pixels they stay
in cache (2-core Xeon: two 90-channel layers over 512x512 took 64 ms whole, 39 ms in bands).
"""
from __future__ import annotations

import torch
from torch import Tensor

BAND_BYTES = 2 << 20  # one band's activations: about one core's L2 cache


def band_rows(channels: int, row_pixels: int) -> int:
    """Rows per band (an even number, for the 2x upsample): about BAND_BYTES of activations."""
    rows = BAND_BYTES // (4 * (channels + 1) * row_pixels)
    return max(2, rows - rows % 2)


def ones_row_buffer(channels: int, pixels: int) -> Tensor:
    """(channels + 1, pixels) activations whose last row is all ones: the bias input."""
    buf = torch.empty(channels + 1, pixels)
    buf[channels] = 1.0
    return buf


class BiasGemm:
    """y = W x + b as one GEMM: the bias is an extra weight column and x carries a row of ones."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, sine: bool = False):
        bias = torch.zeros(weight.shape[0], 1) if bias is None else bias.reshape(-1, 1)
        self.weight = torch.cat([weight, bias], dim=1).contiguous()
        self.out_channels = weight.shape[0]
        self.sine = sine

    def __call__(self, x: Tensor, out: Tensor) -> Tensor:
        torch.mm(self.weight, x, out=out)
        return out.sin_() if self.sine else out


class SineChain:
    """sin of a pre-activation, the hidden sine layers, then a linear projection, on up to
    ``pixels`` columns at a time, with reused buffers."""

    def __init__(self, hidden: list[BiasGemm], project: BiasGemm, pixels: int):
        self.hidden, self.project, self.pixels = hidden, project, pixels
        self._buffers = {(i % 2, layer.out_channels): ones_row_buffer(layer.out_channels, pixels)
                         for i, layer in enumerate(hidden)}

    def __call__(self, pre: Tensor, out: Tensor) -> Tensor:
        """pre (C+1, n), ones last, turned into its sine in place; out (projection channels, n)."""
        x = pre
        x[:-1].sin_()
        for i, layer in enumerate(self.hidden):
            buf = self._buffers[(i % 2, layer.out_channels)][:, : x.shape[1]]
            layer(x, buf[:-1])
            x = buf
        return self.project(x, out)

    def run_in_bands(self, pre: Tensor, out: Tensor) -> Tensor:
        """The chain over any number of columns, ``pixels`` at a time."""
        for start in range(0, pre.shape[1], self.pixels):
            end = start + self.pixels
            self(pre[:, start:end], out[:, start:end])
        return out


def upsample2x(x: Tensor, tmp: Tensor, out: Tensor, k0: int = 0, k1: int | None = None) -> Tensor:
    """Rows [2*k0, 2*k1) of the bilinear 2x upsample (align_corners=False, edge-clamped) of
    x (C,S,S) into out (C, 2(k1-k0), 2S); tmp holds (C, 2(k1-k0), S). Each output pixel is 0.75 of
    its nearer and 0.25 of its farther input neighbour: four ``lerp`` passes, ~2.5x faster than
    ``interpolate`` here and the same numbers."""
    c, s, _ = x.shape
    k1 = s if k1 is None else k1
    n = k1 - k0
    rows = tmp.view(c, n, 2, s)  # height pass: whole contiguous rows
    first = max(k0, 1)  # even output rows take 0.25 of the row above; row 0 is clamped
    if k0 == 0:
        rows[:, 0, 0] = x[:, 0]
    torch.lerp(x[:, first:k1], x[:, first - 1: k1 - 1], 0.25, out=rows[:, first - k0:, 0])
    last = min(k1, s - 1)  # odd output rows take 0.25 of the row below; the last is clamped
    torch.lerp(x[:, k0:last], x[:, k0 + 1: last + 1], 0.25, out=rows[:, : last - k0, 1])
    if k1 == s:
        rows[:, -1, 1] = x[:, -1]
    t = tmp.view(c, 2 * n, s)
    cols = out.view(c, 2 * n, s, 2)
    torch.lerp(t[:, :, 1:], t[:, :, :-1], 0.25, out=cols[:, :, 1:, 0])
    cols[:, :, 0, 0] = t[:, :, 0]
    torch.lerp(t[:, :, :-1], t[:, :, 1:], 0.25, out=cols[:, :, :-1, 1])
    cols[:, :, -1, 1] = t[:, :, -1]
    return out
