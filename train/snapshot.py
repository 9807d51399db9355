"""Training snapshots: everything a resumed run needs to continue bit for bit (weights,
optimizer, pose-generator and global RNG state, counters, loss history), written atomically
so a kill mid-write leaves the previous snapshot intact."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from tha.models.errors import ThaError
from tha.models.files import atomic_path

SNAPSHOT = "snapshot.pt"


def save_snapshot(directory: Path, state: dict[str, Any]) -> Path:
    path = directory / SNAPSHOT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_snapshot(directory: Path) -> dict[str, Any] | None:
    path = directory / SNAPSHOT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise ThaError(f"snapshot {path} cannot be read ({str(err).splitlines()[0][:100]}); "
                       "delete it to start over") from None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
