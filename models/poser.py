"""The posing contract in tensor space: (image, pose) -> image, with named intermediate stages.

The student (``StudentPoser``), the THA4 teacher (whole or face only) and the rig teacher
implement ``Poser``; the distiller learns from and evaluates through it, and tests compare
posers with it. A stage two posers share has the same name in both: ``face_morphed_full`` is
the character with the posed face in place, the body's input. Runtime backends honour
another contract, in frames: ``Backend.render(pose) -> Frame`` (runtime/backends/base.py).
Images are (N,4,512,512) in the SPEC's [-1,1] premultiplied linear space; poses are (N,45).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from tha.models.character import CharacterModel
from tha.models.student import BodyMorpher, FaceMorpher

# Where the 128x128 face patch sits in the 512x512 image (SPEC).
FACE_ROWS = slice(80, 208)
FACE_COLS = slice(192, 320)


@runtime_checkable
class Poser(Protocol):
    """image (N,4,512,512) + pose (N,45) -> posed image (N,4,512,512)."""

    def pose(self, image: Tensor, pose: Tensor) -> Tensor: ...

    def stages(self, image: Tensor, pose: Tensor) -> dict[str, Tensor]:
        """Every named output, the final image under ``"image"`` among them... """


def paste_face(image: Tensor, patch: Tensor, out: Tensor | None = None) -> Tensor:
    """``image`` (1 or N,4,512,512) with the face ``patch`` (N,4,128,128) in its place.

    Without ``out``: a new tensor built by concatenation, the form that traces to ONNX (every
    runtime has Concat; not every one has scatter) and that ``torch.func.vmap`` maps. With
    ``out``: written into that buffer (engines that keep static buffers)."""
    if out is not None:
        out.copy_(image.expand_as(out))
        out[:, :, FACE_ROWS, FACE_COLS] = patch
        return out
    image = image.expand(patch.shape[0], -1, -1, -1)
    rows, cols = FACE_ROWS, FACE_COLS
    middle = torch.cat([image[:, :, rows, : cols.start], patch, image[:, :, rows, cols.stop:]], dim=3)
    return torch.cat([image[:, :, : rows.start], middle, image[:, :, rows.stop:]], dim=2)


class StudentPoser(torch.nn.Module):
    """The reference ("torch") student renderer, composed exactly as upstream's mode 14.
    ``face_only`` stops after the face, as the face-only teachers do (the face stage of a
    distillation from a student needs no body pass)."""

    def __init__(self, face_morpher: FaceMorpher, body_morpher: BodyMorpher, face_only: bool = False):
        super().__init__()
        self.face_morpher = face_morpher
        self.body_morpher = body_morpher
        self.face_only = face_only

    @classmethod
    def from_model(cls, model: CharacterModel) -> "StudentPoser":
        return cls(model.face_morpher, model.body_morpher)

    @torch.no_grad()
    def stages(self, image: Tensor, pose: Tensor) -> dict[str, Tensor]:
        patch = self.face_morpher(pose[:, : self.face_morpher.config.pose_size])
        pasted = paste_face(image, patch)
        face = {"face_morpher_output": patch, "face_morphed_full": pasted}
        if self.face_only:
            return {**face, "image": pasted}
        body = self.body_morpher(pasted, pose)
        return {**face, **body._asdict(), "image": body.blended_image}

    def pose(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.stages(image, pose)["image"]
