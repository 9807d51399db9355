"""Network output -> display pixels, on whatever device the tensor lives (no host copy)."""
from __future__ import annotations

import torch

from tha.models.image import rgba8


def tensor_to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(4,H,W) [-1,1] premultiplied linear -> (H,W,4) uint8 straight-alpha sRGB, same device.

    The rule of ``tha.models.image.rgba8`` (RGB 0 wherever the written alpha is 0), in the
    tensor's own dtype/device, for the per-frame path."""
    return rgba8(image)
