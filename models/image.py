"""Images as the networks see them (SPEC "Images as tensors") and back.

PNG (straight alpha, sRGB, uint8) -> float tensor (4,H,W): linear RGB, premultiplied by
alpha, every channel mapped to [-1,1]. Output goes the other way and un-premultiplies, so a
PNG survives the round trip.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tha.models.errors import ThaError
from tha.models.files import atomic_path
from tha.models.limits import IMAGE_LIMIT, check_image_size

IMAGE_SIZE = 512


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055)


def open_png(source: str | Path | bytes, label: str, wanted: str = "a 512x512 RGBA PNG") -> Image.Image:
    """Open and decode a PNG, checking its declared size against the pixel limit first (the
    header is read before any pixel is decoded: a small PNG can declare gigabytes of pixels).
    ``wanted`` is what the fix asks for (a face mask is no RGBA character)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        try:
            check_image_size(*image.size, label, wanted)
            if image.format != "PNG":
                raise ThaError(f"{label} is a {image.format} file, not a PNG; save it as {wanted}")
            image.load()
        except BaseException:
            image.close()  # PIL closes the file itself only after a whole load
            raise
    except FileNotFoundError:
        raise ThaError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise ThaError(f"{label} is a directory; give a PNG file") from None
    except UnidentifiedImageError:
        raise ThaError(f"{label} is not an image; give {wanted}") from None
    except Image.DecompressionBombError as err:  # PIL refuses twice its own limit before giving the size
        raise ThaError(f"{label} is {IMAGE_LIMIT} ({err}); give {wanted}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ThaError(f"{label} cannot be read ({err}); re-export it as {wanted}") from None
    return image


def to_rgba_array(image: Image.Image, label: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """Validate a PIL image and return it as (size,size,4) uint8, resizing non-square or
    other-sized images (centre crop, Lanczos) with a warning."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        raise ThaError(f"{label} has no alpha channel (mode {image.mode}); the character needs a "
                       "transparent background: save it as an RGBA PNG")
    image = image.convert("RGBA")
    if image.getextrema()[3][1] == 0:
        raise ThaError(f"{label} is fully transparent (alpha 0 everywhere): there is no character to "
                       "pose; save the PNG with its alpha channel intact")
    if image.size != (size, size):
        w, h = image.size
        d = min(w, h)
        box = ((w - d) // 2, (h - d) // 2, (w + d) // 2, (h + d) // 2)
        warnings.warn(f"{label} is {w}x{h}; centre-cropped and resized to {size}x{size}", stacklevel=3)
        image = image.resize((size, size), resample=Image.LANCZOS, box=box)
    return np.asarray(image, dtype=np.uint8).copy()


def load_rgba(source: str | Path | bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read a PNG (path or bytes) as validated (size,size,4) straight-alpha uint8."""
    label = "uploaded image" if isinstance(source, bytes) else str(source)
    return to_rgba_array(open_png(source, label), label, size)


def rgba_to_tensor(rgba: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H,W,4) uint8 straight alpha -> (4,H,W) premultiplied linear in [-1,1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgba)).to(torch.float64).permute(2, 0, 1) / 255.0
    rgb = srgb_to_linear(x[:3]) * x[3:4]
    return (torch.cat([rgb, x[3:4]], dim=0) * 2.0 - 1.0).to(dtype)


def load_image_tensor(source: str | Path | bytes, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return rgba_to_tensor(load_rgba(source), dtype)


def rgba8(image: torch.Tensor) -> torch.Tensor:
    """(4,H,W) [-1,1] premultiplied linear -> (H,W,4) uint8 straight-alpha sRGB, in the
    tensor's own dtype and device (also traced into the fused ONNX graph).

    Colour is un-premultiplied only where the *written* alpha is non-zero: a pixel whose alpha
    rounds to 0 is (0,0,0,0). Dividing by an alpha below half a step would blow noise up to
    full colour, and which side of the rounding such a pixel lands on differs between CPUs."""
    x = ((image + 1.0) * 0.5).clamp(0.0, 1.0)
    alpha = x[3:4]
    alpha8 = (alpha * 255.0).round()
    rgb = torch.where(alpha8 > 0, x[:3] / alpha.clamp_min(1e-12), torch.zeros_like(x[:3]))
    rgb8 = (linear_to_srgb(rgb) * 255.0).round()
    return torch.cat([rgb8, alpha8], dim=0).to(torch.uint8).permute(1, 2, 0).contiguous()


def tensor_to_rgba(image: torch.Tensor) -> np.ndarray:
    """(4,H,W) or (1,4,H,W) network output -> (H,W,4) straight-alpha sRGB uint8 (float64 on
    the CPU)."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    return rgba8(image.detach().to("cpu", torch.float64)).numpy()


def save_png(path: str | Path, rgba: np.ndarray) -> None:
    """Write (H,W,4) or (H,W,3) uint8 as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgba)).save(tmp, format="PNG")
