"""The pose-conditioned U-Net with attention under the teacher's body morpher and upscaler.

A diffusion-style U-Net (GroupNorm + SiLU residual blocks, scale/shift conditioning,
multi-head self-attention at the coarsest level) that upstream runs at time step 0 with
the six rotation/breathing pose values as its condition. Attribute names and Sequential
indices match upstream's ``Unet`` so its state dicts load as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UnetConfig:
    in_channels: int = 4
    out_channels: int = 7
    model_channels: int = 64
    level_channel_multipliers: tuple[int, ...] = (1, 2, 4, 4, 4)
    level_use_attention: tuple[bool, ...] = (False, False, False, False, True)
    num_res_blocks_per_level: int = 1
    num_middle_res_blocks: int = 4
    cond_input_channels: int = 6
    cond_internal_channels: int = 256
    num_heads: int = 8

    @property
    def time_embedding_channels(self) -> int:
        return self.model_channels


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


def timestep_embedding(t: Tensor, channels: int) -> Tensor:
    """Sinusoidal embedding of (N,1) time steps, built in ``t``'s dtype."""
    half = channels // 2
    frequencies = torch.exp(torch.arange(half, dtype=t.dtype, device=t.device) * (-math.log(10000.0) / (half - 1)))
    angles = t * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """Residual block conditioned twice (time embedding, then pose embedding) by scale/shift,
    optionally resampling by 2 (nearest up, average-pool down)."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.cond0_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, 2 * out_channels))
        self.norm1 = group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.cond1_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, 2 * out_channels))
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, kernel_size=1))

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: Tensor, cond0: Tensor, cond1: Tensor) -> Tensor:
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        h = self.norm1(h)
        for layers, cond in ((self.cond0_layers, cond0), (self.cond1_layers, cond1)):
            scale, shift = layers(cond)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv1(F.silu(h))
        return self.skip(self._resample(x)) + h


class AttentionBlock(nn.Module):
    """x + multi-head self-attention over all pixels (q, k, v split channel-first)."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        head = c // self.num_heads
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3 * c, height * width).chunk(3, dim=1)
        q, k, v = (t.reshape(n * self.num_heads, head, height * width) for t in (q, k, v))
        scale = head ** -0.25  # applied to q and k each, as upstream does, for the same rounding
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(n, c, height, width)
        return x + self.conv(h)


class Unconditioned(nn.Module):
    """Lets an attention block sit in a list of conditioned blocks (upstream's ``.module`` wrapper)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, cond0: Tensor, cond1: Tensor) -> Tensor:
        return self.module(x)


class DownLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: UnetConfig, attention: bool, downsample: bool):
        super().__init__()
        cond = config.cond_internal_channels
        count = config.num_res_blocks_per_level
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if j == 0 else out_channels, out_channels, cond) for j in range(count))
        self.attention_blocks = nn.ModuleList(
            AttentionBlock(out_channels, config.num_heads) for _ in range(count if attention else 0))
        self.downsample = ResBlock(out_channels, out_channels, cond, "down") if downsample else None

    def forward(self, h: Tensor, cond0: Tensor, cond1: Tensor) -> list[Tensor]:
        """Every intermediate feature, for the skip connections."""
        outputs = []
        for j, block in enumerate(self.res_blocks):
            h = block(h, cond0, cond1)
            if self.attention_blocks:
                h = self.attention_blocks[j](h)
            outputs.append(h)
        if self.downsample is not None:
            outputs.append(self.downsample(h, cond0, cond1))
        return outputs


class UpLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, skip_channels: list[int], config: UnetConfig,
                 attention: bool, upsample: bool):
        super().__init__()
        cond = config.cond_internal_channels
        self.resnet_blocks = nn.ModuleList(
            ResBlock((in_channels if i == 0 else out_channels) + skip, out_channels, cond)
            for i, skip in enumerate(skip_channels))
        self.attention_blocks = nn.ModuleList(
            AttentionBlock(out_channels, config.num_heads) for _ in (skip_channels if attention else []))
        self.upsample = ResBlock(out_channels, out_channels, cond, "up") if upsample else None

    def forward(self, h: Tensor, skips: list[Tensor], cond0: Tensor, cond1: Tensor) -> Tensor:
        for i, block in enumerate(self.resnet_blocks):
            h = block(torch.cat([h, skips[i]], dim=1), cond0, cond1)
            if self.attention_blocks:
                h = self.attention_blocks[i](h)
        if self.upsample is not None:
            h = self.upsample(h, cond0, cond1)
        return h


class Unet(nn.Module):
    """(N,in,S,S) image + (N,cond) condition [+ a feature added after the first conv] -> (N,out,S,S)."""

    def __init__(self, config: UnetConfig):
        super().__init__()
        c = config
        self.config = config
        internal = c.cond_internal_channels
        self.time_embed = nn.Sequential(
            nn.Identity(),  # index 0 is the (parameter-free) sinusoidal embedding upstream
            nn.Linear(c.time_embedding_channels, internal), nn.SiLU(), nn.Linear(internal, internal))
        self.cond_embed = nn.Sequential(
            nn.Linear(c.cond_input_channels, internal), nn.SiLU(), nn.Linear(internal, internal))
        self.first_conv = nn.Conv2d(c.in_channels, c.model_channels, kernel_size=3, padding=1)

        widths = [c.model_channels * m for m in c.level_channel_multipliers]
        levels = len(widths)
        skip_widths = [c.model_channels]
        current = c.model_channels
        self.down_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            downsample = i < levels - 1
            self.down_blocks.append(DownLevel(current, width, c, c.level_use_attention[i], downsample))
            skip_widths += [width] * (c.num_res_blocks_per_level + int(downsample))
            current = width

        self.middle_blocks = nn.ModuleList()
        for _ in range(c.num_middle_res_blocks - 1):
            self.middle_blocks.append(ResBlock(current, current, internal))
            self.middle_blocks.append(Unconditioned(AttentionBlock(current, c.num_heads)))
        self.middle_blocks.append(ResBlock(current, current, internal))

        self.up_blocks = nn.ModuleList()
        for i in reversed(range(levels)):
            skips = [skip_widths.pop() for _ in range(c.num_res_blocks_per_level + 1)]
            self.up_blocks.append(UpLevel(current, widths[i], skips, c, c.level_use_attention[i], i > 0))
            current = widths[i]

        self.last = nn.Sequential(group_norm(current), nn.SiLU(),
                                  nn.Conv2d(current, c.out_channels, kernel_size=3, padding=1))

    def forward(self, x: Tensor, cond: Tensor, first_conv_addition: Tensor | None = None) -> Tensor:
        # Upstream always runs this network at time step 0.
        t = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        t_emb = self.time_embed(timestep_embedding(t, self.config.time_embedding_channels))
        cond_emb = self.cond_embed(cond)
        h = self.first_conv(x)
        if first_conv_addition is not None:
            h = h + first_conv_addition
        features = [h]
        for level in self.down_blocks:
            features += level(features[-1], t_emb, cond_emb)
        h = features[-1]
        for block in self.middle_blocks:
            h = block(h, t_emb, cond_emb)
        for level in self.up_blocks:
            skips = [features.pop() for _ in range(self.config.num_res_blocks_per_level + 1)]
            h = level(h, skips, t_emb, cond_emb)
        return self.last(h)
