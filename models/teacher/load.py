"""Reading and writing a teacher directory: upstream's five ``.pt`` state dicts side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from tha.models.checkpoint import load_into, load_state_dict_file
from tha.models.errors import ThaError
from tha.models.files import atomic_path
from tha.models.teacher.networks import FACE_NETWORKS, NETWORKS, file_name
from tha.models.teacher.poser import FaceTeacherPoser, TeacherPoser


def load_teacher_network(directory: Path, network: str) -> nn.Module:
    path = directory / file_name(network)
    if not path.is_file():
        raise ThaError(f"teacher directory {directory} has no {path.name}; it needs upstream's "
                       f"{', '.join(file_name(n) for n in NETWORKS)} (from its data/tha4 folder)")
    module = NETWORKS[network]()
    load_into(module, load_state_dict_file(path), path)
    return module.eval()


def load_teacher_poser(directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                       face_only: bool = False) -> FaceTeacherPoser:
    """The full teacher (or, with ``face_only``, the face teacher) from upstream's files, loaded
    strictly, then cast to ``dtype`` on ``device``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ThaError(f"teacher directory {directory} does not exist; pass the folder holding upstream's "
                       "eyebrow_decomposer.pt … upscaler.pt")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ThaError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    names = FACE_NETWORKS if face_only else tuple(NETWORKS)
    modules = [load_teacher_network(directory, name) for name in names]
    poser = FaceTeacherPoser(*modules) if face_only else TeacherPoser(*modules)
    return poser.to(device=device, dtype=dtype).eval()


def write_teacher_directory(directory: str | Path, states: Mapping[str, Mapping[str, torch.Tensor]]) -> Path:
    """Write one state dict per network in upstream's file names, each atomically."""
    directory = Path(directory)
    for network in NETWORKS:
        with atomic_path(directory / file_name(network)) as tmp:
            torch.save({k: v.contiguous() for k, v in states[network].items()}, tmp)
    return directory


def load_teacher_image(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A character PNG, or a (4,512,512) / (1,4,512,512) ``.npy`` tensor in the SPEC's [-1,1]
    space (what ``--save-tensor`` writes), as (4,512,512). The tensor form feeds a float64
    teacher exactly; a PNG goes through 8-bit sRGB."""
    import numpy as np

    from tha.models.image import load_image_tensor

    path = Path(path)
    if path.suffix.lower() != ".npy":
        return load_image_tensor(path, dtype)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ThaError(f"cannot read image tensor {path} ({err}); write it with numpy.save") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (4, 512, 512) or not np.issubdtype(array.dtype, np.floating):
        raise ThaError(f"image tensor {path} is {array.dtype} {array.shape}; expected floats of shape (4,512,512) in [-1,1]")
    return torch.from_numpy(array).to(dtype)
