"""Teacher network 4: the 256x256 body morpher (head/neck/body rotation and breathing)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from tha.models.teacher.blocks import blend, warp
from tha.models.teacher.unet import Unet, UnetConfig


class MorphOutput(NamedTuple):
    merged: Tensor
    alpha: Tensor
    warped: Tensor
    grid_change: Tensor
    direct: Tensor


def split_morph(raw: Tensor, image: Tensor) -> MorphOutput:
    """U-Net output (direct colour 4, grid change 2, alpha logit 1) -> warp, then blend."""
    direct, grid_change, alpha = raw[:, 0:4], raw[:, 4:6], torch.sigmoid(raw[:, 6:7])
    warped = warp(image, grid_change)
    return MorphOutput(blend(alpha, direct, warped), alpha, warped, grid_change, direct)


BODY_UNET_CONFIG = UnetConfig(model_channels=64, level_channel_multipliers=(1, 2, 4, 4, 4),
                              level_use_attention=(False, False, False, False, True))


class TeacherBodyMorpher(nn.Module):
    """(N,4,256,256) image + pose[:, 39:45] -> posed image (upstream ``Morpher00``)."""

    def __init__(self, config: UnetConfig = BODY_UNET_CONFIG):
        super().__init__()
        self.body = Unet(config)

    def forward(self, image: Tensor, pose: Tensor) -> MorphOutput:
        return split_morph(self.body(image, pose), image)
