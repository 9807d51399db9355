"""Teacher network 3: the 192x192 face morpher (iris, mouth and eye expressions)."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from tha.models.teacher.blocks import (EncoderDecoder, EncoderDecoderConfig, alpha_head, blend, color_change_head,
                                       grid_change_head, warp)


class FaceMorphOutput(NamedTuple):
    image: Tensor
    eye_alpha: Tensor
    eye_color_change: Tensor
    iris_mouth_image: Tensor
    iris_mouth_alpha: Tensor
    iris_mouth_color_change: Tensor
    iris_mouth_warped: Tensor
    iris_mouth_grid_change: Tensor


FACE_MORPHER_CONFIG = EncoderDecoderConfig(image_size=192, pose_size=27, bottleneck_size=24)


class TeacherFaceMorpher(EncoderDecoder):
    """(N,4,192,192) face crop + pose[:, 12:39] -> morphed face (upstream ``FaceMorpher08``):
    warp then recolour for iris and mouth, then recolour for the eyes.

    Unlike the eyebrow networks, upstream keeps the encoder-decoder layers at the top level
    of this one (no ``body.`` prefix), hence a subclass rather than a member."""

    def __init__(self, config: EncoderDecoderConfig = FACE_MORPHER_CONFIG):
        super().__init__(config)
        width, channels = config.start_channels, config.in_channels
        self.iris_mouth_grid_change = grid_change_head(width)
        self.iris_mouth_color_change = color_change_head(width, channels)
        self.iris_mouth_alpha = alpha_head(width)
        self.eye_color_change = color_change_head(width, channels)
        self.eye_alpha = alpha_head(width)

    def forward(self, image: Tensor, pose: Tensor) -> FaceMorphOutput:
        feature = super().forward(image, pose)
        grid_change = self.iris_mouth_grid_change(feature)
        warped = warp(image, grid_change)
        iris_mouth_color = self.iris_mouth_color_change(feature)
        iris_mouth_alpha = self.iris_mouth_alpha(feature)
        iris_mouth = blend(iris_mouth_alpha, iris_mouth_color, warped)
        eye_color = self.eye_color_change(feature)
        eye_alpha = self.eye_alpha(feature)
        return FaceMorphOutput(blend(eye_alpha, eye_color, iris_mouth), eye_alpha, eye_color,
                               iris_mouth, iris_mouth_alpha, iris_mouth_color, warped, grid_change)
