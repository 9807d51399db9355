"""Network output -> display pixels, on whatever device the tensor lives (no host copy)."""
from __future__ import annotations

import torch

from tha.models.image import linear_to_srgb


def tensor_to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(4,H,W) [-1,1] premultiplied linear -> (H,W,4) uint8 straight-alpha sRGB, same device.

    Same rule as ``tha.models.image.tensor_to_rgba`` but in the tensor's own dtype/device,
    for the per-frame path."""
    x = ((image + 1.0) * 0.5).clamp(0.0, 1.0)
    alpha = x[3:4]
    rgb = torch.where(alpha > 0, x[:3] / alpha.clamp_min(1e-12), torch.zeros_like(x[:3]))
    out = torch.cat([linear_to_srgb(rgb), alpha], dim=0)
    return (out * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous()
