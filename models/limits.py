"""Every limit on untrusted input, in one place. Entry points check these before the expensive
step (decoding, allocating, analysing), so a hostile or broken input costs little and fails
with one line naming the limit."""
from __future__ import annotations

import json
import math
import numbers
from typing import Any

from tha.models.errors import ThaError

# Images: checked from the PNG header, before any pixel is decoded (a 657 KB PNG can declare
# 13000x13000 = 676 MB of RGBA). 4096x4096 leaves room for any sensible source image.
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_LIMIT = f"over the pixel limit of {MAX_IMAGE_PIXELS:,} (4096x4096)"

# Request bodies of `tha serve`.
MAX_UPLOAD_BYTES = 20 << 20
MAX_JSON_BYTES = 1 << 20

# JSON anywhere (files, requests): nesting depth and the digits of one number.
MAX_JSON_DEPTH = 32
MAX_JSON_NUMBER_DIGITS = 40

# Audio for lip sync: analysis cost grows with duration x frame rate, and a 1 Hz "WAV" of a few
# KB declares hours of audio.
AUDIO_RATE_RANGE = (4000, 384000)
MAX_AUDIO_SECONDS = 600.0

# Frame rates: the animator's target_fps (serve), `tha render --fps`, lip-sync analysis.
FPS_RANGE = (1.0, 240.0)

# Student networks read off a state dict: widths and depths upstream's sizes fit with room.
MAX_STUDENT_CHANNELS = 4096
MAX_STUDENT_LAYERS = 64
MAX_BODY_LEVELS = 6


def check_image_size(width: int, height: int, label: str, wanted: str = "a 512x512 RGBA PNG") -> None:
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ThaError(f"{label} is {width}x{height} pixels, {IMAGE_LIMIT}; give {wanted}")


def check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= value <= high):
        raise ThaError(f"{name}={value!r} is outside [{low:g}, {high:g}]; give a number in that range")


def check_audio(rate: int, samples: int, label: str) -> None:
    low, high = AUDIO_RATE_RANGE
    if not low <= rate <= high:
        raise ThaError(f"{label} has a sample rate of {rate} Hz; give audio at {low}-{high} Hz "
                       "(e.g. `ffmpeg -i in.wav -ar 16000 speech.wav`)")
    if samples / rate > MAX_AUDIO_SECONDS:
        raise ThaError(f"{label} is {samples / rate:.0f} s long, over the limit of {MAX_AUDIO_SECONDS:.0f} s; "
                       "split it into shorter clips")


def json_depth(data: bytes) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON text, brackets inside strings not counted
    (one linear pass: ``json`` itself recurses per level and dies past ~1000)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x5B or byte == 0x7B:
            depth += 1
            deepest = max(deepest, depth)
        elif byte == 0x5D or byte == 0x7D:
            depth -= 1
    return deepest


def _number(kind: type):
    def parse(text: str):
        if len(text) > MAX_JSON_NUMBER_DIGITS:
            raise ValueError(f"a number of {len(text)} characters (the limit is {MAX_JSON_NUMBER_DIGITS})")
        value = kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text} is out of range")
        return value

    return parse


def _constant(text: str):
    raise ValueError(f"{text} is not a number JSON allows")


def parse_json(data: bytes | str, what: str) -> Any:
    """json.loads with the limits: nesting depth, digits per number, no NaN/Infinity (callers
    bound the size before reading). Every failure is one ThaError naming ``what``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise ThaError(f"{what} nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}; "
                       "pose and settings files are flat objects")
    try:
        return json.loads(raw, parse_int=_number(int), parse_float=_number(float), parse_constant=_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ThaError(f"{what} is not valid JSON ({err})") from None
