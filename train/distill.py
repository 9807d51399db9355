"""`tha distill`: teach a student (face morpher, then body morpher) to imitate a teacher.

One loop serves both stages; a stage is its module, its batch of teacher targets and its
loss. The teacher renders into an example buffer (train/buffer.py) that student steps draw
from; one batch per buffer, each example seen once, is upstream's loop. Poses come from a
seeded generator whose state goes into every snapshot, so a resumed run draws the same batches
and reproduces an uninterrupted run. Under DDP every rank draws the same global batch and
trains on its own slice; rank 0 writes everything.
"""
from __future__ import annotations

import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from tha.models.character import CharacterModel
from tha.models.errors import ThaError
from tha.models.files import check_output_dir, sha256_file
from tha.models.image import rgba_to_tensor
from tha.models.pose import FACE_SLICE
from tha.models.poser import FACE_COLS, FACE_ROWS, StudentPoser
from tha.models.student import BodyMorpher, BodyMorpherConfig, FaceMorpher, FaceMorpherConfig, position_grid
from tha.train.buffer import ExampleBuffer, draw_order, gather
from tha.train.config import DistillConfig, config_yaml
from tha.train.inputs import load_character, load_face_mask, resolve_input
from tha.train.poses import pose_source
from tha.train.samples import psnr, write_samples
from tha.train.snapshot import SNAPSHOT, STAGES, load_snapshot, rng_state, save_snapshot, set_rng_state
from tha.train.teacher_source import DistillTeacher, open_teacher

HELD_OUT_SEED = 0x7A5EED  # held-out poses never come from the training generators
MODEL_DIR = "character_model"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def face_config(config: DistillConfig, resolution: int = 128) -> FaceMorpherConfig:
    s = config.face_student
    return FaceMorpherConfig(image_size=resolution, channels=s.channels, num_sine_layers=s.num_sine_layers)


def body_config(config: DistillConfig, resolution: int = 512) -> BodyMorpherConfig:
    s = config.body_student
    levels = len(s.level_channels)
    sizes = tuple((512 >> (levels - 1 - i)) * resolution // 512 for i in range(levels))
    return BodyMorpherConfig(level_sizes=sizes, level_channels=tuple(s.level_channels),
                             sine_layers_per_level=s.sine_layers_per_level)


def full_face(config: DistillConfig, trained: nn.Module) -> FaceMorpher:
    """A 128x128 face morpher with ``trained``'s weights: the stage may train at a lower
    resolution; samples, PSNR and the saved model are at full size."""
    face = FaceMorpher(face_config(config)).to(_device(trained))
    face.load_state_dict(_unwrap(trained).state_dict())
    return face


def full_body(config: DistillConfig, trained: nn.Module) -> BodyMorpher:
    """A 512x512 body morpher with ``trained``'s weights (see `full_face`)."""
    body = BodyMorpher(body_config(config)).to(_device(trained))
    body.load_state_dict(_unwrap(trained).state_dict())
    return body


def _shrink(x: Tensor | None, size: int) -> Tensor | None:
    if x is None or x.shape[-1] == size:
        return x
    if x.shape[-1] % size == 0:  # the same area average, and faster than interpolate's
        return F.avg_pool2d(x, x.shape[-1] // size)
    return F.interpolate(x, size=(size, size), mode="area")


def _cat(parts: list[Tensor | None], sizes: list[int]) -> Tensor | None:
    """Join per-call targets; shared ones (the face mask) and missing ones stay as they are."""
    if parts[0] is None or any(p.shape[0] != n for p, n in zip(parts, sizes)):
        return parts[0]
    return torch.cat(parts)


def _l1(a: Tensor, b: Tensor | None) -> Tensor:
    return (a - b).abs().mean() if b is not None else a.new_zeros(())


@dataclass
class Stage:
    """One stage of the run: what it trains and how."""

    name: str
    module: nn.Module
    batch_size: int
    num_examples: int
    sample_every: int
    # random pixels per example of a `resolution` grid; 0 = whole images
    pixels_per_example: int
    resolution: int
    seed_0: int
    seed_1: int
    learning_rate: Callable[[int], float]
    # poses -> (inputs for the module, whole targets at `resolution`); runs the teacher, no grad
    targets: Callable[[Tensor], tuple[tuple, dict[str, Tensor]]]
    # (module output, targets, examples so far) -> (total loss, terms)
    loss: Callable[[object, dict[str, Tensor], int], tuple[Tensor, dict[str, Tensor]]]
    # held-out (teacher, student) images at full size for samples and PSNR
    evaluate: Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]]
    ignore_face_pose: bool = False  # the body's face-pose weights held at zero
    patch_size: int = 0  # the pixels come as square patches of this side (body only)


@dataclass
class StageRun:
    """A stage's training state between student steps: what a snapshot saves and a resume restores."""

    stage: Stage
    module: nn.Module  # the stage's module, DDP-wrapped when there are several ranks
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    scaler: torch.amp.GradScaler
    autocast: AbstractContextManager
    examples: int = 0
    fill: ExampleBuffer | None = None  # the teacher examples the next steps draw from
    fill_state: Tensor | None = None  # the generator state that buffer was drawn with
    fill_step: int = 0


class Distiller:
    def __init__(self, config: DistillConfig, world: World):
        self.config, self.world = config, world
        self.output = config.output
        self.rgba, mask, self.poses = load_inputs(config)
        self.inputs = input_digests(config)
        self.image = rgba_to_tensor(self.rgba)[None].to(world.device)
        self.face_mask = torch.from_numpy(mask[FACE_ROWS, FACE_COLS]).float()[None, None].to(world.device)
        if config.teacher_dtype in ("float16", "bfloat16") and world.device.type == "cpu":
            raise ThaError(f"teacher_dtype {config.teacher_dtype} is for CUDA devices; on a CPU use float32")
        self.teacher: DistillTeacher = open_teacher(config.teacher, config.path, world.device,
                                                    DTYPES[config.teacher_dtype])
        self.teacher_dtype = DTYPES[config.teacher_dtype]
        self.held_out = self.poses.sample(config.num_sample_poses,
                                          torch.Generator().manual_seed(HELD_OUT_SEED)).to(world.device)
        self.face = FaceMorpher(face_config(config, config.face.resolution)).to(world.device)
        self.body = BodyMorpher(body_config(config, config.body.resolution)).to(world.device)
        if config.body.ignore_face_pose:
            hold_face_pose_at_zero(self.body)
        # per stage: [examples, loss] after every step, [examples, held-out PSNR] at every sample;
        # psnr["start"]: the whole student as initialised, before any training
        self.history: dict[str, list[list[float]]] = {name: [] for name in STAGES}
        self.psnr: dict[str, list[list[float]]] = {name: [] for name in (*STAGES, "start")}
        self.warned_missing = False
        # wall-clock seconds of the run (over resumes) at each PSNR entry: the third column
        self.clock, self.seconds_before = time.perf_counter(), 0.0
        self.teacher_seconds = 0.0  # spent rendering buffers, this process: what reuse saves

    # --- teacher calls ---------------------------------------------------------------
    def _teach(self, fn, pose: Tensor):
        return fn(self.image.to(self.teacher_dtype), pose.to(self.teacher_dtype))

    def _coords(self, size: int, pixels: Tensor | None) -> Tensor | None:
        return gather(position_grid(size, device=self.world.device), pixels)

    def face_targets(self, pose: Tensor):
        target = self._teach(self.teacher.face_target, pose).float()
        size = self.config.face.resolution
        return (pose[:, FACE_SLICE],), {"patch": _shrink(target, size), "mask": _shrink(self.face_mask, size)}

    def body_targets(self, pose: Tensor):
        t = self._teach(self.teacher.body_targets, pose)
        if (t.warped_image is None or t.grid_change is None) and not self.warned_missing:
            self.warned_missing = True
            warnings.warn(f"the {self.teacher.kind} teacher gives no warped image / grid change; "
                          "those loss terms are left out")
        size = self.config.body.resolution
        cast = lambda x: None if x is None else _shrink(x.float(), size)  # noqa: E731
        image = cast(t.image)
        # a pure-warp teacher (the rig) returns one tensor as both: shrink it once
        warped = image if t.warped_image is t.image else cast(t.warped_image)
        return (cast(t.input_image), pose), {"image": image, "warped": warped, "grid_change": cast(t.grid_change)}

    # --- losses -----------------------------------------------------------------------
    def face_loss(self, out: Tensor, t: dict[str, Tensor], examples: int):
        full = _l1(out, t["patch"])
        masked = (t["mask"] * (out - t["patch"])).abs().mean()
        return full + self.config.face.mask_weight * masked, {"l1": full, "masked_l1": masked}

    def body_phase(self, examples: int):
        return next((p for p in self.config.body.phases if examples < p.end), self.config.body.phases[-1])

    def body_loss(self, out, t: dict[str, Tensor], examples: int):
        p = self.body_phase(examples)
        terms = {"blended": _l1(out.blended_image, t["image"]), "warped": _l1(out.warped_image, t["warped"]),
                 "grid_change": _l1(out.grid_change, t["grid_change"]),
                 "color_change": _l1(out.color_change, t["image"])}
        total = (p.blended * terms["blended"] + p.warped * terms["warped"]
                 + p.grid_change * terms["grid_change"] + p.color_change * terms["color_change"])
        return total, terms

    def face_lr(self, examples: int) -> float:
        f = self.config.face
        factor = 1.0
        for at, drop in zip(f.lr_drop_at, f.lr_drop_factor):
            if examples >= at:
                factor = drop
        return f.learning_rate / factor

    # --- held-out evaluation at full size --------------------------------------------------
    @torch.no_grad()
    def evaluate_face(self, module: nn.Module, pose: Tensor):
        student = full_face(self.config, module)
        teacher = self._teach(self.teacher.face_target, pose).float()
        return teacher, student(pose[:, FACE_SLICE])

    @torch.no_grad()
    def evaluate_body(self, module: nn.Module, pose: Tensor):
        student = StudentPoser(full_face(self.config, self.face), full_body(self.config, module))
        teacher = self._teach(self.teacher.body_targets, pose).image.float()
        return teacher, student.pose(self.image, pose)

    def stages(self) -> list[Stage]:
        c = self.config
        return [
            Stage(name="face", module=self.face, batch_size=c.face_morpher_batch_size,
                  num_examples=c.face.num_examples,
                  sample_every=c.face_morpher_num_training_examples_per_sample_output,
                  pixels_per_example=c.face.pixels_per_example, resolution=c.face.resolution,
                  seed_0=c.face_morpher_random_seed_0, seed_1=c.face_morpher_random_seed_1,
                  learning_rate=self.face_lr, targets=self.face_targets, loss=self.face_loss,
                  evaluate=self.evaluate_face),
            Stage(name="body", module=self.body, batch_size=c.body_morpher_batch_size,
                  num_examples=c.body.num_examples,
                  sample_every=c.body_morpher_num_training_examples_per_sample_output,
                  pixels_per_example=c.body.pixels_per_example, resolution=c.body.resolution,
                  seed_0=c.body_morpher_random_seed_0, seed_1=c.body_morpher_random_seed_1,
                  learning_rate=lambda n: self.body_phase(n).learning_rate, targets=self.body_targets,
                  loss=self.body_loss, evaluate=self.evaluate_body,
                  ignore_face_pose=c.body.ignore_face_pose, patch_size=c.body.patch_size),
        ]

    # --- the run ----------------------------------------------------------------------------
    def run(self, resume: bool) -> Path:
        snapshot = self._start(resume)
        start = STAGES.index(snapshot["stage"]) if snapshot else 0
        if snapshot:
            self.face.load_state_dict(snapshot["face_morpher"])
            self.body.load_state_dict(snapshot["body_morpher"])
            self.history, self.psnr = snapshot["history"], snapshot["psnr"]
            self.seconds_before = snapshot.get("seconds", 0.0)
        writer = self._writer()
        if snapshot is None:
            self._record_start()
        for stage in self.stages()[start:]:
            resumed = snapshot if snapshot and snapshot["stage"] == stage.name else None
            self.train_stage(stage, resumed, writer)
            snapshot = None
        model_dir = self.output / MODEL_DIR
        if self.world.main:
            face, body = full_face(self.config, self.face), full_body(self.config, self.body)
            CharacterModel(self.rgba, face.cpu(), body.cpu()).save(model_dir)
            writer.close()
        return model_dir

    @torch.no_grad()
    def _record_start(self) -> None:
        """Held-out PSNR of the whole student as its stages will initialise it: where the
        learning curve starts."""
        if not self.world.main:
            return
        face_stage, body_stage = self.stages()
        self.face.load_state_dict(fresh_module(face_stage).state_dict())
        self.body.load_state_dict(fresh_module(body_stage).state_dict())
        value = psnr(*self.evaluate_body(self.body, self.held_out))
        self.psnr["start"] = [[0.0, value, self._seconds()]]
        tqdm.write(f"student as initialised: held-out PSNR {value:.2f} dB")

    def _start(self, resume: bool) -> dict | None:
        snapshot = check_start(self.config, resume)
        if self.world.main:
            self.output.mkdir(parents=True, exist_ok=True)
        return snapshot

    def _writer(self):
        if not self.world.main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.output / "tensorboard"))

    def start_stage(self, stage: Stage, snapshot: dict | None = None) -> StageRun:
        """The stage's module, optimizer and generators as a fresh stage starts them, or as
        ``snapshot`` left them (with the buffer it was drawing from rendered again)."""
        world, config = self.world, self.config
        if snapshot is None:  # fresh stage; its first snapshot marks the start
            stage.module.load_state_dict(fresh_module(stage).state_dict())
        module = _wrap(stage.module, world)
        optimizer = torch.optim.Adam(module.parameters(), lr=stage.learning_rate(0), betas=(0.9, 0.999))
        run = StageRun(stage, module, optimizer, torch.Generator().manual_seed(stage.seed_0),
                       torch.amp.GradScaler(enabled=config.precision == "fp16"),
                       _autocast(config.precision, world.device))
        if snapshot is None:
            return run
        optimizer.load_state_dict(snapshot["optimizer"])
        run.generator.set_state(snapshot["generator"])
        if snapshot["scaler"]:
            run.scaler.load_state_dict(snapshot["scaler"])
        set_rng_state(snapshot["rng"])
        run.examples = snapshot["examples"]
        # a finished stage renders nothing; otherwise re-render the buffer the snapshot was
        # drawing from, then go on where it stopped
        if run.examples < stage.num_examples and snapshot.get("fill_state") is not None:
            run.fill_state, run.fill_step = snapshot["fill_state"], snapshot["fill_step"]
            run.generator.set_state(run.fill_state)
            run.fill = self._fill(stage, run.generator, world)
            run.generator.set_state(snapshot["generator"])
        return run

    def step(self, run: StageRun) -> tuple[dict[str, float], float]:
        """One student step, rendering the next teacher buffer first when the last is used up;
        returns the loss and its terms (as "loss" and the terms' names, means over ranks) and
        the learning rate."""
        stage, world = run.stage, self.world
        if run.fill is None or run.fill_step >= len(run.fill.order):
            run.fill_state, run.fill_step = run.generator.get_state(), 0
            run.fill = self._fill(stage, run.generator, world)
        global_batch = stage.batch_size * world.size
        pixels = stage_pixels(stage, run.generator, global_batch, world)
        inputs, targets = run.fill.batch(run.fill_step, pixels, self._coords(stage.resolution, pixels))
        run.fill_step += 1
        lr = stage.learning_rate(run.examples)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.optimizer.zero_grad(set_to_none=True)
        if stage.patch_size:
            inputs = (*inputs, stage.patch_size)
        with run.autocast:
            out = run.module(*inputs)
        loss, terms = stage.loss(_to_float(out), targets, run.examples)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.examples += global_batch
        return _mean_over_ranks({"loss": loss, **terms}, world), lr

    def train_stage(self, stage: Stage, snapshot: dict | None, writer) -> None:
        world, config = self.world, self.config
        run = self.start_stage(stage, snapshot)
        if run.examples >= stage.num_examples:
            return
        global_batch = stage.batch_size * world.size
        # closed however the loop ends, so what is printed after a Ctrl+C starts its own line
        with tqdm(total=stage.num_examples, initial=run.examples, unit="ex", unit_scale=True,
                  desc=f"{stage.name} morpher", disable=not world.main, dynamic_ncols=True) as bar:
            last_snapshot, last_sample = run.examples // config.snapshot_every, run.examples // stage.sample_every
            started, started_at, teacher_before = time.perf_counter(), run.examples, self.teacher_seconds
            if run.examples == 0:
                self._sample(stage, run.module, run.examples, writer)
            while run.examples < stage.num_examples:
                values, lr = self.step(run)
                value, examples = values["loss"], run.examples
                self.history[stage.name].append([float(examples), value])
                bar.update(global_batch)
                elapsed = max(time.perf_counter() - started, 1e-9)
                rate = (examples - started_at) / elapsed
                bar.set_postfix(loss=f"{value:.4g}", lr=f"{lr:.2g}")
                if world.main and writer is not None:
                    for name, term in values.items():
                        writer.add_scalar(f"{stage.name}/{name}", term, examples)
                    writer.add_scalar(f"{stage.name}/learning_rate", lr, examples)
                    writer.add_scalar(f"{stage.name}/examples_per_s", rate, examples)
                if examples // stage.sample_every > last_sample or examples >= stage.num_examples:
                    last_sample = examples // stage.sample_every
                    if world.main:
                        eta = (stage.num_examples - examples) / max(rate, 1e-9)
                        teacher = (self.teacher_seconds - teacher_before) / elapsed
                        tqdm.write(f"{stage.name} morpher: {rate:.1f} examples/s (teacher {teacher:.0%} of the "
                                   f"time), ETA {eta / 60:.1f} min")
                    self._sample(stage, run.module, examples, writer)
                if examples // config.snapshot_every > last_snapshot or examples >= stage.num_examples:
                    last_snapshot = examples // config.snapshot_every
                    self._snapshot(stage.name, examples, run.optimizer, run.generator, run.scaler,
                                   run.fill_state if run.fill_step < len(run.fill.order) else None, run.fill_step)

    def _snapshot(self, stage: str, examples: int, optimizer, generator, scaler,
                  fill_state: Tensor | None = None, fill_step: int = 0) -> None:
        if not self.world.main:
            return
        save_snapshot(self.output, {
            "stage": stage, "examples": examples, "config": config_yaml(self.config), "inputs": self.inputs,
            "face_morpher": _cpu(self.face.state_dict()), "body_morpher": _cpu(self.body.state_dict()),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": rng_state(),
            "history": self.history, "psnr": self.psnr, "seconds": self._seconds(), "fill_state": fill_state, "fill_step": fill_step,
        })

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.clock

    def _fill(self, stage: Stage, generator: torch.Generator, world: World) -> ExampleBuffer:
        """Render one buffer of teacher examples (this rank's slice of a global draw) in calls
        of at most teacher_batch_size, and the order the next student steps take them in."""
        c, start = self.config, time.perf_counter()
        per_rank = max(stage.batch_size, c.teacher_batch_size * c.buffer_batches // stage.batch_size * stage.batch_size)
        poses = stage_poses(self.poses, generator, per_rank * world.size, world).to(world.device)
        chunks = poses.split(c.teacher_batch_size)
        parts = [stage.targets(chunk) for chunk in chunks]
        sizes = [len(chunk) for chunk in chunks]
        inputs = tuple(torch.cat(xs) for xs in zip(*(p[0] for p in parts)))
        targets = {k: _cat([p[1][k] for p in parts], sizes) for k in parts[0][1]}
        if world.device.type == "cuda":  # the renders are queued, not done; once per buffer
            torch.cuda.synchronize(world.device)
        self.teacher_seconds += time.perf_counter() - start
        return ExampleBuffer(inputs, targets, draw_order(per_rank, stage.batch_size, c.reuse, generator))

    def _sample(self, stage: Stage, module: nn.Module, examples: int, writer) -> None:
        if not self.world.main:
            return
        teacher, student = stage.evaluate(module, self.held_out)
        value = psnr(student, teacher)
        self.psnr[stage.name].append([float(examples), value, self._seconds()])
        write_samples(self.output / "samples" / f"{stage.name}_{examples:09d}.png", teacher, student)
        if writer is not None:
            writer.add_scalar(f"{stage.name}/psnr_held_out", value, examples)
            writer.flush()
        tqdm.write(f"{stage.name} morpher: {examples} examples, held-out PSNR {value:.2f} dB "
                   f"at {self._seconds() / 60:.2f} min")


def load_inputs(config: DistillConfig):
    """The character image (RGBA), its face mask and the pose source, checked."""
    rgba = load_character(resolve_input(config, config.character_image_file_name, "character_image_file_name"))
    mask = load_face_mask(resolve_input(config, config.face_mask_image_file_name, "face_mask_image_file_name"))
    return rgba, mask, pose_source(config.poses, config.path)


def check_start(config: DistillConfig, resume: bool) -> dict | None:
    """The snapshot a run continues from (None for a new run), refusing to overwrite a run
    without --resume or to resume one that is not there or was started with another config."""
    output = config.output
    check_output_dir(output, "prefix")
    # checked now: a file in the way of the model used to fail only after the whole training
    for name, folder in ((MODEL_DIR, True), ("samples", True), ("tensorboard", True), (SNAPSHOT, False)):
        path = output / name
        if path.exists() and path.is_dir() != folder:
            raise ThaError(f"{path} is a {'file' if folder else 'folder'} where the run writes its {name}; "
                           "move it away or change `prefix`")
    snapshot = load_snapshot(output)
    if resume and snapshot is None:
        raise ThaError(f"--resume: no {SNAPSHOT} in {output}; start without --resume")
    if not resume and snapshot is not None:
        raise ThaError(f"{output} already holds a run ({SNAPSHOT}); pass --resume to continue it, "
                       "or change `prefix` to start a new one")
    if snapshot is not None and snapshot["config"] != config_yaml(config):
        raise ThaError(f"{output / SNAPSHOT} was written with a different config; resume with the "
                       "config it was started with, or change `prefix` to start a new run")
    if snapshot is not None:  # the same config text can name files whose content has changed since
        changed = [key for key, digest in input_digests(config).items()
                   if snapshot.get("inputs", {}).get(key, digest) != digest]
        if changed:
            raise ThaError(f"{', '.join(changed)} changed since {output / SNAPSHOT} was written; put the "
                           "old file back to resume, or change `prefix` to start a new run")
    return snapshot


def input_digests(config: DistillConfig) -> dict[str, str]:
    """sha256 of the files a run learns from, kept in each snapshot."""
    keys = ["character_image_file_name", "face_mask_image_file_name"]
    if config.poses not in ("sampler", "animator"):
        keys.append("poses")
    paths = {key: resolve_input(config, getattr(config, key), key) for key in keys}
    return {key: sha256_file(path) for key, path in paths.items() if path.is_file()}  # else loading says so


def stage_poses(source, generator: torch.Generator, global_batch: int, world: World) -> Tensor:
    """Every rank draws the same global batch (one generator state to snapshot) and keeps its slice."""
    poses = source.sample(global_batch, generator)
    per_rank = global_batch // world.size
    return poses[world.rank * per_rank:(world.rank + 1) * per_rank]


def stage_pixels(stage: Stage, generator: torch.Generator, global_batch: int, world: World) -> Tensor | None:
    """Flat indices (per-rank batch, K) of K random pixels per example (with replacement; as
    patches with the stage's patch_size), drawn from the stage's generator like the poses so a
    resumed run draws the same ones."""
    if not stage.pixels_per_example:
        return None
    if stage.patch_size:
        pixels = patch_pixels(generator, global_batch, stage.pixels_per_example, stage.patch_size, stage.resolution)
    else:
        pixels = torch.randint(stage.resolution ** 2, (global_batch, stage.pixels_per_example), generator=generator)
    per_rank = global_batch // world.size
    return pixels[world.rank * per_rank:(world.rank + 1) * per_rank].to(world.device)


def patch_pixels(generator: torch.Generator, count: int, pixels: int, patch: int, size: int) -> Tensor:
    """Flat indices (count, pixels) of pixels / patch^2 square patches per example of a ``size``
    grid, each row-major, one after another. Corners are drawn from -(patch-1) to size-1 and
    clamped inside, so a pixel on the image's edge is drawn as often as one inside (those
    within a patch of the edge up to twice as often); unclamped corners would draw an edge
    pixel `patch` times less often, and a body reaches the bottom edge."""
    corner = torch.randint(1 - patch, size, (count, pixels // (patch * patch), 2), generator=generator)
    corner = corner.clamp(0, size - patch)
    steps = torch.arange(patch)
    rows = corner[..., 1, None, None] + steps[:, None]
    columns = corner[..., 0, None, None] + steps
    return (rows * size + columns).flatten(1)


def fresh_module(stage: Stage) -> nn.Module:
    """The stage's module as training starts it, seeded by the stage's second seed. The body's
    output layer is zeroed: it starts as the unposed image (no warp, no blend) and learns the
    change, instead of first unlearning a random warp."""
    torch.manual_seed(stage.seed_1)
    module = type(stage.module)(stage.module.config).to(_device(stage.module))
    if isinstance(module, BodyMorpher):
        with torch.no_grad():
            module.last_linear.weight.zero_()
            module.last_linear.bias.zero_()
            if stage.ignore_face_pose:
                for weight in face_pose_weights(module):
                    weight.zero_()
    return module


def _face_pose_columns(body: BodyMorpher, level: int) -> slice:
    pose = body.pose_columns(level)
    return slice(pose.start, pose.start + FACE_SLICE.stop)


def face_pose_weights(body: BodyMorpher) -> list[Tensor]:
    """Views of each level's first-layer weights on the face parameters."""
    return [layers[0].linear.weight[:, _face_pose_columns(body, level)]
            for level, layers in enumerate(body.siren_layers)]


def hold_face_pose_at_zero(body: BodyMorpher) -> None:
    """Zero ``body``'s face-pose weights and their gradients from now on (Adam then never moves them)."""
    with torch.no_grad():
        for weight in face_pose_weights(body):
            weight.zero_()
    for level, layers in enumerate(body.siren_layers):
        columns = _face_pose_columns(body, level)

        def drop_face_pose(grad: Tensor, columns: slice = columns) -> Tensor:
            grad = grad.clone()
            grad[:, columns] = 0.0
            return grad

        layers[0].linear.weight.register_hook(drop_face_pose)


def _wrap(module: nn.Module, world: World) -> nn.Module:
    if world.size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _to_float(out):
    if isinstance(out, Tensor):
        return out.float()
    return type(out)(*(x.float() for x in out))


def _mean_over_ranks(values: dict[str, Tensor], world: World) -> dict[str, float]:
    """The values' means over ranks, read back in one device sync (not one per value)."""
    stacked = torch.stack([v.detach().float() for v in values.values()])
    if world.size > 1:
        dist.all_reduce(stacked)
        stacked /= world.size
    return dict(zip(values, stacked.tolist()))


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ThaError(f"device {name} asked for, but no CUDA device is available; set `device: cpu`")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise ThaError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def distill(config: DistillConfig, resume: bool = False, world: World | None = None) -> Path:
    world = world or World(device=resolve_device(config.device))
    return Distiller(config, world).run(resume)
