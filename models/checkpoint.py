"""Reading and writing upstream-format ``.pt`` state dicts, with errors that name the file."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from tha.models.errors import ThaError, short_reason
from tha.models.files import atomic_path
from tha.models.limits import MAX_BODY_LEVELS, MAX_STUDENT_CHANNELS, MAX_STUDENT_LAYERS
from tha.models.pose import POSE_SIZE
from tha.models.student import BodyMorpherConfig, FaceMorpherConfig


def load_torch_file(path: Path, what: str, fix: str) -> object:
    """``torch.load(weights_only=True)`` onto the CPU. A file it cannot read is one ThaError
    line naming ``path``, as a ``what`` (e.g. "state_dict"), and ending with ``fix``."""
    text = _text_kind(path)
    if text:  # torch's words for it ("Weights only load failed ... pickled") point nowhere useful
        raise ThaError(f"{path} is {text}, not a PyTorch checkpoint; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object, or not a pickle at all
        raise ThaError(f"{path} holds pickled objects, not a plain {what} ({short_reason(err)}); {fix}") from None
    except Exception as err:  # a damaged file raises many types (zip, EOF, index, value errors)
        raise ThaError(f"{path} is corrupt or truncated, not a readable {what} ({short_reason(err)}); {fix}") from None


# PyTorch checkpoints start with a zip header or a pickle opcode, both of which hold bytes
# outside printable ASCII; a Git LFS pointer ("version https://git-lfs...") or an HTML page
# ("<!DOCTYPE html>") saved under a .pt name is all text.
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def _text_kind(path: Path) -> str | None:
    """What a file whose first bytes are all printable ASCII is, in a user's words; None for
    any other file (one that cannot be read is left to torch.load, which names the problem)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head or any(b not in _TEXT_BYTES for b in head):
        return None
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (a text file: `git lfs pull` in its clone fetches the real one)"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return "a web page (a text file: the download saved a page, not the file)"
    return "a text file"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``load_torch_file``, refusing anything but a tensor dict."""
    path = Path(path)
    if not path.is_file():
        raise ThaError(f"{path} does not exist")
    data = load_torch_file(path, "state_dict", "download or export it again (a state_dict is saved with "
                           "torch.save(module.state_dict(), ...))")
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ThaError(f"{path} is not a state_dict of tensors (found {type(data).__name__}); "
                       "save it with torch.save(module.state_dict(), ...)")
    return dict(data)


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with one readable line on mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append("missing keys " + ", ".join(missing[:4]) + (" …" if len(missing) > 4 else ""))
    if unexpected:
        problems.append("unexpected keys " + ", ".join(unexpected[:4]) + (" …" if len(unexpected) > 4 else ""))
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:3]) + (" …" if len(shapes) > 3 else ""))
    if problems:
        raise ThaError(f"{path} does not fit {type(module).__name__}: " + "; ".join(problems)
                       + "; is this the right file for this network?")
    module.load_state_dict(state, strict=True)


def save_state_dict(module: nn.Module, path: str | Path) -> None:
    """Save in upstream's format (a plain state_dict), atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _weight(state: Mapping[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    """A 1x1 convolution weight (out, in, 1, 1), its widths checked before any network is
    built from them: a crafted file declaring 0 or 200000 channels is refused, not allocated."""
    if key not in state:
        raise ThaError(f"{path} does not fit a student network: missing key {key}; "
                       "is this the right file for this network?")
    weight = state[key]
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise ThaError(f"{path}: {key} has shape {tuple(weight.shape)}, not (out, in, 1, 1); "
                       "is this the right file for this network?")
    for width in weight.shape[:2]:
        if not 1 <= width <= MAX_STUDENT_CHANNELS:
            raise ThaError(f"{path}: {key} has shape {tuple(weight.shape)}, a width outside "
                           f"[1, {MAX_STUDENT_CHANNELS}]; the file is damaged or not a student network")
    return weight


def _pose_size(weight: torch.Tensor, key: str, path: Path, allowed: range) -> int:
    size = weight.shape[1] - 2  # x, y, then the pose
    if size not in allowed:
        raise ThaError(f"{path}: {key} takes {size} pose values; a student takes "
                       f"{allowed.start}-{allowed.stop - 1}, is this the right file for this network?")
    return size


def _depth(count: int, limit: int, what: str, path: Path) -> int:
    if not 1 <= count <= limit:
        raise ThaError(f"{path} has {count} {what}, outside [1, {limit}]; the file is damaged "
                       "or not a student network")
    return count


def face_config_from_state(state: Mapping[str, torch.Tensor], path: Path) -> FaceMorpherConfig:
    """Read widths and depth off the tensors, so smaller or larger students load as they are."""
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"siren\.sine_layers\.(\d+)\.", k))})
    first = _weight(state, "siren.sine_layers.0.linear.weight", path)
    last = _weight(state, "siren.last_linear.weight", path)
    config = FaceMorpherConfig(pose_size=_pose_size(first, "siren.sine_layers.0.linear.weight", path,
                                                    range(1, POSE_SIZE + 1)),
                               channels=first.shape[0],
                               num_sine_layers=_depth(max(len(layers), 1), MAX_STUDENT_LAYERS, "sine layers", path),
                               out_channels=last.shape[0])
    widths = [config.pose_size + 2] + [config.channels] * config.num_sine_layers + [config.out_channels]
    _check_size(state, _convs(widths), path)
    return config


def body_config_from_state(state: Mapping[str, torch.Tensor], path: Path) -> BodyMorpherConfig:
    """Level widths and depth from the tensors; level sizes halve from 512 per level."""
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"siren_layers\.(\d+)\.0\.", k))})
    if not levels:
        _weight(state, "siren_layers.0.0.linear.weight", path)
    _depth(len(levels), MAX_BODY_LEVELS, "levels", path)
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"siren_layers\.0\.(\d+)\.", k))})
    _depth(depth, MAX_STUDENT_LAYERS, "sine layers per level", path)
    widths = tuple(_weight(state, f"siren_layers.{i}.0.linear.weight", path).shape[0] for i in levels)
    first = state["siren_layers.0.0.linear.weight"]
    sizes = tuple(512 >> (len(levels) - 1 - i) for i in range(len(levels)))
    config = BodyMorpherConfig(pose_size=_pose_size(first, "siren_layers.0.0.linear.weight", path,
                                                    range(POSE_SIZE, POSE_SIZE + 1)),
                               level_sizes=sizes, level_channels=widths, sine_layers_per_level=depth)
    count = config.level_channels[-1] * (config.image_channels + 3) + config.image_channels + 3
    for level, width in enumerate(widths):
        out = widths[level + 1] if level + 1 < len(widths) else width
        count += _convs([config.pose_size + 2 + (0 if level == 0 else width)] + [width] * (depth - 1) + [out])
    _check_size(state, count, path)
    return config


def _convs(widths: list[int]) -> int:
    """Parameters of a chain of 1x1 convolutions with biases."""
    return sum(i * o + o for i, o in zip(widths, widths[1:]))


def _check_size(state: Mapping[str, torch.Tensor], count: int, path: Path) -> None:
    """A state dict that fits holds exactly as many values as the network its shapes describe.
    One describing far more (a crafted width) is refused before that network is allocated; a
    few missing tensors are left to ``load_into``, which names them."""
    held = sum(v.numel() for v in state.values())
    if count > 2 * held + 10_000:
        raise ThaError(f"{path}: its shapes describe a network of {count:,} values but it holds {held:,}; "
                       "the file is damaged or not a student network")
