"""Training poses: upstream's ``pose_dataset.pt`` or a sampler over the SPEC ranges.

Both draw from an explicit ``torch.Generator`` so a snapshot can store where they are and a
resumed run draws the very same poses.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from tha.models.errors import ThaError
from tha.models.pose import POSE_GROUPS, POSE_PARAMETERS, Category, index_of

NUM_POSE = len(POSE_PARAMETERS)
LOWER = torch.tensor([p.group.lower for p in POSE_PARAMETERS], dtype=torch.float64)
UPPER = torch.tensor([p.group.upper for p in POSE_PARAMETERS], dtype=torch.float64)
# Like upstream's manual posers, each of these categories shows one group at a time.
ONE_OF = (Category.EYEBROW, Category.EYE, Category.MOUTH)
ACTIVE = 0.7  # chance that a category (or iris_small) is in use in a drawn pose


def _group_slots(category: Category) -> list[list[int]]:
    return [[index_of(n) for n in g.parameter_names] for g in POSE_GROUPS if g.category == category]


class PoseSampler:
    """Realistic, sparse poses: per face category one group (both sides independently) with
    probability 0.7, iris_small likewise, rotations and breathing uniform over their ranges."""

    def __init__(self):
        self.choices = [_group_slots(c) for c in ONE_OF]
        self.iris = _group_slots(Category.IRIS_MORPH)[0]
        self.always = [p.index for p in POSE_PARAMETERS if p.category in
                       (Category.IRIS_ROTATION, Category.FACE_ROTATION, Category.BODY_ROTATION, Category.BREATHING)]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, NUM_POSE, generator=generator, dtype=torch.float64)
        on = torch.rand(n, len(self.choices) + 1, generator=generator, dtype=torch.float64) < ACTIVE
        keep = torch.zeros(n, NUM_POSE, dtype=torch.bool)
        for c, groups in enumerate(self.choices):
            pick = torch.randint(len(groups), (n,), generator=generator)
            for row in torch.nonzero(on[:, c]).flatten().tolist():
                keep[row, groups[pick[row]]] = True
        keep[:, self.iris] = on[:, -1:]
        keep[:, self.always] = True
        pose = LOWER + (UPPER - LOWER) * u
        return torch.where(keep, pose, torch.zeros_like(pose)).float()


class PoseDataset:
    """Poses drawn with replacement from a (M,45) tensor file."""

    def __init__(self, poses: Tensor):
        self.poses = poses.float()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.poses[torch.randint(len(self.poses), (n,), generator=generator)]


def load_pose_dataset(path: Path) -> PoseDataset:
    """Read upstream's ``pose_dataset.pt`` (weights_only): a tensor, or a dict holding one."""
    if not path.is_file():
        raise ThaError(f"pose dataset {path} does not exist; set `poses: sampler` to draw poses instead")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same here
        raise ThaError(f"{path} is not a readable pose tensor file ({str(err).splitlines()[0][:100]})") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, Tensor)), None)
    if not isinstance(data, Tensor) or data.dim() != 2 or data.shape[1] != NUM_POSE:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ThaError(f"{path} holds {shape}, not an (M,{NUM_POSE}) pose tensor")
    return PoseDataset(data)


def pose_source(spec: str, resolve) -> PoseSampler | PoseDataset:
    return PoseSampler() if spec == "sampler" else load_pose_dataset(resolve(spec))
