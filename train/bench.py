"""`tha bench --distill`: how fast distillation trains here, per stage, with the rig teacher
and upstream-sized students."""
from __future__ import annotations

import time

import torch

from tha.models.rig_teacher import RigTeacher
from tha.models.student import BodyMorpher, FaceMorpher
from tha.train.poses import PoseSampler

BATCH = 2  # upstream trains at 8; 2 keeps the full-size body morpher within CPU memory
MAX_EXAMPLES = 8  # a CPU body step takes seconds: a few steps give a stable figure


def _time_steps(step, examples: int) -> float:
    """Seconds per example over ``examples`` examples, after one warm-up step."""
    step()
    steps = max(1, min(examples, MAX_EXAMPLES) // BATCH)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / (steps * BATCH)


def measure_distill(examples: int = 8, device: str = "cpu") -> list[tuple[str, float]]:
    """Rows of (label, ms per example) for a face and a body training step (rig teacher
    included) at upstream's student sizes; examples/s is 1000 / ms."""
    image = torch.rand(1, 4, 512, 512, device=device) * 2 - 1
    poses = PoseSampler()
    generator = torch.Generator().manual_seed(0)
    teacher = RigTeacher()
    face, body = FaceMorpher().to(device), BodyMorpher().to(device)
    face_opt, body_opt = torch.optim.Adam(face.parameters()), torch.optim.Adam(body.parameters())

    def face_step() -> None:
        pose = poses.sample(BATCH, generator).to(device)
        target = teacher.stages(image, pose)["face_teacher_image"][:, :, 48:176, 32:160]
        face_opt.zero_grad()
        (face(pose[:, :39]) - target).abs().mean().backward()
        face_opt.step()

    def body_step() -> None:
        pose = poses.sample(BATCH, generator).to(device)
        stages = teacher.stages(image, pose)
        body_opt.zero_grad()
        out = body(stages["face_morphed_full"], pose)
        ((out.blended_image - stages["image"]).abs().mean()
         + (out.grid_change - stages["grid_change"]).abs().mean()).backward()
        body_opt.step()

    return [(f"distill face morpher step (batch {BATCH}, rig teacher)", 1000 * _time_steps(face_step, examples)),
            (f"distill body morpher step (batch {BATCH}, rig teacher)", 1000 * _time_steps(body_step, examples))]
