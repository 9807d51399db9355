"""`tha bench --distill`: today's distillation loop against the buffered one, side by side in
one run, with the real Distiller at upstream's student sizes; and upstream's whole schedule
(1M face + 1.5M body examples) projected from each.

On CUDA the teacher is THA4 with the SPEC's deterministic weights (upstream's architecture and
cost); on a CPU it is the rig (THA4 at 512 takes seconds an example there).
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from tha.train.config import DistillConfig
from tha.train.distill import Distiller, World, resolve_device

log = logging.getLogger(__name__)

UPSTREAM_EXAMPLES = {"face": 1_000_000, "body": 1_500_000}
# (label, changes to the config): upstream's loop; the buffered one: the float32 teacher
# renders 64 examples per call, each example trains twice, and the students train on random
# pixel subsets of their full grids (as configs/distill_fast.yaml); then the same with the
# body's pixels as 8x8 patches, so its coarser levels run on windows, not whole grids (a body
# step ~6x cheaper on a CPU, but each example teaches less: README); and that with each example
# trained four times, since the teacher is then most of the time. A float16 teacher and a bf16 student were
# measured too (H100): the first is not accurate enough (see half_teacher_psnr), the second
# no faster than fp32.
_BUFFERED = {"teacher_batch_size": 64, "reuse": 2, "face.pixels_per_example": 4096,
             "body.pixels_per_example": 16384}
LOOPS = {
    "today": {},
    "buffered": _BUFFERED,
    "patches": {**_BUFFERED, "body.patch_size": 8},
    "patches, reuse 4": {**_BUFFERED, "body.patch_size": 8, "reuse": 4},
}


def _teacher_dir(directory: Path) -> str:
    from tha.models.teacher.load import write_teacher_directory
    from tha.models.teacher.networks import NETWORKS
    from tha.models.teacher.weights import deterministic_state_dict

    return str(write_teacher_directory(directory, {n: deterministic_state_dict(n) for n in NETWORKS}))


def _config(directory: Path, teacher: str, device: str, batch: int, examples: int, **changes) -> DistillConfig:
    from tha.runtime.demo_character import build_demo_inputs

    image, mask = build_demo_inputs(directory / "inputs")
    config = DistillConfig(prefix=str(directory / "run"), character_image_file_name=str(image),
                           face_mask_image_file_name=str(mask), teacher=teacher, device=device,
                           face_morpher_batch_size=batch, body_morpher_batch_size=batch,
                           snapshot_every=10**9, num_sample_poses=1,
                           face_morpher_num_training_examples_per_sample_output=10**9,
                           body_morpher_num_training_examples_per_sample_output=10**9)
    for key, value in changes.items():
        *parents, name = key.split(".")
        setattr(getattr(config, parents[0]) if parents else config, name, value)
    config.face.num_examples = examples
    config.body.phases = config.body.phases[:1]
    config.body.phases[0].end = examples
    return config


def _stage_rate(config: DistillConfig, stage_name: str) -> tuple[float, float]:
    """Examples per second of `tha distill`'s own student steps (teacher buffer renders included)
    over one stage's `num_examples`, and the share of that time the teacher took; the held-out
    samples, snapshots and logging around them are left out."""
    world = World(device=resolve_device(config.device))
    distiller = Distiller(config, world)
    run = distiller.start_stage(next(s for s in distiller.stages() if s.name == stage_name))
    if world.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    while run.examples < run.stage.num_examples:
        distiller.step(run)
    if world.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return run.examples / seconds, distiller.teacher_seconds / seconds


def half_teacher_psnr(config: DistillConfig, count: int = 16) -> dict[str, float]:
    """PSNR (dB) of the float16 teacher's targets against the float32 teacher's: what the
    student would learn from either."""
    from tha.train.poses import PoseSampler
    from tha.train.samples import psnr

    world = World(device=resolve_device(config.device))
    pose = PoseSampler().sample(count, torch.Generator().manual_seed(7)).to(world.device)
    out = {}
    targets = {}
    for dtype in ("float32", "float16"):
        config.teacher_dtype = dtype
        d = Distiller(config, world)
        face = d.face_targets(pose)[1]["patch"]
        body = d.body_targets(pose)
        targets[dtype] = (face, body[0][0], body[1]["image"])
    for i, name in enumerate(("face patch", "body input", "body image")):
        out[name] = psnr(targets["float16"][i].float(), targets["float32"][i].float())
    return out


def measure_distill(model_dir: Path | None, examples: int = 8, device: str = "auto") -> list[tuple[str, float]]:
    """Rows of (label, ms per example) for each loop and stage; logs examples/s and the
    projected hours of upstream's schedule for each loop. ``model_dir`` is not read (the
    students are trained here from the teacher); it is taken so that every `tha bench` extra
    is called alike (``tha.runtime.bench.EXTRA_MEASURES``)."""
    cuda = resolve_device(device).type == "cuda"
    batch = 8 if cuda else 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = _teacher_dir(Path(tmp) / "teacher") if cuda else "rig"
        if cuda:
            accuracy = half_teacher_psnr(_config(Path(tmp) / "accuracy", teacher, device, batch, 1024))
            log.info("float16 teacher targets against float32: %s",
                     ", ".join(f"{k} {v:.1f} dB" for k, v in accuracy.items()))
        for index, (label, changes) in enumerate(LOOPS.items()):
            if not cuda:  # the CPU's teacher renders 8 at a time: a few buffers in seconds
                changes = {**changes, "teacher_batch_size": min(changes.get("teacher_batch_size", 1), 8)}
            # whole buffers, each example trained `reuse` times, or the teacher's share is wrong
            count = max(examples, 1024 if cuda else changes.get("teacher_batch_size", 1) * changes.get("reuse", 1))
            rates, shares = {}, {}
            for stage in ("face", "body"):
                config = _config(Path(tmp) / f"{index}_{stage}", teacher, device, batch, count, **changes)
                rates[stage], shares[stage] = _stage_rate(config, stage)
                rows.append((f"distill {stage} ({label}, batch {batch})", 1000 / rates[stage]))
            hours = sum(UPSTREAM_EXAMPLES[s] / rates[s] for s in rates) / 3600
            log.info("distill %s %s: face %.1f ex/s (teacher %.0f%%), body %.1f ex/s (teacher %.0f%%), "
                     "upstream schedule projected %.2f h", label, changes, rates["face"], 100 * shares["face"],
                     rates["body"], 100 * shares["body"], hours)
    return rows
