"""`tha serve`'s result_feed frames: each rendered frame is encoded once per format (PNG level /
WebP quality, chosen per feed client), and only when a client asks."""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tha.models.errors import ThaError

BOUNDARY = "frame"  # of the multipart/x-mixed-replace stream


@dataclass(frozen=True)
class FeedFormat:
    """How result_feed encodes a frame (query parameters ``format``, ``level``, ``quality``)."""
    kind: str = "png"  # png or webp
    level: int = 1  # PNG zlib level 0-9; 1: a stream wants speed, and flat anime art barely shrinks more
    quality: int = 80  # WebP quality 0-100; 100 = lossless

    @property
    def mime(self) -> str:
        return f"image/{self.kind}"


def encode_frame(rgba: np.ndarray, fmt: FeedFormat) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(rgba, "RGBA")
    if fmt.kind == "png":
        image.save(buffer, format="PNG", compress_level=fmt.level)
    else:
        image.save(buffer, format="WEBP", quality=fmt.quality, lossless=fmt.quality == 100, method=0)
    return buffer.getvalue()


class EncodedFrame:
    """One rendered frame and its encodings, each made once however many clients want it."""

    def __init__(self, rgba: np.ndarray):
        self.rgba = rgba
        self._encoded: dict[FeedFormat, bytes] = {}
        self._lock = threading.Lock()

    def get(self, fmt: FeedFormat) -> bytes:
        with self._lock:
            if fmt not in self._encoded:
                self._encoded[fmt] = encode_frame(self.rgba, fmt)
            return self._encoded[fmt]


def feed_format(kind: str, level: int, quality: int) -> FeedFormat:
    if kind not in ("png", "webp"):
        raise ThaError(f"format={kind!r} is not supported; use format=png or format=webp")
    if not 0 <= level <= 9:
        raise ThaError(f"level={level} is out of range; PNG levels are 0 (fastest) to 9 (smallest)")
    if not 0 <= quality <= 100:
        raise ThaError(f"quality={quality} is out of range; WebP quality is 0 to 100 (100 = lossless)")
    return FeedFormat(kind, level, quality)
