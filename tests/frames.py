"""Comparing RGBA8 frames (H,W,4 uint8, straight alpha) the way the backend tests bound them."""
from __future__ import annotations

import numpy as np


def within_one_level(got: np.ndarray, want: np.ndarray) -> float:
    """Share of alpha>0 pixels whose four channels are all within +-1 level (the CPU bound)."""
    close = (np.abs(got.astype(np.int16) - want.astype(np.int16)) <= 1).all(axis=-1)
    return float(close[want[..., 3] > 0].mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def premultiplied(rgba: np.ndarray) -> np.ndarray:
    """What any compositor shows of a straight-alpha frame: colour times alpha, and alpha."""
    rgba = rgba.astype(np.float64)
    return np.concatenate([rgba[..., :3] * rgba[..., 3:] / 255.0, rgba[..., 3:]], axis=-1)


def shown_psnr(got: np.ndarray, want: np.ndarray) -> float:
    """PSNR of two frames as shown (premultiplied): what the fp16 bounds are on."""
    return psnr(premultiplied(got), premultiplied(want))
