"""The example buffer: teacher examples rendered many at a time on the training device, and
the student batches drawn from them.

The teacher is most of a distillation step at upstream's batch of 8; rendering a large batch at
once keeps the accelerator busy, and `reuse` R trains R times on every rendered example, so
the teacher runs R times less often. R = 1 with a buffer of one batch is upstream's loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def draw_order(size: int, batch: int, reuse: int, generator: torch.Generator) -> Tensor:
    """(steps, batch) buffer indices: each example `reuse` times, shuffled, `size * reuse // batch`
    steps. A buffer of one batch seen once is taken in order (and draws nothing)."""
    if size == batch and reuse == 1:
        return torch.arange(size)[None]
    order = torch.cat([torch.randperm(size, generator=generator) for _ in range(reuse)])
    steps = size * reuse // batch
    return order[:steps * batch].view(steps, batch)


def _pick(x: Tensor | None, index: Tensor, size: int) -> Tensor | None:
    # per-example tensors are indexed; shared ones (the face mask, (1,1,H,W)) pass through
    return x[index] if x is not None and x.shape[0] == size and size > 1 else x


def gather(x: Tensor | None, pixels: Tensor | None) -> Tensor | None:
    """(N,C,H,W) -> (N,C,1,K) at flat pixel indices (N,K); unchanged without indices."""
    if x is None or pixels is None:
        return x
    x = x.expand(pixels.shape[0], -1, -1, -1).flatten(2)
    return torch.gather(x, 2, pixels[:, None].expand(-1, x.shape[1], -1))[:, :, None]


@dataclass
class ExampleBuffer:
    """Module inputs and targets at the stage's resolution, for `len(order)` student steps."""

    inputs: tuple[Tensor, ...]
    targets: dict[str, Tensor | None]
    order: Tensor

    @property
    def size(self) -> int:
        return self.inputs[0].shape[0]

    def batch(self, step: int, pixels: Tensor | None, coords: Tensor | None):
        """Step `step`'s (inputs, targets); with pixel indices, those pixels only."""
        index = self.order[step].to(self.inputs[0].device)
        inputs = tuple(_pick(x, index, self.size) for x in self.inputs)
        if pixels is not None:
            inputs = (*inputs, coords)
        return inputs, {k: gather(_pick(v, index, self.size), pixels) for k, v in self.targets.items()}
