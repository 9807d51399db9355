"""Teacher network 1: splits the 128x128 forehead crop into an eyebrow layer and a background layer."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from tha.models.teacher.blocks import EncoderDecoder, EncoderDecoderConfig, alpha_head, blend, color_change_head


class EyebrowLayers(NamedTuple):
    eyebrow_layer: Tensor
    eyebrow_alpha: Tensor
    eyebrow_color_change: Tensor
    background_layer: Tensor
    background_alpha: Tensor
    background_color_change: Tensor


class EyebrowDecomposer(nn.Module):
    """(N,4,128,128) image -> eyebrow and background layers (upstream ``EyebrowDecomposer00``)."""

    def __init__(self, config: EncoderDecoderConfig = EncoderDecoderConfig()):
        super().__init__()
        self.config = config
        self.body = EncoderDecoder(config)
        width, channels = config.start_channels, config.in_channels
        self.background_layer_alpha = alpha_head(width)
        self.background_layer_color_change = color_change_head(width, channels)
        self.eyebrow_layer_alpha = alpha_head(width)
        self.eyebrow_layer_color_change = color_change_head(width, channels)

    def forward(self, image: Tensor) -> EyebrowLayers:
        feature = self.body(image)
        background_alpha = self.background_layer_alpha(feature)
        background_color = self.background_layer_color_change(feature)
        eyebrow_alpha = self.eyebrow_layer_alpha(feature)
        eyebrow_color = self.eyebrow_layer_color_change(feature)
        # The eyebrow alpha keeps the *input* (the eyebrow pixels); the background alpha replaces them.
        return EyebrowLayers(
            eyebrow_layer=blend(eyebrow_alpha, image, eyebrow_color),
            eyebrow_alpha=eyebrow_alpha,
            eyebrow_color_change=eyebrow_color,
            background_layer=blend(background_alpha, background_color, image),
            background_alpha=background_alpha,
            background_color_change=background_color,
        )
