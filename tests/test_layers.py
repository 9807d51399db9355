"""The packages' directions: each imports only the layers below it, so data and dependencies
flow one way (models -> export -> runtime -> viewer -> web; train uses what it needs below it).
The command modules (`*/cli.py`) are the shell over all of them and may import anything."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages it may import (besides itself).
ALLOWED = {
    "configs": set(),
    "models": {"configs"},
    "export": {"configs", "models"},
    "runtime": {"configs", "models", "export"},
    "viewer": {"configs", "models", "export", "runtime"},
    "train": {"configs", "models", "export", "runtime"},
    "web": {"configs", "models", "export", "runtime", "viewer"},
}


def imported_packages(path: Path) -> set[str]:
    """The tha.<package> names a module imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {n.split(".")[1] for n in names if n.startswith("tha.") and n.count(".") >= 1}
    return found


def modules() -> list[Path]:
    return sorted(p for package in ALLOWED for p in (ROOT / package).rglob("*.py") if p.name != "cli.py")


def test_every_package_folder_is_layered():
    from tomllib import loads

    mapped = loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert {folder for folder in mapped.values()} == set(ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path):
    package = path.relative_to(ROOT).parts[0]
    upward = imported_packages(path) - ALLOWED[package] - {package}
    assert not upward, f"{path.relative_to(ROOT)} ({package}) imports {sorted(upward)}: move the shared code down a layer"


HELP_PROBE = """
import sys
from tha.runtime.main import main
sys.argv = ["tha", *sys.argv[1:], "--help"]
try:
    main()
except SystemExit:
    pass
print("torch loaded" if "torch" in sys.modules else "no torch", file=sys.stderr)
"""


def test_help_loads_no_torch():
    """`tha --help` and every command's help answer in a blink: torch (a second or more to
    import) loads only when a command runs."""
    import subprocess
    import sys

    from typer.main import get_command

    from tha.runtime.main import app

    commands = [[]] + [[name] for name in get_command(app).commands]
    assert len(commands) > 8
    for command in commands:
        result = subprocess.run([sys.executable, "-c", HELP_PROBE, *command], capture_output=True, text=True, timeout=60)
        assert "Usage" in result.stdout, (command, result.stderr[-500:])
        assert result.stderr.strip().endswith("no torch"), (command, result.stderr[-500:])
