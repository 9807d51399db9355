"""Training snapshots: everything a resumed run needs to continue bit for bit (weights,
optimizer, pose-generator and global RNG state, counters, loss history), written atomically
so a kill mid-write leaves the previous snapshot intact."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tha.models.checkpoint import load_torch_file
from tha.models.errors import ThaError
from tha.models.files import atomic_path

SNAPSHOT = "snapshot.pt"
STAGES = ("face", "body")
# what a resume reads; "inputs", "seconds" and the fill position came later and are optional
SNAPSHOT_KEYS = ("stage", "examples", "config", "face_morpher", "body_morpher", "optimizer", "generator",
                 "scaler", "rng", "history", "psnr")


def save_snapshot(directory: Path, state: dict[str, Any]) -> Path:
    path = directory / SNAPSHOT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_snapshot(directory: Path) -> dict[str, Any] | None:
    path = directory / SNAPSHOT
    if not path.is_file():
        return None
    state = load_torch_file(path, "tha distill snapshot", "delete it to start over")
    check_snapshot(path, state)
    return state


def check_snapshot(path: Path, state: object) -> None:
    """Refuse a torch file that is not one of our snapshots (a student checkpoint, a state dict
    copied in by hand), which would otherwise fail later on its first missing key."""
    if not (isinstance(state, dict) and all(key in state for key in SNAPSHOT_KEYS) and state["stage"] in STAGES):
        raise ThaError(f"{path} is not a tha distill snapshot; put back the {SNAPSHOT} tha distill wrote "
                       "there, or change `prefix` to start a new run")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
