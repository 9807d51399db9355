"""The wheel holds every subpackage: `packages` in pyproject.toml is listed by hand (the import
package `tha` is mapped onto top-level folders), so a new folder with an ``__init__.py`` that
is missing from the list would be left out of a built wheel while editable installs still work."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _packages_on_disk(package_dir: dict[str, str]) -> set[str]:
    found = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    config = _setuptools()
    listed = set(config["packages"])
    on_disk = _packages_on_disk(config["package-dir"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "listed in pyproject.toml but no such folder with __init__.py"


def test_every_top_level_source_folder_is_mapped():
    mapped = set(_setuptools()["package-dir"].values())
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert folders - mapped == set(), "a top-level package folder that no package-dir entry maps"
