"""`tha pose`, `tha info`, `tha models fetch|list`, `tha teacher pose|random-weights`."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional, Sequence

import typer

from tha.runtime.options import Device, ModelDir


class DtypeChoice(str, Enum):
    float32 = "float32"
    float64 = "float64"


# Options `tha pose` and `tha teacher pose` share: the same pose in, the same files out.
SetValues = Annotated[List[str], typer.Option("--set", help="NAME=VALUE, repeatable, applied after --pose-file.")]
PoseFile = Annotated[Optional[Path], typer.Option("--pose-file", help="JSON object of parameter name -> value.")]
Output = Annotated[Path, typer.Option("-o", "--output", help="PNG to write (straight-alpha RGBA).")]
SaveTensor = Annotated[Optional[Path], typer.Option(
    "--save-tensor", help="Also write the raw (4,512,512) [-1,1] output as .npy.")]
StrictRange = Annotated[bool, typer.Option(
    "--strict-range", help="Refuse out-of-range values instead of clamping them with a warning.")]
Dtype = Annotated[DtypeChoice, typer.Option(
    "--dtype", help="Floating-point type torch computes in (float64 for comparisons with references).")]


def _checked_request(output: Path, save_tensor: Optional[Path], inputs: Sequence[Path], assignments: list[str],
                     pose_file: Optional[Path], strict_range: bool, dtype: DtypeChoice):
    """What both pose commands check before any work (a bad path or pose costs nothing):
    the output paths (none of them an input, nor each other), then the pose vector and the
    torch dtype."""
    import torch

    from tha.models.files import check_not_input, check_png_output, check_suffixed_output, writes_through
    from tha.models.pose import load_pose_file, neutral_pose, parse_assignments

    check_png_output(output, "-o")
    check_not_input(output, inputs, "-o")
    if save_tensor is not None:
        # np.save into an open file keeps any name, so a .txt or extension-less tensor would
        # be written as asked and then opened as the wrong kind of file.
        check_suffixed_output(save_tensor, "--save-tensor", ".npy", "a NumPy array")
        check_not_input(save_tensor, inputs, "--save-tensor")
        if not writes_through(output):  # -o /dev/null --save-tensor /dev/null replaces nothing
            check_not_input(save_tensor, [output], "--save-tensor")
    base = load_pose_file(pose_file, clamp=not strict_range) if pose_file else neutral_pose()
    return parse_assignments(assignments, base=base, clamp=not strict_range), getattr(torch, dtype.value)


def _pose_and_write(poser, source, pose_vec, device: str, dtype, output: Path, save_tensor: Optional[Path]) -> None:
    """Pose ``source`` (C,H,W) with ``poser`` and write the PNG (and the raw tensor)."""
    import numpy as np
    import torch

    from tha.models.files import atomic_path
    from tha.models.image import save_png, tensor_to_rgba

    with torch.no_grad():
        pose = torch.from_numpy(pose_vec)[None].to(device, dtype)
        out = poser.pose(source[None].to(device), pose)[0].cpu()
    save_png(output, tensor_to_rgba(out))
    if save_tensor is not None:
        with atomic_path(save_tensor) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out.numpy())
    typer.echo(f"wrote {output}" + (f" and {save_tensor}" if save_tensor is not None else ""))


def pose(
    model_dir: ModelDir,
    set_: SetValues = [],
    pose_file: PoseFile = None,
    output: Output = Path("posed.png"),
    save_tensor: SaveTensor = None,
    strict_range: StrictRange = False,
    dtype: Dtype = DtypeChoice.float32,
    device: Device = "cpu",
) -> None:
    """Render one posed frame of a student to a PNG."""
    from tha.models.character import load_character_model, model_files
    from tha.models.hub import resolve_model
    from tha.models.poser import StudentPoser

    directory = resolve_model(model_dir)
    pose_vec, torch_dtype = _checked_request(output, save_tensor, model_files(directory), set_, pose_file,
                                             strict_range, dtype)
    model = load_character_model(directory)
    poser = StudentPoser.from_model(model).to(device, torch_dtype)
    _pose_and_write(poser, model.image_tensor(torch_dtype), pose_vec, device, torch_dtype, output, save_tensor)


def info(model_dir: ModelDir) -> None:
    """Describe a character model: files, networks, image, parameters.

    File sizes, network sizes and settings, an image check, and the 45 pose parameters."""
    from rich.console import Console
    from rich.table import Table

    from tha.models.character import load_character_model, model_paths
    from tha.models.hub import resolve_model
    from tha.models.pose import POSE_PARAMETERS

    directory = resolve_model(model_dir)
    paths = model_paths(directory)
    model = load_character_model(directory)
    console = Console()
    console.print(f"[bold]{directory}[/bold]")
    for key, path in paths.items():
        console.print(f"  {key}: {path.name} ({path.stat().st_size / 1e6:.2f} MB)")
    for label, net in (("face morpher", model.face_morpher), ("body morpher", model.body_morpher)):
        count = sum(p.numel() for p in net.parameters())
        console.print(f"  {label}: {count:,} parameters, {net.config}")
    alpha = model.image_rgba[..., 3]
    console.print(f"  image: {model.image_rgba.shape[1]}x{model.image_rgba.shape[0]} RGBA, "
                  f"{(alpha > 0).mean() * 100:.1f}% opaque pixels, "
                  f"corners transparent: {bool((alpha[[0, 0, -1, -1], [0, -1, 0, -1]] == 0).all())}")
    table = Table("index", "name", "category", "range", "default")
    for p in POSE_PARAMETERS:
        table.add_row(str(p.index), p.name, p.category.value, f"[{p.lower:g}, {p.upper:g}]", f"{p.default:g}")
    console.print(table)


# `fetch` and `list` look in the same place.
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Where models live (default: ~/.cache/tha/models, or $THA_HOME/models).")]
models_app = typer.Typer(no_args_is_help=True, help="Upstream's public student models: fetch, list.")


@models_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="lambda_00 or lambda_01."),
    cache: CacheDir = None,
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Mirror to download from: an http(s) or file:// URL or a folder, laid out as upstream's data/character_models (default: upstream; $THA_MODELS_URL)."),
) -> None:
    """Download a model into the cache and print its directory.

    Every file is verified by its sha256."""
    from tha.models.hub import fetch_model

    target = fetch_model(name, cache, base_url, progress=lambda f, n: typer.echo(f"  {f} ({n / 1e6:.2f} MB)", err=True))
    typer.echo(str(target))


@models_app.command("list")
def list_models(cache: CacheDir = None) -> None:
    """List the models `tha models fetch` knows and where they are cached."""
    from tha.models.hub import MODELS, cache_dir, check_cache_root, download_state

    root = check_cache_root(cache or cache_dir())
    for name in MODELS:
        typer.echo(f"{name}\t{download_state(name, root)}\t{root / name}")


teacher_app = typer.Typer(no_args_is_help=True, help="The THA4 teacher: pose, export, random weights.")


@teacher_app.command("random-weights")
def random_weights(
    directory: Path = typer.Argument(..., help="New (or empty) folder to write eyebrow_decomposer.pt … upscaler.pt into; one this command wrote is replaced whole."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="teacher_state_dict_manifest.json to take keys and shapes from (default: our own networks, which match it)."),
) -> None:
    """Write a teacher with the SPEC's deterministic weights.

    For conformance work: it is not a trained teacher, and its images are noise."""
    from tha.models.teacher import NETWORKS, deterministic_state_dict, load_manifest, write_teacher_directory
    from tha.models.teacher.load import check_teacher_target

    check_teacher_target(directory, "DIR")  # before the seconds of work, not after
    entries = load_manifest(manifest) if manifest is not None else {}
    states = {}
    for name in NETWORKS:
        states[name] = deterministic_state_dict(name, entries.get(name))
        typer.echo(f"  {name}.pt ({sum(v.numel() for v in states[name].values()):,} values)", err=True)
    typer.echo(str(write_teacher_directory(directory, states)))


@teacher_app.command("pose")
def teacher_pose(
    teacher: Path = typer.Argument(..., help="Directory of upstream's teacher .pt files."),
    image: Path = typer.Argument(..., help="Character PNG (or a (4,512,512) .npy tensor as --save-tensor writes)."),
    set_: SetValues = [],
    pose_file: PoseFile = None,
    output: Output = Path("posed.png"),
    save_tensor: SaveTensor = None,
    strict_range: StrictRange = False,
    dtype: Dtype = DtypeChoice.float32,
    device: Device = "cpu",
) -> None:
    """Render one posed frame with the THA4 teacher to a PNG."""
    from tha.models.teacher import load_teacher_image, load_teacher_poser

    pose_vec, torch_dtype = _checked_request(output, save_tensor, [image], set_, pose_file, strict_range, dtype)
    poser = load_teacher_poser(teacher, dtype=torch_dtype, device=device)
    _pose_and_write(poser, load_teacher_image(image, torch_dtype), pose_vec, device, torch_dtype, output, save_tensor)


def register(app: typer.Typer) -> None:
    app.command("pose")(pose)
    app.command("info")(info)
    app.add_typer(models_app, name="models")
    app.add_typer(teacher_app, name="teacher")
