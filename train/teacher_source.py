"""What the distiller learns from: the rig teacher, upstream's five-network teacher, or any
character model (a student re-distilled into a smaller one), seen through one interface."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tha.models.errors import ThaError
from tha.models.poser import Poser
from tha.models.rig_teacher import FACE_IN_CROP

TEACHER_FILES = ("eyebrow_decomposer.pt", "eyebrow_morphing_combiner.pt", "face_morpher.pt",
                 "body_morpher.pt", "upscaler.pt")


@dataclass
class BodyTargets:
    input_image: Tensor  # the teacher's "face morphed full": the body student's input
    image: Tensor  # the final posed image
    warped_image: Tensor | None
    grid_change: Tensor | None


class DistillTeacher:
    """Face targets (N,4,128,128) and body targets at 512 from any Poser."""

    def __init__(self, face: Poser, full: Poser, kind: str):
        self.face, self.full, self.kind = face, full, kind

    @torch.no_grad()
    def face_target(self, image: Tensor, pose: Tensor) -> Tensor:
        stages = self.face.stages(image, pose)
        if "face_teacher_image" in stages:
            return stages["face_teacher_image"][:, :, FACE_IN_CROP[0], FACE_IN_CROP[1]]
        return stages["face_morpher_output"]

    @torch.no_grad()
    def body_targets(self, image: Tensor, pose: Tensor) -> BodyTargets:
        stages = self.full.stages(image, pose)
        return BodyTargets(stages["face_morphed_full"], stages["image"], stages.get("warped_image"),
                           stages.get("grid_change"))


def open_teacher(source: str, resolve, device: torch.device, dtype: torch.dtype) -> DistillTeacher:
    """``rig``, an upstream teacher directory, or a character model directory / fetched name."""
    if source == "rig":
        from tha.models.rig_teacher import RigTeacher

        return DistillTeacher(RigTeacher(face_only=True), RigTeacher(), "rig")
    from tha.models.hub import resolve_model

    path = resolve(source) if Path(source).expanduser().exists() or "/" in source else resolve_model(source)
    if path.is_dir() and all((path / f).is_file() for f in TEACHER_FILES):
        from tha.models.teacher import load_teacher_poser

        face = load_teacher_poser(path, dtype=dtype, device=device, face_only=True)
        full = load_teacher_poser(path, dtype=dtype, device=device)
        return DistillTeacher(face, full, "tha4")
    if (path / "character_model.yaml").is_file() or path.suffix == ".yaml":
        from tha.models.character import load_character_model
        from tha.models.poser import StudentPoser

        poser = StudentPoser.from_model(load_character_model(path)).to(device, dtype)
        face = StudentPoser(poser.face_morpher, poser.body_morpher, face_only=True)
        return DistillTeacher(face, poser, "student")
    raise ThaError(f"teacher {source!r} is neither `rig`, a directory with upstream's "
                   f"{', '.join(TEACHER_FILES)}, nor a character model directory")

