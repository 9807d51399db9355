"""`tha distill init IMAGE MASK -o DIR` and `tha distill run CONFIG.yaml [--resume] [--nproc N]`."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, List

import typer

if TYPE_CHECKING:
    from tha.train.config import DistillConfig

distill_app = typer.Typer(no_args_is_help=True, help="Train a character's student from a teacher.")

RUN_HELP = """Distill a character model from a teacher, as the run's config says.

The run writes PREFIX/snapshot.pt (every `snapshot_every` examples), PREFIX/samples/*.png
(teacher | student | difference), PREFIX/tensorboard/ and finally PREFIX/character_model/."""


@distill_app.command("init")
def init(
    image: Path = typer.Argument(..., help="The character PNG (512x512 RGBA, transparent background)."),
    mask: Path = typer.Argument(..., help="Its face mask PNG (0/255, white = face)."),
    output: Path = typer.Option(..., "-o", "--output", help="The folder for config.yaml and preview.png."),
    teacher: str = typer.Option("rig", "--teacher", help="The teacher the config names (upstream teacher dir, "
                                "model dir, or rig)."),
) -> None:
    """Check a character image and face mask; write a config for them.

    Writes DIR/config.yaml (commented) and DIR/preview.png (the face box and mask drawn on the image)."""
    from tha.train.init import init_run

    config = init_run(image, mask, output, teacher)
    typer.echo(f"inputs look right; wrote {config} and {output / 'preview.png'}")


@distill_app.command("run", help=RUN_HELP)
def run(
    config_path: Path = typer.Argument(..., metavar="CONFIG.yaml", help="The run's YAML config."),
    resume: bool = typer.Option(False, "--resume", help="Continue from PREFIX/snapshot.pt exactly where it stopped."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel workers through torchrun (NCCL on GPU, gloo on CPU)."),
    set_: List[str] = typer.Option([], "--set", help="KEY=VALUE override of a config field (dotted for nested: face.num_examples=1000)."),
) -> None:
    from tha.train.config import load_config

    config = load_config(config_path, set_)  # fail fast, before any worker starts
    try:
        model_dir = _run(config_path, config, resume, nproc, set_)
    except KeyboardInterrupt:
        typer.echo(_interrupted(config_path, config, nproc, set_), err=True)
        raise  # the CLI exits as for any interrupt: 130 for Ctrl+C, 143 for SIGTERM
    typer.echo(f"done: {model_dir}")


def _run(config_path: Path, config: DistillConfig, resume: bool, nproc: int, set_: List[str]) -> Path:
    if nproc > 1:
        from tha.train.ddp import launch
        from tha.train.distill import check_start, load_inputs

        # checked here, once: bad input is one error line, not one per worker and restart, and
        # a restarted worker resumes only this launch's own run
        load_inputs(config)
        check_start(config, resume)
        launch(config_path, resume, nproc, set_)
        return config.output / "character_model"
    from tha.train.distill import distill

    return distill(config, resume)


def _interrupted(config_path: Path, config: DistillConfig, nproc: int, set_: List[str]) -> str:
    """What a Ctrl+C (or SIGTERM) leaves: the snapshot to resume from and the command that does, or that
    there is none yet."""
    from tha.train.snapshot import SNAPSHOT

    snapshot = config.output / SNAPSHOT
    command = ["tha", "distill", "run", str(config_path), *(["--nproc", str(nproc)] if nproc > 1 else []),
               *(arg for item in set_ for arg in ("--set", item))]
    if not snapshot.is_file():
        return f"interrupted before the first snapshot; nothing to resume, start again with: {shlex.join(command)}"
    return f"interrupted; the last snapshot is {snapshot}; resume from it with: {shlex.join([*command, '--resume'])}"


def register(app: typer.Typer) -> None:
    app.add_typer(distill_app, name="distill")
