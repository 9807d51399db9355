"""Copies of model directories for tests that change or export next to one."""
from __future__ import annotations

import shutil
from pathlib import Path

from tha.models.character import KEYS, MODEL_FILE, model_paths


def copy_model_directory(source: str | Path, target: str | Path) -> Path:
    """Copy a validated model directory (yaml + the three files it names)."""
    paths = model_paths(source)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        shutil.copyfile(path, target / path.name)
    (target / MODEL_FILE).write_text("".join(f"{k}: {paths[k].name}\n" for k in KEYS))
    return target
