"""The distiller's YAML config: upstream's fields exactly as its distiller UI writes them,
plus ours (teacher source, student sizes, poses, example counts, device, precision).

Defaults are the SPEC's upstream schedule; every number can be overridden in the YAML.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from tha.models.errors import ThaError
from tha.models.limits import MAX_STUDENT_CHANNELS
from tha.models.settings import load_settings

UINT64_MAX = 2**64 - 1
MAX_SINE_LAYERS = 64  # upstream's students have 8 (face) and 3 a level (body)
SEED_FIELDS = ("face_morpher_random_seed_0", "face_morpher_random_seed_1",
               "body_morpher_random_seed_0", "body_morpher_random_seed_1")


@dataclass
class FaceStudent:
    channels: int = 128
    num_sine_layers: int = 8


@dataclass
class BodyStudent:
    # One width per level; level sizes follow as 512 >> (levels-1-i), as on load.
    level_channels: list[int] = field(default_factory=lambda: [360, 180, 90])
    sine_layers_per_level: int = 3


@dataclass
class FaceSchedule:
    num_examples: int = 1_000_000
    learning_rate: float = 1e-4
    # The rate is divided by each factor from the example count beside it on.
    lr_drop_at: list[int] = field(default_factory=lambda: [200_000, 500_000, 800_000])
    lr_drop_factor: list[float] = field(default_factory=lambda: [3.0, 10.0, 30.0])
    mask_weight: float = 20.0
    # Train at a lower resolution than 128 (cheap CPU runs); weights are resolution-free.
    resolution: int = 128
    # 0 (upstream): every step sees whole patches. N > 0: each example trains on N random
    # pixels of the `resolution` grid, drawn afresh every step: the cost of a coarse grid
    # without its aliasing when the SIREN is evaluated at 128.
    pixels_per_example: int = 0


@dataclass
class BodyPhase:
    end: int
    learning_rate: float
    blended: float
    warped: float
    grid_change: float
    color_change: float


def _upstream_phases() -> list[BodyPhase]:
    weights = [(0.25, 0.25, 0.5, 2.0)] * 2 + [(1.0, 2.5, 5.0, 1.0)] * 2 + [(10.0, 1.0, 1.0, 1.0)] * 2
    ends = [200_000, 400_000, 600_000, 800_000, 1_300_000, 1_500_000]
    rates = [1e-4, 3e-5, 3e-5, 1e-5, 1e-5, 3e-6]
    return [BodyPhase(e, r, *w) for e, r, w in zip(ends, rates, weights)]


@dataclass
class BodySchedule:
    phases: list[BodyPhase] = field(default_factory=_upstream_phases)
    resolution: int = 512
    # As face.pixels_per_example, on the `resolution` grid: the last level runs at N random
    # pixels (earlier levels stay whole), the losses compare those pixels only.
    pixels_per_example: int = 0
    # P > 0: those pixels come as square P x P patches (pixels_per_example / P^2 of them per
    # example), and the coarser levels run only on the windows the patches read instead of
    # their whole grids: a body step several times cheaper (tha bench --distill), but fewer
    # places per example to learn from, so more examples to the same PSNR (4 and 8 measured
    # best of 4 to 32; about the same student in half the time on a CPU: README).
    patch_size: int = 0
    # true: the body morpher's weights on the 39 face parameters start at zero and stay there,
    # so a face change reaches the body only through the pasted face (the right model for a
    # teacher whose body stage ignores the face pose, as the rig's does). false: upstream's.
    ignore_face_pose: bool = False

    @property
    def num_examples(self) -> int:
        return self.phases[-1].end


@dataclass
class DistillConfig:
    # --- upstream's fields, as in its distill_examples/*/config.yaml ---
    prefix: str = "distill_output"
    character_image_file_name: str = ""
    face_mask_image_file_name: str = ""
    face_morpher_random_seed_0: int = 0
    face_morpher_random_seed_1: int = 0
    face_morpher_num_training_examples_per_sample_output: int = 10_000
    face_morpher_batch_size: int = 8
    body_morpher_random_seed_0: int = 0
    body_morpher_random_seed_1: int = 0
    body_morpher_num_training_examples_per_sample_output: int = 10_000
    body_morpher_batch_size: int = 8
    num_cpu_workers: int = 1  # accepted so upstream's configs load; never read
    num_gpus: int = 1  # accepted so upstream's configs load; never read (`tha distill run --nproc N` sets the GPUs)
    # --- ours ---
    # "rig", an upstream teacher directory (the five .pt files), or any character model
    # directory / fetched model name (re-distilling a student into a smaller one).
    teacher: str = ""
    # "sampler" (uniform over the SPEC ranges), "animator" (the sampler mixed with emotion presets,
    # blinks and mouth shapes, for a character the idle animator drives) or upstream's pose_dataset.pt.
    poses: str = "sampler"
    face_student: FaceStudent = field(default_factory=FaceStudent)
    body_student: BodyStudent = field(default_factory=BodyStudent)
    face: FaceSchedule = field(default_factory=FaceSchedule)
    body: BodySchedule = field(default_factory=BodySchedule)
    snapshot_every: int = 20_000
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "fp32"  # fp32, bf16, fp16 (autocast; fp16 adds a grad scaler)
    teacher_dtype: str = "float32"
    num_sample_poses: int = 4
    # The teacher renders teacher_batch_size examples per call, buffer_batches calls per fill,
    # into a buffer on the training device; student steps draw their batches from it.
    # 1 and 1 = render each step's batch (upstream).
    teacher_batch_size: int = 1
    buffer_batches: int = 1
    # Student steps per buffered example, on average: 1 = every example is seen once (upstream);
    # R > 1 trains R times on each teacher example (the teacher runs R times less often).
    reuse: int = 1
    source: Optional[str] = None  # the YAML's own path; set on load

    @property
    def directory(self) -> Path:
        """The folder every relative path of the config is resolved against (prefix, the input
        images, teacher, poses): the config's own folder, so a config works from any cwd. The
        one exception is a config like upstream's examples, written relative to upstream's
        repository root: when its relative input images are all missing beside it but found
        under the cwd, all its paths are resolved against the cwd instead."""
        folder = Path(self.source).parent if self.source else Path.cwd()
        inputs = [Path(v).expanduser() for v in (self.character_image_file_name, self.face_mask_image_file_name) if v]
        relative = [p for p in inputs if not p.is_absolute()]
        if relative and all(p.exists() and not (folder / p).exists() for p in relative):
            return Path.cwd()
        return folder

    def path(self, value: str) -> Path:
        """A path from the YAML, resolved against ``directory``."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.directory / p

    @property
    def output(self) -> Path:
        return self.path(self.prefix).resolve()


def _check(config: DistillConfig, label: str) -> None:
    for name in SEED_FIELDS:
        seed = getattr(config, name)
        if not 0 <= seed <= UINT64_MAX:
            raise ThaError(f"{label}: {name} = {seed} is out of range; seeds are unsigned 64-bit "
                           f"integers (0 to {UINT64_MAX})")
    for name in ("face_morpher_batch_size", "body_morpher_batch_size", "snapshot_every", "num_sample_poses",
                 "face_morpher_num_training_examples_per_sample_output",
                 "body_morpher_num_training_examples_per_sample_output"):
        if getattr(config, name) < 1:
            raise ThaError(f"{label}: {name} must be at least 1")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise ThaError(f"{label}: precision {config.precision!r} is not one of fp32, bf16, fp16")
    if config.teacher_dtype not in ("float32", "float64", "float16", "bfloat16"):
        raise ThaError(f"{label}: teacher_dtype {config.teacher_dtype!r} is not one of "
                       "float32, float64, float16, bfloat16")
    if config.face.num_examples < 0:
        raise ThaError(f"{label}: face.num_examples = {config.face.num_examples} is negative; "
                       "set 0 to skip the face stage or a positive example count")
    if len(config.face.lr_drop_at) != len(config.face.lr_drop_factor):
        raise ThaError(f"{label}: face.lr_drop_at has {len(config.face.lr_drop_at)} entries but "
                       f"face.lr_drop_factor {len(config.face.lr_drop_factor)}; give one factor per drop")
    for name in ("teacher_batch_size", "buffer_batches", "reuse"):
        if getattr(config, name) < 1:
            raise ThaError(f"{label}: {name} must be at least 1")
    ends = [p.end for p in config.body.phases]
    if not ends or ends != sorted(ends) or ends[0] <= 0:
        raise ThaError(f"{label}: body.phases must be non-empty with increasing `end` example counts")
    for name, resolution, full in (("face", config.face.resolution, 128), ("body", config.body.resolution, 512)):
        if resolution < 1 or full % resolution:
            raise ThaError(f"{label}: {name}.resolution {resolution} must divide {full} (e.g. {full} or {full // 4})")
    _check_students(config, label)
    _check_rates(config, label)
    for name, schedule in (("face", config.face), ("body", config.body)):
        if not 0 <= schedule.pixels_per_example <= schedule.resolution ** 2:
            raise ThaError(f"{label}: {name}.pixels_per_example must be 0 (whole images) to "
                           f"{schedule.resolution ** 2} ({name}.resolution squared)")
    patch, pixels = config.body.patch_size, config.body.pixels_per_example
    if patch < 0:
        raise ThaError(f"{label}: body.patch_size {patch} is negative; 0 draws scattered pixels, P > 0 P x P patches")
    if patch and not (0 < patch <= config.body.resolution and pixels and pixels % (patch * patch) == 0):
        raise ThaError(f"{label}: body.patch_size {patch} needs body.pixels_per_example to be a "
                       f"multiple of {patch}^2 and at most body.resolution ({config.body.resolution}) "
                       "a side; set patch_size 0 for scattered pixels")
    if not config.teacher:
        raise ThaError(f"{label}: no teacher; set `teacher:` to rig, an upstream teacher directory "
                       "or a character model directory")


def _check_students(config: DistillConfig, label: str) -> None:
    """Widths and depths the student classes can build (checked here, not as a traceback from
    deep inside the first step)."""
    face, body = config.face_student, config.body_student
    widths = {"face_student.channels": face.channels,
              **{f"body_student.level_channels[{i}]": c for i, c in enumerate(body.level_channels)}}
    for name, width in widths.items():
        if not 1 <= width <= MAX_STUDENT_CHANNELS:
            raise ThaError(f"{label}: {name} = {width} is outside 1 to {MAX_STUDENT_CHANNELS}")
    for name, layers in (("face_student.num_sine_layers", face.num_sine_layers),
                         ("body_student.sine_layers_per_level", body.sine_layers_per_level)):
        if not 1 <= layers <= MAX_SINE_LAYERS:
            raise ThaError(f"{label}: {name} = {layers} is outside 1 to {MAX_SINE_LAYERS}")
    levels = len(body.level_channels)
    # each level is half the size of the next; the coarsest must keep a pixel at body.resolution
    # (a power of two: it divides 512)
    most = config.body.resolution.bit_length()
    if not 1 <= levels <= most:
        raise ThaError(f"{label}: body_student.level_channels has {levels} levels; give 1 to {most} widths "
                       f"(each level is half the size of the next, at body.resolution {config.body.resolution})")


def _check_rates(config: DistillConfig, label: str) -> None:
    rates = {"face.learning_rate": config.face.learning_rate,
             **{f"face.lr_drop_factor[{i}]": f for i, f in enumerate(config.face.lr_drop_factor)},
             **{f"body.phases[{i}].learning_rate": p.learning_rate for i, p in enumerate(config.body.phases)}}
    # math.isfinite: inf passes `> 0` and trains a NaN student (lr=inf), or stops it (drop=inf)
    for name, value in rates.items():
        if not (value > 0 and math.isfinite(value)):
            raise ThaError(f"{label}: {name} = {value} must be positive and finite")
    weights = {"face.mask_weight": config.face.mask_weight,
               **{f"body.phases[{i}].{term}": getattr(p, term) for i, p in enumerate(config.body.phases)
                  for term in ("blended", "warped", "grid_change", "color_change")}}
    for name, value in weights.items():
        if not (value >= 0 and math.isfinite(value)):
            raise ThaError(f"{label}: {name} = {value} is a loss weight; give a finite 0 or more")


def load_config(path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    """Read and validate a distill YAML; unknown keys and bad values are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ThaError(f"config {path} does not exist; `tha distill init IMAGE MASK -o DIR` writes one")
    for item in overrides or []:
        if "=" not in item:
            raise ThaError(f"--set {item}: expected KEY=VALUE")
    config = load_settings(DistillConfig, path, str(path), overrides=overrides or ())
    config.source = str(path.resolve())
    _check(config, str(path))
    return config


def config_yaml(config: DistillConfig) -> str:
    data = OmegaConf.to_container(OmegaConf.structured(config))
    data.pop("source", None)
    return OmegaConf.to_yaml(data)
