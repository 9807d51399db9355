"""`tha distill init IMAGE MASK -o DIR`: check the inputs, draw a preview, write a config
(the job of upstream's distiller UI)."""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import numpy as np
import yaml

from tha.models.errors import ThaError
from tha.models.files import atomic_write_text, check_output_dir
from tha.models.hub import MODELS
from tha.models.image import save_png
from tha.models.poser import FACE_COLS, FACE_ROWS
from tha.train.inputs import load_character, load_face_mask

CONFIG_TEMPLATE = """\
# tha distill config for {name}. Run: tha distill run {config}
# Upstream's fields (its distiller UI writes the same ones):
prefix: {prefix}                      # output folder: snapshot, samples/, tensorboard/, character_model/
character_image_file_name: {image}    # 512x512 RGBA, transparent background, head in the face box
face_mask_image_file_name: {mask}     # 512x512 RGB, 0/255 only, white = face
face_morpher_random_seed_0: {s0}      # pose order (unsigned 64-bit)
face_morpher_random_seed_1: {s1}      # weight initialisation
face_morpher_num_training_examples_per_sample_output: 10000
face_morpher_batch_size: 8
body_morpher_random_seed_0: {s2}
body_morpher_random_seed_1: {s3}
body_morpher_num_training_examples_per_sample_output: 10000
body_morpher_batch_size: 8
num_cpu_workers: 1
num_gpus: 1                           # informational; use `tha distill run CONFIG --nproc N`
# Ours:
teacher: {teacher}                    # upstream teacher dir (5 .pt files), a character model dir, or rig
poses: sampler                        # or upstream's pose_dataset.pt
device: auto                          # auto, cpu, cuda, cuda:N
precision: fp32                       # fp32, bf16 or fp16 (autocast) for the student
snapshot_every: 20000                 # examples between snapshots (a kill loses at most this many)
# Student sizes (upstream's: face 8x128, body levels 360/180/90 with 3 sine layers):
face_student: {{channels: 128, num_sine_layers: 8}}
body_student: {{level_channels: [360, 180, 90], sine_layers_per_level: 3}}
# Schedules default to upstream's (face 1M examples, body 1.5M in six phases); override e.g.
# face: {{num_examples: 200000}}
"""


def preview(rgba: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The character over a checkerboard, the face mask tinted, the face box outlined in red."""
    y, x = np.mgrid[0:rgba.shape[0], 0:rgba.shape[1]]
    checker = np.where(((y // 16) + (x // 16)) % 2 == 0, 235, 200)[..., None].astype(np.float64)
    alpha = rgba[..., 3:4] / 255.0
    out = rgba[..., :3] * alpha + checker * (1 - alpha)
    out[mask] = 0.6 * out[mask] + 0.4 * np.array([60.0, 160.0, 255.0])
    top, bottom, left, right = FACE_ROWS.start, FACE_ROWS.stop - 1, FACE_COLS.start, FACE_COLS.stop - 1
    for r in (top, bottom):
        out[r - 1:r + 2, left:right + 1] = (255, 0, 0)
    for c in (left, right):
        out[top:bottom + 1, c - 1:c + 2] = (255, 0, 0)
    return np.concatenate([out.round().astype(np.uint8), np.full(mask.shape + (1,), 255, np.uint8)], axis=-1)


def _quoted(value: object) -> str:
    """A YAML scalar for any path: ` #`, `:` or leading quotes in it stay part of the value, and
    so does `${` (escaped, with any backslashes before it doubled, so OmegaConf does not read an
    interpolation)."""
    escaped = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", str(value))
    return yaml.safe_dump(escaped, default_style='"', width=1 << 16).strip()


def _teacher(teacher: str) -> str:
    """`rig`, a fetched model's name, or a path made absolute, so the config works from any
    folder; a path that is not there is refused now, not when the run starts."""
    path = Path(teacher).expanduser()
    if teacher == "rig" or (teacher in MODELS and not path.exists()):
        return teacher
    if not path.exists():
        raise ThaError(f"--teacher {teacher} does not exist; give rig, an upstream teacher folder, a "
                       f"character model folder or a model name ({', '.join(MODELS)})")
    return str(path.resolve())


def init_run(image: Path, mask: Path, directory: Path, teacher: str) -> Path:
    """Check the inputs, write DIR/preview.png and DIR/config.yaml; return the config path."""
    if directory.suffix.lower() in (".yaml", ".yml"):  # it would become a folder named config.yaml
        raise ThaError(f"-o {directory} names a YAML file, but -o is the run's folder (config.yaml and "
                       f"preview.png are written in it); give e.g. -o {directory.parent}")
    check_output_dir(directory, "-o")
    config, preview_png = directory / "config.yaml", directory / "preview.png"
    for path in (config, preview_png):  # both are the user's once written: neither is replaced
        if path.exists():
            raise ThaError(f"{path} already exists; choose another -o folder or delete it first")
    teacher = _teacher(teacher)
    rgba = load_character(image)
    face = load_face_mask(mask)
    directory.mkdir(parents=True, exist_ok=True)
    save_png(preview_png, preview(rgba, face))
    seeds = [secrets.randbits(64) for _ in range(4)]
    atomic_write_text(config, CONFIG_TEMPLATE.format(
        name=image.stem, config=config, prefix="output", image=_quoted(image.resolve()), mask=_quoted(mask.resolve()),
        s0=seeds[0], s1=seeds[1], s2=seeds[2], s3=seeds[3], teacher=_quoted(teacher)))
    return config
