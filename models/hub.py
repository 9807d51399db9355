"""Upstream's public student models, downloaded once into a cache directory and verified."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tha.models.errors import ThaError
from tha.models.files import atomic_write_bytes

UPSTREAM_URL = "https://raw.githubusercontent.com/pkhungurn/talking-head-anime-4-demo/main/data/character_models"

# sha256 of every file upstream ships, so a truncated or altered download is caught.
MODELS: dict[str, dict[str, str]] = {
    "lambda_00": {
        "character_model.yaml": "a2dfad8d59e353931dc2f8333723385ec1710999ef0655490db7d462d20decb2",
        "character.png": "e4a594c801d3d586365b5cc0986dc5abc98dac98cced2517cc40cddafcc92abc",
        "face_morpher.pt": "9c8914a7ab6c3a155785994ed82dc82ca49c6d91eb2f92c35ef806b6bb21b4c5",
        "body_morpher.pt": "f9d06d0bd8b0344a0642e4e80bc81a6f227921f6724fd580904821dad7666a80",
    },
    "lambda_01": {
        "character_model.yaml": "a2dfad8d59e353931dc2f8333723385ec1710999ef0655490db7d462d20decb2",
        "character.png": "31c905d9ceb4cd94b900593c1962c17d9633ef1c87b3b119b33d364d65949876",
        "face_morpher.pt": "40f1430ed079c94fd1504438a0d77131f79a6d34996c63b0c5ee396f48b8354a",
        "body_morpher.pt": "45b863d93d9cbf87c7702c0b17dd1b8692888ec17508762d1fecc8d57a2d5cdc",
    },
}


def cache_dir() -> Path:
    """``$THA_HOME/models``, else ``$XDG_CACHE_HOME/tha/models``, else ``~/.cache/tha/models``."""
    if "THA_HOME" in os.environ:
        return Path(os.environ["THA_HOME"]) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tha" / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_model(name: str, target_root: Path | None = None, base_url: str | None = None,
                timeout: float = 30.0, progress=None) -> Path:
    """Download model ``name`` (skipping files already present and intact); return its dir."""
    if name not in MODELS:
        raise ThaError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    target = (target_root or cache_dir()) / name
    base_url = (base_url or os.environ.get("THA_MODELS_URL") or UPSTREAM_URL).rstrip("/")
    for file_name, digest in MODELS[name].items():
        path = target / file_name
        if path.is_file() and _sha256(path.read_bytes()) == digest:
            continue
        url = f"{base_url}/{name}/{file_name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ThaError(f"cannot download {url} ({reason}); offline, copy {', '.join(MODELS[name])} from "
                           f"upstream's data/character_models/{name}/ into {target}/ by hand") from None
        if _sha256(data) != digest:
            raise ThaError(f"{url} did not match its known checksum (truncated or changed download); "
                           "run the command again")
        atomic_write_bytes(path, data)
        if progress:
            progress(file_name, len(data))
    return target


def resolve_model(name_or_dir: str | Path) -> Path:
    """A model directory as given, or a cached model's directory by name."""
    path = Path(name_or_dir)
    if path.exists() or str(name_or_dir) not in MODELS:
        return path
    cached = cache_dir() / str(name_or_dir)
    if not (cached / "character_model.yaml").is_file():
        raise ThaError(f"model '{name_or_dir}' is not downloaded yet; run `tha models fetch {name_or_dir}`")
    return cached
