"""The SPEC's deterministic teacher weights: reproducible stand-ins for upstream's files.

Upstream's trained teacher files are not redistributable here, so conformance runs on
weights anyone can regenerate from a key -> shape manifest (SPEC "Deterministic weights").
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import torch

from tha.models.errors import ThaError
from tha.models.teacher.networks import NETWORKS


def deterministic_tensor(network: str, key: str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One entry: seeded by crc32("network/key"), uniform in [-1,1) drawn in float64, then scaled."""
    shape = tuple(int(s) for s in shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{network}/{key}".encode()))
    u = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
    if len(shape) >= 2:
        value = u / math.sqrt(math.prod(shape) // shape[0])
    elif key.endswith("weight"):
        value = 1 + 0.1 * u
    else:
        value = 0.1 * u
    return value.to(torch.float32)


def deterministic_state_dict(network: str, manifest_entry: Mapping[str, Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Deterministic weights for ``network``; shapes from a manifest entry (key -> shape) or,
    without one, from our own module (whose state dict matches upstream's)."""
    if network not in NETWORKS:
        raise ThaError(f"unknown teacher network {network!r}; expected one of {', '.join(NETWORKS)}")
    if manifest_entry is None:
        own = NETWORKS[network]().state_dict()
        return {k: deterministic_tensor(network, k, v.shape, v.dtype) for k, v in own.items()}
    return {k: deterministic_tensor(network, k, shape) for k, shape in manifest_entry.items()}


def load_manifest(path: str | Path) -> dict[str, dict[str, list[int]]]:
    """The conformance manifest: network -> state-dict key -> shape."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ThaError(f"cannot read teacher manifest {path} ({err}); pass the teacher_state_dict_manifest.json file") from None
    missing = [n for n in NETWORKS if n not in manifest]
    if missing:
        raise ThaError(f"teacher manifest {path} lacks {', '.join(missing)}; pass the teacher_state_dict_manifest.json file")
    return manifest
