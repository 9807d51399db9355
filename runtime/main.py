"""The `tha` command: one Typer app; each area registers its own commands with
``register(app)`` from its ``<area>/cli.py``. The root knows those modules only by name: it is
the shell over every layer (viewer and web included), not a runtime module that depends on them."""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import warnings

import typer

from tha.models.errors import ThaError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Pose anime characters in real time (THA4): students, teacher, export, viewer.")

# The order `tha --help` lists them in: showing a character first, making one last.
COMMAND_MODULES = ("tha.viewer.cli", "tha.runtime.cli", "tha.models.cli", "tha.export.cli", "tha.web.cli",
                   "tha.train.cli")

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _OneLine(logging.Formatter):
    """Library log records as the CLI's own lines: plain for progress, "warning: ..." else."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


def configure_logging() -> None:
    """tha's own progress lines and every library's warnings; other libraries' chatter stays quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("tha").setLevel(logging.INFO)


# click's exceptions, or those of the copy of click that newer typer releases ship inside
_click_errors = sys.modules[typer.BadParameter.__module__]


_terminated_by: list[int] = []  # SIGTERM, once received


def _terminated(signum: int, frame) -> None:
    # A service stop or `kill` ends the command as Ctrl+C does, through the same cleanup (a render
    # removes its hidden temporary file, a distill run prints its resume line); Python's default
    # would die on the spot. Typer reports any interrupt as 130, so the signal is kept for main().
    _terminated_by.append(signum)
    raise KeyboardInterrupt


def wait_passively() -> None:
    """Torch's idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.

    Spinning threads fight whatever else uses the cores (a browser, OBS, SillyTavern): fastcpu
    on 2 cores measured 1004-1320 ms/frame beside one busy process and 1578-2449 beside two,
    against 575-682 and 821-850 passive; quiet, the runs overlapped (README, "Sharing the
    cores"). OpenMP reads the variable once, when torch loads, so this runs first."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def main() -> None:
    """`tha`: our errors and click's (a bad option value, a missing argument) alike as one
    `error:` line and exit status 2; typer's own formatting would draw them as a box."""
    wait_passively()
    warnings.showwarning = _one_line_warning
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # an ignored SIGTERM stays ignored
        signal.signal(signal.SIGTERM, _terminated)
    configure_logging()
    try:
        code = app(prog_name="tha", standalone_mode=False)
    except ThaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except _click_errors.UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `tha` or `tha models` alone: the help is the answer
            print(err.format_message(), end="", file=sys.stderr)
        else:
            where = f"; see `{err.ctx.command_path} --help`" if err.ctx is not None else ""
            print(f"error: {err.format_message().rstrip('.')}{where}", file=sys.stderr)
        sys.exit(err.exit_code)
    except _click_errors.ClickException as err:
        print(f"error: {err.format_message()}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = 128 + signal.SIGINT
    # a command's return value is not an exit status; typer.Exit(n) and Ctrl+C come back as ints
    code = code if isinstance(code, int) else 0
    # the shells' statuses: 130 for Ctrl+C, 143 for SIGTERM
    sys.exit(128 + _terminated_by[0] if _terminated_by and code == 128 + signal.SIGINT else code)
