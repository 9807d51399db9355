"""Convolutional building blocks of the teacher's encoder-decoder networks.

The eyebrow decomposer, eyebrow morphing combiner and face morpher share one shape: a
conv3 stem, stride-2 downsampling to a bottleneck where the pose joins as constant planes,
residual blocks, transposed-conv upsampling back to full size, then small conv3 heads.
Every conv is followed by InstanceNorm (affine) and ReLU. Sequential indices match
upstream's so its state dicts load as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv3_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(),
    )


def downsample_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(),
    )


def upsample_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(),
    )


class ResnetBlock(nn.Module):
    """x + (conv3, norm, relu, conv3, norm)(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.resnet_path = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.resnet_path(x)


def alpha_head(in_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 1, kernel_size=3, padding=1), nn.Sigmoid())


def color_change_head(in_channels: int, image_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, image_channels, kernel_size=3, padding=1), nn.Tanh())


def grid_change_head(in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, 2, kernel_size=3, padding=1, bias=False)


@dataclass(frozen=True)
class EncoderDecoderConfig:
    image_size: int = 128
    in_channels: int = 4
    pose_size: int = 0
    start_channels: int = 64
    bottleneck_size: int = 16
    num_bottleneck_blocks: int = 6
    max_channels: int = 512

    def channels_at(self, size: int) -> int:
        """Channels double each time the resolution halves, up to max_channels."""
        return min(self.start_channels * (self.image_size // size), self.max_channels)


class EncoderDecoder(nn.Module):
    """(N,C,S,S) image [+ (N,P) pose] -> (N,start_channels,S,S) feature."""

    def __init__(self, config: EncoderDecoderConfig):
        super().__init__()
        c = config
        self.config = config
        self.downsample_blocks = nn.ModuleList([conv3_block(c.in_channels, c.start_channels)])
        size = c.image_size
        while size > c.bottleneck_size:
            self.downsample_blocks.append(downsample_block(c.channels_at(size), c.channels_at(size // 2)))
            size //= 2
        width = c.channels_at(size)
        self.bottleneck_blocks = nn.ModuleList([conv3_block(width + c.pose_size, width)])
        self.bottleneck_blocks.extend(ResnetBlock(width) for _ in range(c.num_bottleneck_blocks - 1))
        self.upsample_blocks = nn.ModuleList()
        while size < c.image_size:
            self.upsample_blocks.append(upsample_block(c.channels_at(size), c.channels_at(size * 2)))
            size *= 2

    def forward(self, image: Tensor, pose: Tensor | None = None) -> Tensor:
        x = image
        for block in self.downsample_blocks:
            x = block(x)
        if pose is not None:
            x = torch.cat([x, pose[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        for block in self.bottleneck_blocks:
            x = block(x)
        for block in self.upsample_blocks:
            x = block(x)
        return x


def blend(alpha: Tensor, over: Tensor, under: Tensor) -> Tensor:
    """``over`` where alpha is 1, ``under`` where it is 0 (upstream's "colour change")."""
    return over * alpha + under * (1 - alpha)


def blend_rgb(alpha: Tensor, over: Tensor, under: Tensor) -> Tensor:
    """Blend the RGB channels only; the alpha channel stays ``under``'s."""
    return torch.cat([blend(alpha, over[:, :3], under[:, :3]), under[:, 3:4]], dim=1)


def identity_grid(height: int, width: int, like: Tensor) -> Tensor:
    """(1,H,W,2) sampling grid of pixel centres in [-1,1] (``affine_grid(identity,
    align_corners=False)``), from ``arange`` so it also exports to ONNX opsets without
    AffineGrid. Built in ``like``'s dtype (float64 stays float64); half types count in
    float32 first, since bfloat16 cannot count past 256."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    xs = (torch.arange(width, dtype=dtype, device=like.device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=dtype, device=like.device) * 2 + 1) / height - 1
    grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
    return grid[None].to(like.dtype)


def warp(image: Tensor, grid_change: Tensor) -> Tensor:
    """Resample ``image`` at identity + grid_change (bilinear, border, align_corners=False)."""
    _, _, height, width = image.shape
    grid = identity_grid(height, width, image) + grid_change.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
