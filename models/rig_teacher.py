"""An analytic "rig" teacher: smooth 2D warps and small redraws of the face and body,
driven by the 45-d pose, behind the same image + pose -> stages contract as the THA4 teacher.

It has no weights and costs a few grid samples, so a full distillation runs and converges on
a CPU in minutes. Feature positions (eyes, brows, mouth, neck) are fixed places in the SPEC's
face box, not detected on the character: the rig is a training signal, not a real poser.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from tha.models.pose import index_of

# The teacher's 192x192 face crop (SPEC) and, inside it, the student's 128x128 face target.
CROP_ROWS = slice(32, 224)
CROP_COLS = slice(160, 352)
FACE_IN_CROP = (slice(48, 176), slice(32, 160))

# Feature centres in the crop's [-1,1] coordinates (x right, y down) and their soft radii.
EYES = ((-0.3, 0.1), (0.3, 0.1))
EYE_RADIUS = (0.2, 0.13)
BROWS = ((-0.3, -0.18), (0.3, -0.18))
BROW_RADIUS = (0.22, 0.1)
MOUTH = (0.0, 0.55)
MOUTH_RADIUS = (0.22, 0.14)
LID_COLOUR = (0.55, 0.35, 0.3)  # linear RGB
MOUTH_COLOUR = (0.25, 0.02, 0.03)

# Body rig in the 512 image's [-1,1] coordinates.
NECK_Y = -0.12
HIP = (0.0, 0.9)
CHEST_Y = 0.25


def _p(pose: Tensor, name: str) -> Tensor:
    """One pose value as (N,1,1) so it broadcasts over a coordinate plane."""
    return pose[:, index_of(name), None, None]


def _grid(size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (1,size,size) x and y in [-1,1] (align_corners=False)."""
    t = (torch.arange(size, dtype=like.dtype, device=like.device) * 2 + 1) / size - 1
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x[None], y[None]


def _bump(x: Tensor, y: Tensor, centre: tuple[float, float], radius: tuple[float, float]) -> Tensor:
    return torch.exp(-(((x - centre[0]) / radius[0]) ** 2 + ((y - centre[1]) / radius[1]) ** 2))


@functools.lru_cache(maxsize=8)
def _face_bumps(size: int, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """The pose-independent soft masks of the face rig, made once per grid."""
    x, y = _grid(size, torch.empty(0, dtype=dtype, device=device))
    bumps = {"mouth": _bump(x, y, MOUTH, MOUTH_RADIUS)}
    for side, eye, brow in zip(("left", "right"), EYES, BROWS):
        bumps[f"brow_{side}"] = _bump(x, y, brow, BROW_RADIUS)
        bumps[f"eye_{side}"] = _bump(x, y, eye, EYE_RADIUS)
        bumps[f"lid_{side}"] = _bump(x, y, eye, (EYE_RADIUS[0] * 0.8, EYE_RADIUS[1] * 0.7))
        bumps[f"iris_{side}"] = _bump(x, y, eye, (0.09, 0.07))
    for side, sign in (("left", -1.0), ("right", 1.0)):
        bumps[f"corner_{side}"] = _bump(x, y, (MOUTH[0] + sign * 0.16, MOUTH[1]), (0.1, 0.08))
    return bumps


# The body field is smooth: computing it on a coarse grid and upsampling keeps the rig cheap.
BODY_FIELD_SIZE = 128


def _sample(image: Tensor, x: Tensor, y: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    grid = torch.stack([x + dx, y + dy], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _paint(image: Tensor, colour: tuple[float, float, float], amount: Tensor) -> Tensor:
    """Blend RGB toward ``colour`` by ``amount`` (N,H,W), keeping alpha (premultiplied space)."""
    alpha01 = (image[:, 3:4] + 1) / 2
    target = torch.tensor(colour, dtype=image.dtype, device=image.device)[None, :, None, None]
    target = target * alpha01 * 2 - 1
    rgb = torch.lerp(image[:, :3], target.expand_as(image[:, :3]), amount[:, None].clamp(0, 1))
    return torch.cat([rgb, image[:, 3:]], dim=1)


def morph_face(crop: Tensor, pose: Tensor) -> Tensor:
    """The 192x192 face crop posed by pose[:, 0:39]: brows, lids, irises and mouth."""
    x, y = _grid(crop.shape[-1], crop)
    bump = _face_bumps(crop.shape[-1], crop.dtype, str(crop.device))
    dx = torch.zeros_like(x.expand(pose.shape[0], -1, -1))
    dy = torch.zeros_like(dx)
    lids = []
    for side, eye, brow in zip(("left", "right"), EYES, BROWS):
        up = _p(pose, f"eyebrow_raised_{side}") + 0.5 * _p(pose, f"eyebrow_happy_{side}")
        down = _p(pose, f"eyebrow_lowered_{side}") + 0.5 * _p(pose, f"eyebrow_angry_{side}") \
            + 0.3 * _p(pose, f"eyebrow_serious_{side}")
        tilt = _p(pose, f"eyebrow_troubled_{side}") - _p(pose, f"eyebrow_angry_{side}")
        w = bump[f"brow_{side}"]
        inward = (x - brow[0]) * (1 if side == "left" else -1)
        dy = dy + w * (0.08 * (up - down) + 0.15 * tilt * inward)

        closed = (_p(pose, f"eye_wink_{side}") + _p(pose, f"eye_happy_wink_{side}")
                  + 0.5 * _p(pose, f"eye_relaxed_{side}") + 0.3 * _p(pose, f"eye_unimpressed_{side}")).clamp(0, 1)
        wide = _p(pose, f"eye_surprised_{side}") - 0.5 * _p(pose, f"eye_raised_lower_eyelid_{side}")
        w = bump[f"eye_{side}"]
        dy = dy + w * (y - eye[1]) * (1.5 * closed - 0.35 * wide)
        lids.append(0.8 * closed * bump[f"lid_{side}"])

        iris = bump[f"iris_{side}"]
        small = _p(pose, f"iris_small_{side}")
        dx = dx + iris * (0.6 * small * (x - eye[0]) - 0.06 * _p(pose, "iris_rotation_y"))
        dy = dy + iris * (0.6 * small * (y - eye[1]) - 0.04 * _p(pose, "iris_rotation_x"))

    opened = (_p(pose, "mouth_aaa") + 0.7 * _p(pose, "mouth_ooo") + 0.5 * _p(pose, "mouth_uuu")
              + 0.4 * _p(pose, "mouth_eee") + 0.4 * _p(pose, "mouth_iii") + 0.6 * _p(pose, "mouth_delta")).clamp(0, 1)
    narrow = _p(pose, "mouth_uuu") + _p(pose, "mouth_ooo") - _p(pose, "mouth_iii") - _p(pose, "mouth_eee")
    w = bump["mouth"]
    dy = dy - w * (y - MOUTH[1]) * 0.6 * opened
    dx = dx + w * (x - MOUTH[0]) * 0.35 * narrow
    for side in ("left", "right"):
        corner = bump[f"corner_{side}"]
        lift = _p(pose, f"mouth_raised_corner_{side}") - _p(pose, f"mouth_lowered_corner_{side}")
        dy = dy + corner * 0.06 * lift
    dy = dy + bump["corner_right"] * 0.06 * _p(pose, "mouth_smirk")

    out = _sample(crop, x.expand_as(dx), y.expand_as(dy), dx, dy)
    for side_lid in lids:
        out = _paint(out, LID_COLOUR, side_lid)
    inside = _bump(x, y, MOUTH, (MOUTH_RADIUS[0] * 0.6, MOUTH_RADIUS[1] * 0.5 * opened.clamp_min(1e-3)))
    return _paint(out, MOUTH_COLOUR, opened * inside)


def body_grid_change(pose: Tensor, size: int, like: Tensor) -> Tensor:
    """(N,2,size,size) sampling offsets for head turn/nod/tilt, body turn/lean and breathing.

    The ranges are small (a head tilt of 3.4 degrees, shifts of 5-6 px) because the test run
    must learn them to about half a pixel: line art misplaced by one pixel already costs
    more PSNR than the whole face."""
    x, y = _grid(size, like)
    head = torch.sigmoid((NECK_Y - y) / 0.06)
    angle = 0.06 * _p(pose, "neck_z") * head + 0.02 * _p(pose, "body_z")
    cos, sin = torch.cos(angle), torch.sin(angle)
    px, py = HIP[0], HIP[1] + (NECK_Y - HIP[1]) * head
    # Rotate about the hip for the body and about the neck for the head (inverse map).
    sx = px + cos * (x - px) + sin * (y - py)
    sy = py - sin * (x - px) + cos * (y - py)
    sx = sx - 0.02 * _p(pose, "body_y") - head * 0.025 * _p(pose, "head_y")
    sy = sy - head * 0.02 * _p(pose, "head_x")
    sy = sy - 0.02 * _p(pose, "breathing") * (y - CHEST_Y) * torch.exp(-((y - CHEST_Y) / 0.3) ** 2) \
        * torch.exp(-(x / 0.5) ** 2)
    return torch.stack([sx - x, sy - y], dim=1)


class RigTeacher:
    """Analytic poser. ``stages`` gives ``face_teacher_image`` (192), ``face_morphed_full``,
    ``grid_change``, ``warped_image`` and ``image``; ``face_only`` stops after the face."""

    def __init__(self, face_only: bool = False):
        self.face_only = face_only

    @torch.no_grad()
    def stages(self, image: Tensor, pose: Tensor) -> dict[str, Tensor]:
        image = image.expand(pose.shape[0], -1, -1, -1)
        face = morph_face(image[:, :, CROP_ROWS, CROP_COLS], pose)
        full = image.clone()
        full[:, :, CROP_ROWS, CROP_COLS] = face
        out = {"face_teacher_image": face, "face_morphed_full": full}
        if self.face_only:
            return {**out, "image": full}
        change = body_grid_change(pose, BODY_FIELD_SIZE, image)
        change = F.interpolate(change, size=image.shape[-2:], mode="bilinear", align_corners=False)
        x, y = _grid(image.shape[-1], image)
        warped = _sample(full, x, y, change[:, 0], change[:, 1])
        return {**out, "grid_change": change, "warped_image": warped, "image": warped}

    def pose(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.stages(image, pose)["image"]
