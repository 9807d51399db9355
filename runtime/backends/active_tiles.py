"""The body morpher's finest level, evaluated only where this frame can differ from the image.

Away from the character the morpher leaves the image as it is: at most pixels of a 512x512
frame the blended output equals the face-pasted input to within 1e-3 (about 55-65% of the
frame on upstream's characters, whatever the pose). The finest level is ~half of a frame's
CPU time, so it is worth not computing there. Which pixels those are depends on the pose (a
turned body sweeps a large area), so every frame first evaluates the level exactly on a probe
grid (one pixel in 16, every 4th row and column), composes those pixels, and keeps the 16x16
tiles within ``DILATE_PX`` of a probe whose output differs from the image by more than
``TOLERANCE``. The level then runs on those tiles only, and everywhere else the fields are
zero: no warp, no blend, the image itself, which is what the network produces there.

The tiles' first layer is computed from a window of the coarser level (one pixel of context,
clamped at the image edge) with the same lerp arithmetic as ``cpu_ops.upsample2x``, so their
numbers are those of the full grid. Tiles are packed a band of tiles' worth at a time and run
through the level in cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tha.export.folded import FirstLayer
from tha.runtime.backends.cpu_ops import BiasGemm, SineChain, ones_row_buffer
from tha.models.student import compose, position_grid

TILE = 16  # fine pixels per tile side
PROBE = 4  # probe spacing in fine pixels (probes sit at 4i+1, 4j+1)
DILATE_PX = 12  # how far from a changing probe a pixel may still change
TOLERANCE = 1e-3  # in the [-1,1] space: below half a uint8 step


@dataclass(frozen=True)
class Segment:
    """A run of active tiles in one band of rows: fine rows [y, y+TILE), columns [x, x+width)."""

    y: int
    x: int
    width: int
    offset: int  # first column of this segment in the packed (C, N) activations

    @property
    def pixels(self) -> int:
        return TILE * self.width


def segments_of(active: Tensor) -> list[Segment]:
    """Runs of consecutive active tiles per band of an (H/TILE, W/TILE) boolean tile map."""
    segments, offset = [], 0
    for band, row in enumerate(active.tolist()):
        start = None
        for t, on in enumerate([*row, False]):
            if on and start is None:
                start = t
            elif not on and start is not None:
                seg = Segment(band * TILE, start * TILE, (t - start) * TILE, offset)
                segments.append(seg)
                offset += seg.pixels
                start = None
    return segments


def coarse_window(coarse: Tensor, r0: int, r1: int, c0: int, c1: int) -> Tensor:
    """coarse[:, r0:r1, c0:c1] with indices past the edge clamped to it (the upsample's edge rule);
    a view except at the image border."""
    side = coarse.shape[-1]
    if r0 >= 0 and c0 >= 0 and r1 <= side and c1 <= side:
        return coarse[:, r0:r1, c0:c1]
    rows = torch.arange(r0, r1).clamp_(0, side - 1)
    cols = torch.arange(c0, c1).clamp_(0, side - 1)
    return coarse.index_select(1, rows).index_select(2, cols)


def upsample_window(window: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """Bilinear 2x of a (C, h+2, w+2) window (one pixel of context on each side) into
    out (C, 2h, 2w); the same taps and lerps as ``cpu_ops.upsample2x``."""
    c, h, w = window.shape[0], window.shape[1] - 2, window.shape[2] - 2
    rows = tmp.view(c, h, 2, w + 2)
    middle = window[:, 1:-1]
    torch.lerp(middle, window[:, :-2], 0.25, out=rows[:, :, 0])
    torch.lerp(middle, window[:, 2:], 0.25, out=rows[:, :, 1])
    t = tmp.view(c, 2 * h, w + 2)
    cols = out.view(c, 2 * h, w, 2)
    centre = t[:, :, 1:-1]
    torch.lerp(centre, t[:, :, :-2], 0.25, out=cols[..., 0])
    torch.lerp(centre, t[:, :, 2:], 0.25, out=cols[..., 1])
    return out


class ActiveTiles:
    """Evaluates a 2x-upsampled finest level (its first layer, hidden layers and the last
    linear layer) on the tiles that can change, given the coarser level's feature term."""

    def __init__(self, first: FirstLayer, hidden: list[BiasGemm], last: BiasGemm, size: int):
        if first.feature_size * 2 != size or size % TILE:
            raise ValueError("ActiveTiles needs a finest level at twice the previous one's size")
        self.first, self.size = first, size
        self.channels = first.bias.shape[0]
        self.chain = SineChain(hidden, last, TILE * size)  # a band of tiles at a time
        self.pre = ones_row_buffer(self.channels, TILE * size)
        self.out = torch.empty(last.out_channels, TILE * size)
        self.fields_buffer = torch.empty(last.out_channels, size, size)
        probes = (size // PROBE) ** 2
        self.probe_pre = ones_row_buffer(self.channels, probes)
        self.probe_out = torch.empty(last.out_channels, probes)
        self.probe_coords = position_grid(size)[:, :, 1::PROBE, 1::PROBE].contiguous()  # (1,2,S/4,S/4)
        self.rows_tmp = torch.empty(self.channels * TILE * (size // 2 + 2))
        self.active_fraction = 1.0  # of the last frame, for benchmarks and tests

    def fields(self, image: Tensor, pose: Tensor, coarse: Tensor) -> Tensor:
        """(1,7,S,S) fields; zero (the image unchanged) outside the active tiles. ``coarse``:
        the feature term (C, S/2, S/2), already through the level's feature weights."""
        row = self.first.row_and_pose(pose)

        active = self._active_tiles(image, coarse, row)
        self.active_fraction = float(active.float().mean())
        fields = self.fields_buffer
        fields.zero_()
        batch: list[Segment] = []
        for seg in segments_of(active):
            if batch and seg.offset + seg.pixels - batch[0].offset > self.chain.pixels:
                self._run(batch, coarse, row, fields)
                batch = []
            batch.append(seg)
        if batch:
            self._run(batch, coarse, row, fields)
        return fields[None]

    def _run(self, segments: list[Segment], coarse: Tensor, row: Tensor, fields: Tensor) -> None:
        """The level on consecutive segments packed side by side, written into ``fields``."""
        c, base = self.channels, segments[0].offset
        n = segments[-1].offset + segments[-1].pixels - base
        pre = self.pre[:, :n]
        for seg in segments:
            y, x, w = seg.y, seg.x, seg.width
            window = coarse_window(coarse, y // 2 - 1, y // 2 + TILE // 2 + 1, x // 2 - 1, x // 2 + w // 2 + 1)
            block = pre[:c, seg.offset - base: seg.offset - base + seg.pixels].view(c, TILE, w)
            tmp = self.rows_tmp[: c * TILE * (w // 2 + 2)].view(c, TILE, w // 2 + 2)
            upsample_window(window, block, tmp)
            block.add_(self.first.column[:, :, x: x + w])
            block.add_(row[:, y: y + TILE])
        out = self.chain(pre, self.out[:, :n])
        for seg in segments:
            start = seg.offset - base
            fields[:, seg.y: seg.y + TILE, seg.x: seg.x + seg.width] = \
                out[:, start: start + seg.pixels].view(-1, TILE, seg.width)

    def _active_tiles(self, image: Tensor, coarse: Tensor, row: Tensor) -> Tensor:
        """(S/TILE, S/TILE) tiles near a probe whose composed output differs from the image."""
        c, n = self.channels, self.size // PROBE
        # Fine (4i+1, 4j+1) is 0.75 of coarse (2i, 2j) and 0.25 of the next row/column.
        rows = torch.lerp(coarse[:, 0::2], coarse[:, 1::2], 0.25)
        block = self.probe_pre[:c].view(c, n, n)
        torch.lerp(rows[:, :, 0::2], rows[:, :, 1::2], 0.25, out=block)
        block.add_(self.first.column[:, :, 1::PROBE])
        block.add_(row[:, 1::PROBE])
        probe_fields = self.chain.run_in_bands(self.probe_pre, self.probe_out).view(1, -1, n, n)
        shown = compose(image, probe_fields, self.probe_coords).blended_image
        changed = (shown - image[:, :, 1::PROBE, 1::PROBE]).abs().amax(dim=1, keepdim=True) > TOLERANCE
        reach = -(-DILATE_PX // PROBE)
        near = F.max_pool2d(changed.float(), 2 * reach + 1, stride=1, padding=reach)
        return F.max_pool2d(near, TILE // PROBE)[0, 0] > 0
