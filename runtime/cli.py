"""The `tha` command: one Typer app; each area registers its own commands from its own
``cli`` module, so the root knows nothing about them beyond their module names."""
from __future__ import annotations

import importlib
import sys
import warnings

import typer

from tha.models.errors import ThaError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Pose anime characters in real time (THA4): students, teacher, export, viewer.")

# Each module defines ``register(app)``. Heavy imports stay inside the commands.
COMMAND_MODULES = ("tha.models.cli", "tha.export.cli", "tha.train.cli", "tha.runtime.commands", "tha.viewer.cli",
                   "tha.runtime.live", "tha.runtime.puppet")

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    warnings.showwarning = _one_line_warning
    try:
        app()
    except ThaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
