"""A character model directory: ``character_model.yaml`` + the character PNG + two student
state dicts, exactly as upstream ships them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tha.models.checkpoint import (body_config_from_state, face_config_from_state, load_into,
                                   load_state_dict_file, save_state_dict)
from tha.models.errors import ThaError
from tha.models.files import atomic_write_text
from tha.models.image import load_rgba, rgba_to_tensor, save_png
from tha.models.student import BodyMorpher, FaceMorpher

MODEL_FILE = "character_model.yaml"
KEYS = ("character_image_file_name", "face_morpher_file_name", "body_morpher_file_name")


@dataclass
class CharacterModel:
    """A loaded student: the character image (straight-alpha uint8) and its two networks."""

    image_rgba: np.ndarray
    face_morpher: FaceMorpher
    body_morpher: BodyMorpher
    source: Path | None = None

    def image_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The character as the networks take it: (4,512,512) in [-1,1]."""
        return rgba_to_tensor(self.image_rgba, dtype)

    @property
    def name(self) -> str:
        return self.source.name if self.source else "character"

    def save(self, directory: str | Path) -> Path:
        """Write an upstream-format model directory (atomic per file; yaml last)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_png(directory / "character.png", self.image_rgba)
        save_state_dict(self.face_morpher, directory / "face_morpher.pt")
        save_state_dict(self.body_morpher, directory / "body_morpher.pt")
        atomic_write_text(directory / MODEL_FILE, "character_image_file_name: character.png\n"
                          "face_morpher_file_name: face_morpher.pt\nbody_morpher_file_name: body_morpher.pt\n")
        return directory


def model_paths(directory: str | Path) -> dict[str, Path]:
    """Validate the directory and its yaml; return the three files it names."""
    directory = Path(directory)
    if not directory.exists():
        raise ThaError(f"model directory {directory} does not exist; `tha models fetch lambda_00` "
                       "downloads one")
    yaml_path = model_yaml(directory)
    if not directory.is_dir() and directory.suffix.lower() not in (".yaml", ".yml"):
        raise ThaError(f"{directory} is a file, not a character model; give the folder that holds "
                       f"{MODEL_FILE} (or that file)")
    if not yaml_path.is_file():
        raise ThaError(f"{directory} is not a character model: no {MODEL_FILE} in it")
    try:
        conf = OmegaConf.to_container(OmegaConf.load(yaml_path))
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as err:
        reason = " ".join(str(err).split())[:200]
        raise ThaError(f"{yaml_path} is not valid YAML ({reason}); it needs the keys {', '.join(KEYS)}, "
                       "one `key: file name` per line") from None
    if not isinstance(conf, dict) or any(k not in conf for k in KEYS):
        missing = [k for k in KEYS if not isinstance(conf, dict) or k not in conf]
        raise ThaError(f"{yaml_path} lacks {', '.join(missing)}; it needs the keys {', '.join(KEYS)}")
    bad = [k for k in KEYS if not isinstance(conf[k], str) or not conf[k]]
    if bad:
        raise ThaError(f"{yaml_path}: {', '.join(bad)} must be a file name, e.g. {bad[0]}: character.png")
    paths = {k: yaml_path.parent / conf[k] for k in KEYS}
    for key, path in paths.items():
        if not path.is_file():
            raise ThaError(f"{yaml_path}: {key} points at {path}, which {_not_a_file(path)}; "
                           f"name the model's file there")
    return paths


def model_yaml(directory: Path) -> Path:
    """The model's yaml: ``directory``'s, or ``directory`` itself when given the yaml."""
    return directory / MODEL_FILE if directory.is_dir() else directory


def model_files(directory: str | Path) -> list[Path]:
    """Every file a model is read from (its yaml, image and two networks), validated: what no
    output of a command reading the model may replace."""
    return [model_yaml(Path(directory)), *model_paths(directory).values()]


def _not_a_file(path: Path) -> str:
    """Why an existing-or-not path is not the file it should be, in a user's words."""
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        return "is not a regular file"
    return "does not exist"


def load_character_model(directory: str | Path) -> CharacterModel:
    paths = model_paths(directory)
    face_path, body_path = paths["face_morpher_file_name"], paths["body_morpher_file_name"]
    face_state = load_state_dict_file(face_path)
    body_state = load_state_dict_file(body_path)
    face = FaceMorpher(face_config_from_state(face_state, face_path))
    body = BodyMorpher(body_config_from_state(body_state, body_path))
    load_into(face, face_state, face_path)
    load_into(body, body_state, body_path)
    face.eval()
    body.eval()
    image = load_rgba(paths["character_image_file_name"])
    directory = Path(directory)
    return CharacterModel(image, face, body, directory if directory.is_dir() else directory.parent)
