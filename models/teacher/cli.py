"""`tha teacher random-weights`: a teacher directory anyone can make, for tests and demos."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

teacher_app = typer.Typer(no_args_is_help=True, help="THA4 teacher utilities.")


@teacher_app.command("random-weights")
def random_weights(
    directory: Path = typer.Argument(..., help="Folder to write eyebrow_decomposer.pt … upscaler.pt into."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="teacher_state_dict_manifest.json to take keys and shapes from (default: our own networks, which match it)."),
) -> None:
    """Write a teacher with the SPEC's deterministic weights (not a trained teacher: its images are noise)."""
    from tha.models.teacher import NETWORKS, deterministic_state_dict, load_manifest, write_teacher_directory

    entries = load_manifest(manifest) if manifest is not None else {}
    states = {}
    for name in NETWORKS:
        states[name] = deterministic_state_dict(name, entries.get(name))
        typer.echo(f"  {name}.pt ({sum(v.numel() for v in states[name].values()):,} values)", err=True)
    typer.echo(str(write_teacher_directory(directory, states)))
