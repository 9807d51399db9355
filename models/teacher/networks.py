"""The five teacher networks by upstream name, in pipeline order."""
from __future__ import annotations

from typing import Callable

from torch import nn

from tha.models.teacher.body_morpher import TeacherBodyMorpher
from tha.models.teacher.eyebrow_decomposer import EyebrowDecomposer
from tha.models.teacher.eyebrow_morphing_combiner import EyebrowMorphingCombiner
from tha.models.teacher.face_morpher import TeacherFaceMorpher
from tha.models.teacher.upscaler import TeacherUpscaler

# Upstream's file for network N is ``N.pt`` (its data/tha4 directory).
NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "eyebrow_decomposer": EyebrowDecomposer,
    "eyebrow_morphing_combiner": EyebrowMorphingCombiner,
    "face_morpher": TeacherFaceMorpher,
    "body_morpher": TeacherBodyMorpher,
    "upscaler": TeacherUpscaler,
}
FACE_NETWORKS = ("eyebrow_decomposer", "eyebrow_morphing_combiner", "face_morpher")


def file_name(network: str) -> str:
    return f"{network}.pt"
