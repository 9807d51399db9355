"""Training poses: upstream's ``pose_dataset.pt`` or a sampler over the SPEC ranges.

Both draw from an explicit ``torch.Generator`` so a snapshot can store where they are and a
resumed run draws the very same poses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tha.models.checkpoint import load_torch_file
from tha.models.errors import ThaError
from tha.models.pose import LOWER, POSE_GROUPS, POSE_PARAMETERS, POSE_SIZE, UPPER, Category, index_of

# float64, as poses are drawn (then rounded to float32 once)
LOWER_64, UPPER_64 = torch.from_numpy(LOWER).double(), torch.from_numpy(UPPER).double()
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
        u = torch.rand(n, POSE_SIZE, generator=generator, dtype=torch.float64)
        on = torch.rand(n, len(self.choices) + 1, generator=generator, dtype=torch.float64) < ACTIVE
        keep = torch.zeros(n, POSE_SIZE, dtype=torch.bool)
        for c, groups in enumerate(self.choices):
            pick = torch.randint(len(groups), (n,), generator=generator)
            for row in torch.nonzero(on[:, c]).flatten().tolist():
                keep[row, groups[pick[row]]] = True
        keep[:, self.iris] = on[:, -1:]
        keep[:, self.always] = True
        pose = LOWER_64 + (UPPER_64 - LOWER_64) * u
        return torch.where(keep, pose, torch.zeros_like(pose)).float()


class AnimatorPoseSampler:
    """Half of the poses as ``PoseSampler`` draws them, half as the idle animator and the sliders'
    presets make them: an emotion preset's face, a blink (both eye_wink) and a mouth shape of
    random strength over it, rotations and breathing as the sampler draws them. The sampler
    shows one eye group at a time, so a blink under "joy" (happy_wink) is never drawn by it.
    A quarter of all poses turn head and body toward their limits together (the sliders reach
    that corner; uniform draws of five rotations almost never come near it)."""

    BLINK = [index_of("eye_wink_left"), index_of("eye_wink_right")]
    TURNS = [index_of(n) for n in ("head_x", "head_y", "neck_z", "body_y", "body_z")]
    TURNED = 0.25  # share of poses near the turning corners

    def __init__(self):
        from tha.runtime.emotions import load_emotions
        from tha.runtime.sources.animator import MOUTH_SHAPES

        self.sampler = PoseSampler()
        self.presets = torch.from_numpy(np.stack(list(load_emotions().values()))).float()
        self.mouths = [index_of(n) for n in MOUTH_SHAPES]
        self.expression = slice(0, index_of("iris_rotation_x"))  # everything but rotations and breathing

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        pose = self.sampler.sample(n, generator)
        self._turn(pose, generator)
        rows = torch.nonzero(torch.rand(n, generator=generator) < 0.5).flatten()
        m = len(rows)
        if m == 0:
            return pose
        face = self.presets[torch.randint(len(self.presets), (m,), generator=generator)]
        strength = torch.rand(m, 2, generator=generator)
        blinking = torch.rand(m, generator=generator) < 0.5
        talking = torch.rand(m, generator=generator) < 0.5
        shape = torch.tensor(self.mouths)[torch.randint(len(self.mouths), (m,), generator=generator)]
        blink = torch.where(blinking, strength[:, 0], torch.zeros(m))
        face[:, self.BLINK] = torch.maximum(face[:, self.BLINK], blink[:, None])
        picked = face[torch.arange(m), shape]
        face[torch.arange(m), shape] = torch.where(talking, torch.maximum(picked, strength[:, 1]), picked)
        pose[rows, self.expression] = face[:, self.expression]
        return pose

    def _turn(self, pose: Tensor, generator: torch.Generator) -> None:
        """Turn the TURNED share of ``pose`` to 0.5-1 of each rotation's limit, all one way
        for half of them and each its own way for the rest. Each rotation sits exactly at its
        limit with chance ~0.58, so ~6% of these poses are the corner itself: the student's
        error rose steeply over the last 10% toward it when draws only came near."""
        n, k = len(pose), len(self.TURNS)
        rows = torch.nonzero(torch.rand(n, generator=generator) < self.TURNED).flatten()
        magnitude = (1.25 - 0.75 * torch.rand(n, k, generator=generator) ** 2).clamp(max=1.0)
        own = torch.randint(2, (n, k), generator=generator) * 2.0 - 1.0
        shared = torch.randint(2, (n, 1), generator=generator) * 2.0 - 1.0
        together = torch.rand(n, 1, generator=generator) < 0.5
        sign = torch.where(together, shared.expand(n, k), own)
        turned = (sign * magnitude)[rows]  # every rotation here spans [-1, 1]
        pose[rows[:, None], torch.tensor(self.TURNS)] = turned


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
    data = load_torch_file(path, "pose tensor file", "save an (M,45) tensor with torch.save, or set `poses: sampler`")
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, Tensor)), None)
    if not isinstance(data, Tensor) or data.dim() != 2 or data.shape[1] != POSE_SIZE:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ThaError(f"{path} holds {shape}, not an (M,{POSE_SIZE}) pose tensor")
    return PoseDataset(data)


def pose_source(spec: str, resolve) -> PoseSampler | AnimatorPoseSampler | PoseDataset:
    """``sampler``, ``animator`` (the sampler mixed with emotion presets, blinks and mouth
    shapes: a character the idle animator will drive) or a pose tensor file."""
    if spec == "sampler":
        return PoseSampler()
    if spec == "animator":
        return AnimatorPoseSampler()
    return load_pose_dataset(resolve(spec))
