"""The teacher behind the Poser contract: upstream's mode 07 (full) and mode 12 (face only).

Crops and pastes follow the SPEC's wiring. Every tensor created here takes the input's
dtype and device, so the whole pipeline runs in float64 when its weights and input do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tha.models.pose import EYEBROW_SLICE, FACE_NON_EYEBROW_SLICE, ROTATION_SLICE
from tha.models.teacher.eyebrow_decomposer import EyebrowDecomposer, EyebrowLayers
from tha.models.teacher.eyebrow_morphing_combiner import EyebrowMorphingCombiner
from tha.models.teacher.face_morpher import TeacherFaceMorpher

# Where each network looks in the 512x512 image (SPEC "The teacher").
EYEBROW_ROWS, EYEBROW_COLS = slice(64, 192), slice(192, 320)
FACE_CROP_ROWS, FACE_CROP_COLS = slice(32, 224), slice(160, 352)  # 192 px, not the student's 128 px patch
EYEBROW_IN_FACE = slice(32, 160)  # the eyebrow crop's place inside the face crop, both axes


class FaceTeacherPoser(nn.Module):
    """Eyebrow decomposer -> eyebrow morphing combiner -> face morpher (upstream mode 12).

    ``stages`` gives ``face_teacher_image`` (the 192x192 face the face-morpher student learns;
    its [48:176, 32:160] is the student's 128x128 patch) and, to honour the Poser contract,
    ``image``: that face pasted back into the 512x512 input.
    """

    def __init__(self, eyebrow_decomposer: EyebrowDecomposer, eyebrow_morphing_combiner: EyebrowMorphingCombiner,
                 face_morpher: TeacherFaceMorpher):
        super().__init__()
        self.eyebrow_decomposer = eyebrow_decomposer
        self.eyebrow_morphing_combiner = eyebrow_morphing_combiner
        self.face_morpher = face_morpher
        self._cached_crop: Tensor | None = None
        self._cached_layers: EyebrowLayers | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _inputs(self, image: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        image = image.to(self.device, self.dtype)
        pose = pose.to(self.device, self.dtype)
        if image.dim() == 3:
            image = image[None]
        if pose.dim() == 1:
            pose = pose[None]
        return image, pose

    def eyebrow_layers(self, image: Tensor) -> EyebrowLayers:
        """The decomposition depends on the image alone: reuse it while the crop is unchanged."""
        crop = image[:, :, EYEBROW_ROWS, EYEBROW_COLS]
        cached = self._cached_crop
        if cached is None or cached.shape != crop.shape or cached.dtype != crop.dtype \
                or cached.device != crop.device or not torch.equal(cached, crop):
            self._cached_layers = self.eyebrow_decomposer(crop)
            self._cached_crop = crop.clone()
        return self._cached_layers

    def clear_cache(self) -> None:
        self._cached_crop = self._cached_layers = None

    def _apply(self, fn, recurse=True):
        # Moving or casting the networks invalidates the cached decomposition.
        self.clear_cache()
        return super()._apply(fn, recurse)

    def face_stages(self, image: Tensor, pose: Tensor, layers: EyebrowLayers) -> dict[str, Tensor]:
        """Everything after the eyebrow decomposition (no cache here, so it traces cleanly)."""
        n = pose.shape[0]
        background, eyebrow = (t.expand(n, -1, -1, -1) for t in (layers.background_layer, layers.eyebrow_layer))
        eyebrows = self.eyebrow_morphing_combiner(background, eyebrow, pose[:, EYEBROW_SLICE])
        face_input = image[:, :, FACE_CROP_ROWS, FACE_CROP_COLS].expand(n, -1, -1, -1).clone()
        face_input[:, :, EYEBROW_IN_FACE, EYEBROW_IN_FACE] = eyebrows.eyebrow_image_no_combine_alpha
        face = self.face_morpher(face_input, pose[:, FACE_NON_EYEBROW_SLICE]).image
        face_morphed_full = image.expand(n, -1, -1, -1).clone()
        face_morphed_full[:, :, FACE_CROP_ROWS, FACE_CROP_COLS] = face
        return {
            # Each network's first output, as upstream lists them.
            "eyebrow_decomposer_image": layers.eyebrow_layer.expand(n, -1, -1, -1),
            "eyebrow_morphing_combiner_image": eyebrows.eyebrow_image,
            "face_morpher_image": face,
            "face_morphed_full": face_morphed_full,
        }

    @torch.no_grad()
    def stages(self, image: Tensor, pose: Tensor) -> dict[str, Tensor]:
        image, pose = self._inputs(image, pose)
        out = self.face_stages(image, pose, self.eyebrow_layers(image))
        return {**out, "face_teacher_image": out["face_morpher_image"], "image": out["face_morphed_full"]}

    def pose(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.stages(image, pose)["image"]


class TeacherPoser(FaceTeacherPoser):
    """All five networks (upstream mode 07): the face stages, then the body morpher at 256x256
    and the upscaler at 512x512. The final image is ``full_posed_image`` (also ``image``)."""

    def __init__(self, eyebrow_decomposer: EyebrowDecomposer, eyebrow_morphing_combiner: EyebrowMorphingCombiner,
                 face_morpher: TeacherFaceMorpher, body_morpher: nn.Module, upscaler: nn.Module):
        super().__init__(eyebrow_decomposer, eyebrow_morphing_combiner, face_morpher)
        self.body_morpher = body_morpher
        self.upscaler = upscaler

    def body_stages(self, face_morphed_full: Tensor, pose: Tensor) -> dict[str, Tensor]:
        """Body morpher at half resolution, then the upscaler back at 512."""
        body_pose = pose[:, ROTATION_SLICE]
        half = F.interpolate(face_morphed_full, size=(256, 256), mode="bilinear", align_corners=False)
        body = self.body_morpher(half, body_pose)
        coarse_image = F.interpolate(body.merged, size=(512, 512), mode="bilinear", align_corners=False)
        coarse_grid = F.interpolate(body.grid_change, size=(512, 512), mode="bilinear", align_corners=False)
        final = self.upscaler(face_morphed_full, coarse_image, coarse_grid, body_pose)
        # The upscaler's warp and grid change are what upstream distils the body student against.
        return {"body_morpher_image": body.merged, "full_posed_image": final.merged,
                "warped_image": final.warped, "grid_change": final.grid_change}

    @torch.no_grad()
    def stages(self, image: Tensor, pose: Tensor) -> dict[str, Tensor]:
        image, pose = self._inputs(image, pose)
        out = self.face_stages(image, pose, self.eyebrow_layers(image))
        out.update(self.body_stages(out["face_morphed_full"], pose))
        return {**out, "image": out["full_posed_image"]}
