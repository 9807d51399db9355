"""The THA4 student: a SIREN face morpher and a three-level SIREN body morpher.

Module and parameter names follow upstream's ``SirenFaceMorpher00`` and ``SirenMorpher03``
so their ``face_morpher.pt`` / ``body_morpher.pt`` load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FaceMorpherConfig:
    image_size: int = 128
    pose_size: int = 39
    channels: int = 128
    num_sine_layers: int = 8
    out_channels: int = 4
    omega_0: float = 30.0


@dataclass(frozen=True)
class BodyMorpherConfig:
    image_size: int = 512
    pose_size: int = 45
    level_sizes: tuple[int, ...] = (128, 256, 512)
    level_channels: tuple[int, ...] = (360, 180, 90)
    sine_layers_per_level: int = 3
    image_channels: int = 4
    omega_0: float = 30.0


def position_grid(size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """(1,2,size,size) pixel-centre coordinates in [-1,1]: channel 0 is x, channel 1 is y,
    exactly ``affine_grid(identity, align_corners=False)``."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(identity, [1, 1, size, size], align_corners=False).permute(0, 3, 1, 2)


class SineLayer(nn.Module):
    """sin(omega_0 * (W x + b)) as a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, omega_0: float = 30.0):
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


def siren_init_(layers: list[SineLayer], omega_0: float, *, first_takes_coordinates: bool) -> None:
    """SIREN initialisation (Sitzmann et al.): every layer U(-sqrt(6/n)/omega_0, +sqrt(6/n)/omega_0)
    but the first, fed x, y then the pose. Its pose columns get U(-1/n, 1/n); its x, y columns
    get U(-1/2, 1/2), the bound of a SIREN over the two coordinates alone. With 1/n there, the
    first layer starts nearly flat in x, y (n is ~45) and a student needs thousands of extra
    steps before it can draw line art."""
    with torch.no_grad():
        for i, layer in enumerate(layers):
            n = layer.linear.in_channels
            if i == 0 and first_takes_coordinates:
                layer.linear.weight.uniform_(-1.0 / n, 1.0 / n)
                layer.linear.weight[:, :2].uniform_(-0.5, 0.5)
            else:
                bound = (6.0 / n) ** 0.5 / omega_0
                layer.linear.weight.uniform_(-bound, bound)


class _Siren(nn.Module):
    def __init__(self, config: FaceMorpherConfig):
        super().__init__()
        c = config
        widths = [c.pose_size + 2] + [c.channels] * c.num_sine_layers
        self.sine_layers = nn.ModuleList(SineLayer(i, o, c.omega_0) for i, o in zip(widths, widths[1:]))
        self.last_linear = nn.Conv2d(c.channels, c.out_channels, kernel_size=1)
        siren_init_(list(self.sine_layers), c.omega_0, first_takes_coordinates=True)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.sine_layers:
            x = layer(x)
        return self.last_linear(x)


class FaceMorpher(nn.Module):
    """pose[:, 0:39] -> the 128x128 face patch (N,4,128,128)."""

    def __init__(self, config: FaceMorpherConfig = FaceMorpherConfig()):
        super().__init__()
        self.config = config
        self.siren = _Siren(config)

    def forward(self, pose: Tensor, coords: Tensor | None = None) -> Tensor:
        """``coords`` (N,2,H,W), optional: x,y positions to evaluate instead of the pixel grid
        (the distiller trains on random pixel subsets; the MLP is per position)."""
        if coords is None:
            size = self.config.image_size
            coords = position_grid(size, pose.dtype, pose.device).expand(pose.shape[0], -1, -1, -1)
        return self.siren(_siren_input(coords, pose))


def _siren_input(grid: Tensor, pose: Tensor, features: Tensor | None = None) -> Tensor:
    """A level's first-layer input: [features (a deeper level's, upsampled), x, y, pose] per
    position of ``grid`` (N,2,H,W)."""
    planes = pose[:, :, None, None].expand(-1, -1, *grid.shape[-2:])
    return torch.cat([grid, planes] if features is None else [features, grid, planes], dim=1)


def _upsample(features: Tensor, coords: Tensor) -> Tensor:
    """Bilinear upsampling (align_corners=False) of ``features`` read at ``coords`` only:
    grid_sample with border padding clamps at the edges exactly as interpolate does."""
    return F.grid_sample(features, coords.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=False)


class BodyOutput(NamedTuple):
    blended_image: Tensor
    alpha: Tensor
    color_change: Tensor
    warped_image: Tensor
    grid_change: Tensor


def warp(image: Tensor, grid_change: Tensor, coords: Tensor | None = None) -> Tensor:
    """Resample ``image`` at identity + grid_change (bilinear, border, align_corners=False);
    with ``coords`` (N,2,H,W), at coords + grid_change instead of the identity grid."""
    if coords is None:
        n, _, h, w = image.shape
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=image.dtype, device=image.device)
        base = F.affine_grid(identity.expand(n, 2, 3), [n, 1, h, w], align_corners=False)
    else:
        base = coords.permute(0, 2, 3, 1)
    grid = base + grid_change.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BodyMorpher(nn.Module):
    """(image, pose) -> blended, alpha, color_change, warped, grid_change at 512x512."""

    def __init__(self, config: BodyMorpherConfig = BodyMorpherConfig()):
        super().__init__()
        self.config = config
        c = config
        extra = c.pose_size + 2
        self.siren_layers = nn.ModuleList()
        for level, width in enumerate(c.level_channels):
            out_width = c.level_channels[level + 1] if level + 1 < len(c.level_channels) else width
            widths = [extra + (0 if level == 0 else width)] + [width] * (c.sine_layers_per_level - 1) + [out_width]
            layers = [SineLayer(i, o, c.omega_0) for i, o in zip(widths, widths[1:])]
            siren_init_(layers, c.omega_0, first_takes_coordinates=level == 0)
            self.siren_layers.append(nn.Sequential(*layers))
        self.last_linear = nn.Conv2d(c.level_channels[-1], c.image_channels + 3, kernel_size=1)

    def pose_columns(self, level: int) -> slice:
        """Where the pose sits in ``level``'s first-layer inputs: after the previous level's
        features (every level but the first) and x, y."""
        start = (self.config.level_channels[level] if level else 0) + 2
        return slice(start, start + self.config.pose_size)

    def features(self, pose: Tensor, coords: Tensor | None = None) -> Tensor:
        """``coords`` (N,2,H,W), optional: evaluate the last level only at these x,y positions
        (earlier levels stay whole grids and are sampled there as the upsampling would)."""
        x = None
        last = len(self.siren_layers) - 1
        for i, (size, level) in enumerate(zip(self.config.level_sizes, self.siren_layers)):
            if i == last and coords is not None:
                grid = coords
            else:
                grid = position_grid(size, pose.dtype, pose.device).expand(pose.shape[0], -1, -1, -1)
            if x is not None:
                x = (_upsample(x, grid) if grid is coords else
                     F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
            x = level(_siren_input(grid, pose, x))
        return self.last_linear(x)

    def patch_features(self, pose: Tensor, coords: Tensor, patch_size: int) -> Tensor:
        """`features` at ``coords`` (N,2,1,J*P*P) that hold J square P x P patches of the last
        level's grid, each row-major, one after another. Each level runs only on the window of
        its grid that the next level's bilinear taps read (P/2 + 2 pixels a side on the level
        below, and so on), not on the whole grid: the same fields for a fraction of the work,
        since with random pixels the whole-grid coarse levels are most of a training step."""
        n, p, k = pose.shape[0], patch_size, coords.shape[-1]
        j = k // (p * p)
        fine = coords.reshape(n, 2, j, p, p).transpose(1, 2).reshape(n * j, 2, p, p)
        pose = pose.repeat_interleave(j, dim=0)
        sizes = self.config.level_sizes
        windows = [(_pixel_index(fine[:, :, 0, 0], sizes[-1]), p)]  # (M,2) x,y start, width
        for size in reversed(sizes[:-1]):
            start, width = windows[0]
            # levels double in size: fine pixels a..a+w-1 read coarse taps a//2-1 .. (a+w)//2;
            # clamped inside the grid, the window still holds the edge pixel border padding repeats
            coarse_width = min(-(-width // 2) + 2, size)
            windows.insert(0, ((start // 2 - 1).clamp(0, size - coarse_width), coarse_width))
        x, last = None, len(sizes) - 1
        for level, (size, layers) in enumerate(zip(sizes, self.siren_layers)):
            grid = fine if level == last else _window_grid(*windows[level], size, pose.dtype)
            if x is not None:
                x = _upsample(x, _into_window(grid, *windows[level - 1], sizes[level - 1]))
            x = layers(_siren_input(grid, pose, x))
        fields = self.last_linear(x)
        return fields.reshape(n, j, -1, p * p).transpose(1, 2).reshape(n, -1, 1, k)

    def forward(self, image: Tensor, pose: Tensor, coords: Tensor | None = None,
                patch_size: int = 0) -> BodyOutput:
        """With ``coords``, every output holds those positions only (the image is sampled there);
        with ``patch_size`` too, they are patches (see `patch_features`)."""
        fields = self.patch_features(pose, coords, patch_size) if patch_size else self.features(pose, coords)
        return compose(image, fields, coords)


def _pixel_index(position: Tensor, size: int) -> Tensor:
    """The integer pixel of a grid ``size`` wide whose centre is at ``position`` in [-1,1]."""
    return torch.round(((position + 1) * size - 1) / 2).long()


def _window_grid(start: Tensor, width: int, size: int, dtype: torch.dtype) -> Tensor:
    """(M,2,width,width) pixel-centre positions, in the whole grid's [-1,1], of the windows of a
    ``size`` grid whose top-left pixels are ``start`` (M,2: x, y)."""
    steps = torch.arange(width, device=start.device)
    centres = ((start[:, :, None] + steps + 0.5) * (2.0 / size) - 1).to(dtype)  # (M,2,width)
    x = centres[:, 0, None, :].expand(-1, width, -1)
    y = centres[:, 1, :, None].expand(-1, -1, width)
    return torch.stack([x, y], dim=1)


def _into_window(position: Tensor, start: Tensor, width: int, size: int) -> Tensor:
    """Positions in a ``size`` grid's [-1,1] (M,2,H,W), as the [-1,1] of each one's window
    (top-left ``start``, ``width`` pixels), so that grid_sample reads the window as it would
    the whole grid."""
    return ((position + 1) * size - 2 * start[:, :, None, None]) / width - 1


def compose(image: Tensor, fields: Tensor, coords: Tensor | None = None) -> BodyOutput:
    """The body morpher's 7 output fields applied to ``image``: warp it by the grid change (2),
    then blend it with the colour change (4) by alpha (1). Every student form composes here."""
    grid_change, alpha, color_change = fields[:, 0:2], fields[:, 2:3], fields[:, 3:]
    warped = warp(image, grid_change, coords)
    blended = (1 - alpha) * warped + alpha * color_change
    return BodyOutput(blended, alpha, color_change, warped, grid_change)
