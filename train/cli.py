"""`tha distill CONFIG.yaml [--resume] [--nproc N]` and `tha distill init IMAGE MASK -o DIR`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

HELP = """Distill a character model from a teacher, or (`tha distill init IMAGE MASK -o DIR`)
check a character image and face mask and write a commented config for it.

The run writes PREFIX/snapshot.pt (every `snapshot_every` examples), PREFIX/samples/*.png
(teacher | student | difference), PREFIX/tensorboard/ and finally PREFIX/character_model/."""


def distill(
    target: str = typer.Argument(..., metavar="CONFIG.yaml | init", help="The run's YAML config, or `init`."),
    inputs: Optional[List[Path]] = typer.Argument(None, metavar="[IMAGE MASK]", help="For `init`: the character PNG and its face mask PNG."),
    resume: bool = typer.Option(False, "--resume", help="Continue from PREFIX/snapshot.pt exactly where it stopped."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel workers through torchrun (NCCL on GPU, gloo on CPU)."),
    set_: List[str] = typer.Option([], "--set", help="KEY=VALUE override of a config field (dotted for nested: face.num_examples=1000)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="For `init`: the folder for config.yaml and preview.png."),
    teacher: str = typer.Option("rig", "--teacher", help="For `init`: the teacher the config names (upstream teacher dir, model dir, or rig)."),
) -> None:
    from tha.models.errors import ThaError

    if target == "init":
        from tha.train.init import init_run

        if not inputs or len(inputs) != 2 or output is None:
            raise ThaError("usage: tha distill init IMAGE.png MASK.png -o DIR")
        config = init_run(inputs[0], inputs[1], output, teacher)
        typer.echo(f"inputs look right; wrote {config} and {output / 'preview.png'}")
        return
    if inputs:
        raise ThaError(f"unexpected arguments after {target}: {' '.join(map(str, inputs))}")
    from tha.train.config import load_config

    config = load_config(target, set_)  # fail fast, before any worker starts
    if nproc > 1:
        from tha.train.ddp import launch

        launch(Path(target), resume, nproc, set_)
        typer.echo(f"done: {config.output / 'character_model'}")
        return
    from tha.train.distill import distill as run

    model_dir = run(config, resume)
    typer.echo(f"done: {model_dir}")


def register(app: typer.Typer) -> None:
    app.command("distill", help=HELP)(distill)
