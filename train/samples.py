"""Sample grids people look at while a run trains: one row per held-out pose,
teacher | student | difference (x4, white = 0), written as PNGs; and PSNR between them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tha.models.image import save_png, tensor_to_rgba


def psnr(student: Tensor, teacher: Tensor) -> float:
    """PSNR in dB over the [-1,1] tensors (peak-to-peak 2), all channels and images."""
    mse = torch.mean((student.double() - teacher.double()) ** 2).item()
    return float("inf") if mse == 0 else float(10.0 * np.log10(4.0 / mse))


def _difference(student: Tensor, teacher: Tensor) -> np.ndarray:
    diff = ((student - teacher).abs().mean(0) * 4.0 / 2.0).clamp(0, 1)
    grey = (255 * (1 - diff)).round().to(torch.uint8).cpu().numpy()
    return np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)


def sample_grid(teacher: Tensor, student: Tensor) -> np.ndarray:
    rows = [np.concatenate([tensor_to_rgba(t), tensor_to_rgba(s), _difference(s.float(), t.float())], axis=1)
            for t, s in zip(teacher, student)]
    return np.concatenate(rows, axis=0)


def write_samples(path: Path, teacher: Tensor, student: Tensor) -> None:
    save_png(path, sample_grid(teacher.detach().cpu(), student.detach().cpu()))
