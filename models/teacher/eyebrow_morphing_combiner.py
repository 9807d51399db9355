"""Teacher network 2: moves the eyebrow layer for the eyebrow pose and lays it over the background."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from tha.models.teacher.blocks import (EncoderDecoder, EncoderDecoderConfig, alpha_head, blend, blend_rgb,
                                       color_change_head, grid_change_head, warp)


class EyebrowMorphOutput(NamedTuple):
    eyebrow_image: Tensor
    combine_alpha: Tensor
    eyebrow_image_no_combine_alpha: Tensor
    morphed_eyebrow_layer: Tensor
    morphed_eyebrow_alpha: Tensor
    morphed_eyebrow_color_change: Tensor
    warped_eyebrow_layer: Tensor
    morphed_eyebrow_grid_change: Tensor


EYEBROW_COMBINER_CONFIG = EncoderDecoderConfig(in_channels=8, pose_size=12)


class EyebrowMorphingCombiner(nn.Module):
    """(background, eyebrow layer, pose[:, 0:12]) -> morphed eyebrow image (upstream
    ``EyebrowMorphingCombiner00``)."""

    def __init__(self, config: EncoderDecoderConfig = EYEBROW_COMBINER_CONFIG):
        super().__init__()
        self.config = config
        width, channels = config.start_channels, config.in_channels // 2
        self.body = EncoderDecoder(config)
        self.morphed_eyebrow_layer_grid_change = grid_change_head(width)
        self.morphed_eyebrow_layer_alpha = alpha_head(width)
        self.morphed_eyebrow_layer_color_change = color_change_head(width, channels)
        self.combine_alpha = alpha_head(width)

    def forward(self, background: Tensor, eyebrow: Tensor, pose: Tensor) -> EyebrowMorphOutput:
        feature = self.body(torch.cat([background, eyebrow], dim=1), pose)
        grid_change = self.morphed_eyebrow_layer_grid_change(feature)
        alpha = self.morphed_eyebrow_layer_alpha(feature)
        color_change = self.morphed_eyebrow_layer_color_change(feature)
        warped = warp(eyebrow, grid_change)
        morphed = blend(alpha, color_change, warped)
        combine_alpha = self.combine_alpha(feature)
        # The morphed layer's own coverage, mapped from [-1,1] to [0,1], as the blend weight.
        own_alpha = (morphed[:, 3:4] + 1) / 2
        return EyebrowMorphOutput(
            eyebrow_image=blend_rgb(combine_alpha, morphed, background),
            combine_alpha=combine_alpha,
            eyebrow_image_no_combine_alpha=blend_rgb(own_alpha, morphed, background),
            morphed_eyebrow_layer=morphed,
            morphed_eyebrow_alpha=alpha,
            morphed_eyebrow_color_change=color_change,
            warped_eyebrow_layer=warped,
            morphed_eyebrow_grid_change=grid_change,
        )
