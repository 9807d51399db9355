"""The distiller's two inputs, checked against upstream's constraints: a 512x512 RGBA
character on a transparent background with its head in the face box, and a 512x512 RGB
face mask whose every channel is 0 or 255."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tha.models.errors import ThaError
from tha.models.image import open_png
from tha.models.poser import FACE_COLS, FACE_ROWS

SIZE = 512
# black and white as 8-bit channels, a 1-bit image or a palette's colours; alpha is ignored
MASK_MODES = ("RGB", "RGBA", "L", "1", "P")


# What each input must be, for the fix in open_png's errors (a mask is no RGBA character).
WANTED = {"character image": "a 512x512 RGBA PNG with a transparent background",
          "face mask": "a 512x512 RGB PNG of 0 and 255 values (white = face)"}


def _open(path: Path, what: str) -> Image.Image:
    image = open_png(path, f"{what} {path}", WANTED[what])
    if image.size != (SIZE, SIZE):
        raise ThaError(f"{what} {path} is {image.width}x{image.height}; it must be exactly "
                       f"{SIZE}x{SIZE} (the face box is fixed in pixels)")
    return image


def load_character(path: Path) -> np.ndarray:
    """(512,512,4) uint8 straight alpha, or one line saying what is wrong."""
    image = _open(path, "character image")
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        raise ThaError(f"character image {path} has no alpha channel (mode {image.mode}); save it as an "
                       "RGBA PNG with a transparent background")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()
    alpha = rgba[..., 3]
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    if (border > 0).mean() > 0.5:
        raise ThaError(f"character image {path} has an opaque background (most border pixels have "
                       "alpha > 0); cut the character out onto a transparent background")
    if (alpha[FACE_ROWS, FACE_COLS] > 0).mean() < 0.25:
        raise ThaError(f"character image {path}: the face box (rows 80-207, columns 192-319) is mostly "
                       "empty; move and scale the character so its head fills that 128x128 box")
    return rgba


def load_face_mask(path: Path) -> np.ndarray:
    """(512,512) bool: True where the face is."""
    image = _open(path, "face mask")
    if image.mode not in MASK_MODES:
        raise ThaError(f"face mask {path} is mode {image.mode}; save it as an RGB PNG of 0 and 255 values")
    if image.mode == "P":  # a palette with transparency converts to RGB only by way of RGBA
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)  # mode "1" comes out as 0 and 255
    bad = ~np.isin(rgb, (0, 255))
    if bad.any():
        y, x, _ = np.argwhere(bad)[0]
        count = int(bad.any(-1).sum())
        raise ThaError(f"face mask {path} has values other than 0 and 255 ({count} pixel{'s' * (count != 1)}, first "
                       f"at x={x}, y={y}, value {tuple(rgb[y, x].tolist())}); paint it with pure black and white only")
    mask = rgb.max(-1) == 255
    if not mask.any():
        raise ThaError(f"face mask {path} is all black; paint the face white")
    outside = mask.copy()
    outside[FACE_ROWS, FACE_COLS] = False
    if outside.any():
        raise ThaError(f"face mask {path} has {outside.sum()} white pixels outside the face box "
                       "(rows 80-207, columns 192-319); the face must lie inside it")
    return mask


def resolve_input(config, value: str, key: str) -> Path:
    if not value:
        raise ThaError(f"{config.source}: {key} is not set")
    return config.path(value)
