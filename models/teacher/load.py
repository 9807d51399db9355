"""Reading and writing a teacher directory: upstream's five ``.pt`` state dicts side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from tha.models.checkpoint import load_into, load_state_dict_file
from tha.models.errors import ThaError
from tha.models.files import atomic_directory, check_replaceable_dir
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
        state = "is a file, not a folder" if directory.exists() else "does not exist"
        raise ThaError(f"teacher directory {directory} {state}; pass the folder holding upstream's "
                       "eyebrow_decomposer.pt … upscaler.pt")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ThaError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    names = FACE_NETWORKS if face_only else tuple(NETWORKS)
    modules = [load_teacher_network(directory, name) for name in names]
    poser = FaceTeacherPoser(*modules) if face_only else TeacherPoser(*modules)
    return poser.to(device=device, dtype=dtype).eval()


# Written into every teacher folder tha makes (deterministic, untrained weights): a folder with
# it is ours to replace whole; one without may hold a user's real teacher, which is never touched.
TEACHER_MARKER = "written_by_tha.txt"


def check_teacher_target(directory: str | Path, what: str = "teacher directory") -> Path:
    """Refuse, before any work, a destination that is a file, unwritable, or a folder with
    files that tha did not write there (e.g. upstream's trained .pt files)."""
    return check_replaceable_dir(Path(directory), TEACHER_MARKER, what, "a teacher tha wrote")


def write_teacher_directory(directory: str | Path, states: Mapping[str, Mapping[str, torch.Tensor]]) -> Path:
    """Write one state dict per network in upstream's file names, with ``TEACHER_MARKER``, into
    a folder that replaces ``directory`` whole only once complete."""
    directory = check_teacher_target(directory)
    with atomic_directory(directory) as work:
        for network in NETWORKS:
            torch.save({k: v.contiguous() for k, v in states[network].items()}, work / file_name(network))
        (work / TEACHER_MARKER).write_text("A teacher with deterministic, untrained weights, written by tha "
                                           "(`tha teacher random-weights`); tha may replace this folder whole.\n")
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
    array = _read_npy(path)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (4, 512, 512) or not np.issubdtype(array.dtype, np.floating):
        raise ThaError(f"image tensor {path} is {array.dtype} {array.shape}; expected floats of shape (4,512,512) in [-1,1]")
    _check_image_values(array, path)
    return torch.from_numpy(array).to(dtype)


# Float rounding of an image saved from another dtype may step just past ±1; more is not an image.
IMAGE_RANGE_TOLERANCE = 1e-3


def _read_npy(path: Path):
    """``np.load`` of a plain array file, every failure one ThaError line. A file without the
    .npy magic (text, an HTML page) is named as such: numpy's own words for it advise
    loading it with allow_pickle, which would be wrong and unsafe."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise ThaError(f"image tensor {path} is not a NumPy array file (no .npy header); write it with numpy.save")
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ThaError(f"image tensor {path} does not exist") from None
    except IsADirectoryError:
        raise ThaError(f"image tensor {path} is a directory; give a .npy file") from None
    except ValueError as err:
        if "pickle" in str(err):  # an object array: never unpickled, that could run code
            raise ThaError(f"image tensor {path} holds Python objects, not a float array; "
                           "write a float array with numpy.save") from None
        raise ThaError(f"cannot read image tensor {path} ({err}); write it with numpy.save") from None
    except (OSError, EOFError) as err:  # truncated: numpy raises EOFError for a cut-off file
        raise ThaError(f"cannot read image tensor {path} ({err}); write it with numpy.save") from None


def _check_image_values(array, path: Path) -> None:
    """NaN, infinities and values far outside [-1,1] are no image: the teacher would turn them
    into a black or noise frame without a word."""
    import numpy as np

    if not np.isfinite(array).all():
        raise ThaError(f"image tensor {path} holds {int((~np.isfinite(array)).sum()):,} NaN or infinite values; "
                       "expected finite floats in [-1,1]")
    low, high = float(array.min()), float(array.max())
    if low < -1 - IMAGE_RANGE_TOLERANCE or high > 1 + IMAGE_RANGE_TOLERANCE:
        raise ThaError(f"image tensor {path} ranges over [{low:g}, {high:g}]; expected floats in [-1,1] "
                       "(clip it with numpy.clip(array, -1, 1) if it is an image)")
