"""The demo character: an original chibi-style girl drawn here with PIL (no third-party art),
laid out where the SPEC's face box and the rig teacher expect a face, and her face mask.

`build_demo_inputs(dir)` writes character.png and face_mask.png, the inputs of the distill
run (configs/demo/distill.yaml) whose student is the committed model under configs/demo/
(``DEMO_MODEL_DIR``; `tha demo` shows it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tha.configs import CONFIGS
from tha.models.image import save_png

DEMO_MODEL_DIR = CONFIGS / "demo"

SIZE = 512
SCALE = 4  # drawn at 4x, then downsampled: smooth edges without an antialiasing library

SKIN = (255, 226, 208, 255)
SKIN_SHADE = (240, 196, 180, 255)
HAIR = (64, 92, 150, 255)
HAIR_DARK = (44, 62, 108, 255)
HAIR_LIGHT = (120, 150, 205, 255)
DRESS = (236, 104, 120, 255)
DRESS_DARK = (196, 72, 92, 255)
COLLAR = (250, 248, 244, 255)
IRIS = (60, 150, 120, 255)
IRIS_DARK = (28, 84, 70, 255)
LINE = (60, 36, 40, 255)
BLUSH = (252, 196, 188, 255)

# Feature places (512 pixels) where the rig teacher moves eyes, brows and mouth.
EYES = ((227, 138), (285, 138))
BROW_ROW = 111
MOUTH = (256, 182)
FACE_CENTRE = (256, 146)
FACE_RADII = (70, 74)


def _box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    return ((cx - rx) * SCALE, (cy - ry) * SCALE, (cx + rx) * SCALE, (cy + ry) * SCALE)


def _points(points) -> list[tuple[float, float]]:
    return [(x * SCALE, y * SCALE) for x, y in points]


def _hair_back(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(_box(256, 140, 96, 96), fill=HAIR)
    d.polygon(_points([(164, 150), (348, 150), (372, 330), (330, 360), (182, 360), (140, 330)]), fill=HAIR)
    d.polygon(_points([(150, 300), (190, 330), (176, 372)]), fill=HAIR_DARK)
    d.polygon(_points([(362, 300), (322, 330), (336, 372)]), fill=HAIR_DARK)


def _body(d: ImageDraw.ImageDraw) -> None:
    d.rectangle(_box(256, 222, 17, 22), fill=SKIN_SHADE)  # neck
    d.polygon(_points([(196, 246), (316, 246), (372, 500), (140, 500)]), fill=DRESS)  # dress
    d.polygon(_points([(196, 246), (166, 262), (128, 410), (156, 420), (186, 300)]), fill=DRESS_DARK)  # sleeves
    d.polygon(_points([(316, 246), (346, 262), (384, 410), (356, 420), (326, 300)]), fill=DRESS_DARK)
    d.ellipse(_box(140, 420, 15, 14), fill=SKIN)  # hands
    d.ellipse(_box(372, 420, 15, 14), fill=SKIN)
    d.polygon(_points([(222, 244), (256, 278), (290, 244), (276, 240), (256, 258), (236, 240)]), fill=COLLAR)
    d.polygon(_points([(256, 270), (232, 258), (232, 290)]), fill=HAIR_LIGHT)  # ribbon
    d.polygon(_points([(256, 270), (280, 258), (280, 290)]), fill=HAIR_LIGHT)
    d.ellipse(_box(256, 272, 7, 7), fill=HAIR)
    d.line(_points([(256, 300), (256, 500)]), fill=DRESS_DARK, width=2 * SCALE)


def _face(d: ImageDraw.ImageDraw) -> None:
    d.ellipse(_box(*FACE_CENTRE, *FACE_RADII), fill=SKIN)
    d.ellipse(_box(200, 166, 16, 8), fill=BLUSH)
    d.ellipse(_box(312, 166, 16, 8), fill=BLUSH)
    for cx, cy in EYES:
        d.ellipse(_box(cx, cy, 17, 20), fill=(255, 255, 255, 255))
        d.ellipse(_box(cx, cy + 2, 12, 16), fill=IRIS)
        d.ellipse(_box(cx, cy + 4, 7, 9), fill=IRIS_DARK)
        d.ellipse(_box(cx - 4, cy - 5, 4, 5), fill=(255, 255, 255, 255))
        d.arc(_box(cx, cy + 2, 19, 22), 200, 340, fill=LINE, width=4 * SCALE)
    for cx, _ in EYES:
        d.arc(_box(cx, BROW_ROW + 6, 16, 7), 210, 330, fill=HAIR_DARK, width=3 * SCALE)
    mx, my = MOUTH
    d.arc(_box(mx, my - 6, 10, 7), 20, 160, fill=LINE, width=2 * SCALE)
    d.polygon(_points([(253, 160), (256, 164), (259, 160)]), fill=SKIN_SHADE)  # nose


def _bangs(d: ImageDraw.ImageDraw) -> None:
    d.chord(_box(256, 118, 86, 66), 180, 360, fill=HAIR)
    # Locks hanging over the forehead, stopping above the brows.
    for x0, x1, tip in ((176, 214, 150), (206, 246, 104), (240, 274, 100), (266, 306, 104), (298, 336, 150)):
        d.polygon(_points([(x0, 100), (x1, 100), ((x0 + x1) / 2 + 4, tip)]), fill=HAIR)
    d.polygon(_points([(168, 110), (190, 110), (176, 230), (160, 214)]), fill=HAIR)  # side locks
    d.polygon(_points([(344, 110), (322, 110), (336, 230), (352, 214)]), fill=HAIR)
    d.arc(_box(236, 70, 30, 18), 200, 300, fill=HAIR_LIGHT, width=3 * SCALE)  # shine
    d.polygon(_points([(250, 56), (262, 30), (270, 58)]), fill=HAIR)  # ahoge


def draw_character() -> np.ndarray:
    """The demo character, 512x512 straight-alpha RGBA uint8 on a transparent background."""
    image = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    for layer in (_hair_back, _body, _face, _bangs):
        canvas = Image.new("RGBA", image.size, (0, 0, 0, 0))
        layer(ImageDraw.Draw(canvas))
        image = Image.alpha_composite(image, canvas)
    return np.asarray(image.resize((SIZE, SIZE), Image.LANCZOS))


def draw_face_mask() -> np.ndarray:
    """512x512 RGB, 255 on the face (eyes, brows, mouth) and 0 elsewhere, as the distiller wants."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    # Inside the SPEC's face box (rows 80:208, columns 192:320), which the distiller checks.
    ImageDraw.Draw(mask).ellipse((FACE_CENTRE[0] - 60, BROW_ROW - 16, FACE_CENTRE[0] + 60, MOUTH[1] + 20),
                                 fill=255)
    binary = np.asarray(mask) > 127
    return np.repeat(np.where(binary, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def build_demo_inputs(directory: str | Path) -> tuple[Path, Path]:
    """Write character.png and face_mask.png into ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    character, mask = directory / "character.png", directory / "face_mask.png"
    save_png(character, draw_character())
    save_png(mask, draw_face_mask())
    return character, mask


if __name__ == "__main__":
    import sys

    print(*build_demo_inputs(sys.argv[1] if len(sys.argv) > 1 else "runs/demo_inputs"))
