"""Teacher network 5: the 512x512 upscaler that refines the body morpher's coarse result."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tha.models.teacher.blocks import warp
from tha.models.teacher.body_morpher import MorphOutput, split_morph
from tha.models.teacher.unet import Unet, UnetConfig

UPSCALER_UNET_CONFIG = UnetConfig(model_channels=32, level_channel_multipliers=(1, 2, 4, 8, 8, 8),
                                  level_use_attention=(False, False, False, False, False, True))


class TeacherUpscaler(nn.Module):
    """(face-morphed 512 image, upsampled coarse posed image, upsampled coarse grid change,
    pose[:, 39:45]) -> final posed image (upstream ``Upscaler02``)."""

    def __init__(self, config: UnetConfig = UPSCALER_UNET_CONFIG):
        super().__init__()
        self.body = Unet(config)
        image_channels = config.in_channels
        self.coarse_image_conv = nn.Conv2d(2 * image_channels + 2, config.model_channels, kernel_size=3, padding=1)

    def forward(self, rest_image: Tensor, coarse_image: Tensor, coarse_grid_change: Tensor,
                pose: Tensor) -> MorphOutput:
        coarse_warped = warp(rest_image, coarse_grid_change)
        hint = self.coarse_image_conv(torch.cat([coarse_image, coarse_warped, coarse_grid_change], dim=1))
        return split_morph(self.body(rest_image, pose, hint), rest_image)
