"""Where a pose becomes pixels: pick a backend for a character model and render frames."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tha.models.character import CharacterModel, load_character_model
from tha.models.errors import ThaError
from tha.runtime.backends.base import Backend


def _torch(model: CharacterModel, device: str) -> Backend:
    from tha.runtime.backends.torch import TorchBackend

    return TorchBackend(model, device=device)


# name -> factory(model, device). The export/runtime work adds "ort" and "trt".
BACKENDS: dict[str, Callable[[CharacterModel, str], Backend]] = {"torch": _torch}


def open_backend(name: str, model: CharacterModel | str | Path, device: str = "cpu") -> Backend:
    """A ready backend by name ("auto" picks the best available)."""
    if not isinstance(model, CharacterModel):
        model = load_character_model(model)
    if name == "auto":
        name = "torch"
    if name not in BACKENDS:
        raise ThaError(f"unknown backend '{name}'; choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](model, device)
