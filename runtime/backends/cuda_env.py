"""What a backend on CUDA needs from the process: a CUDA torch with a visible GPU, and exact
matmul settings while it runs. Kept apart from the backends so each imports it, not one another."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from tha.models.errors import ThaError


_FLAGS = threading.Lock()
_inside = 0  # threads (and nested blocks) inside precise_matmuls
_saved: tuple[bool, bool, bool] | None = None  # the settings the first of them found


def _settings() -> tuple[bool, bool, bool]:
    matmul = torch.backends.cuda.matmul
    return matmul.allow_tf32, torch.backends.cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction


def _set(settings: tuple[bool, bool, bool]) -> None:
    matmul = torch.backends.cuda.matmul
    matmul.allow_tf32, torch.backends.cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = settings


@contextmanager
def precise_matmuls() -> Iterator[None]:
    """Inside this block only: no TF32 (PyTorch lets cuDNN use it by default, which put 1.95% of
    alpha>0 pixels more than one level off on an H100) and fp16 GEMMs reduce in fp32 (cuBLAS may
    otherwise split K with fp16 partial sums). The caller's settings come back.

    The flags are the process's, not a thread's: a block on one thread (a new student's capture
    in `tha serve`) overlaps another's (the old backend's frame). So the first to enter sets them
    and the last to leave restores them; a thread leaving early must not turn TF32 back on
    under a frame or capture still running."""
    global _inside, _saved
    with _FLAGS:
        if _inside == 0:
            _saved = _settings()
            _set((False, False, False))
        _inside += 1
    try:
        yield
    finally:
        with _FLAGS:
            _inside -= 1
            if _inside == 0:
                _set(_saved)


def require_cuda(what: str, instead: str = "--backend fastcpu") -> None:
    """One line when ``what`` (e.g. "--backend cuda") cannot run here, with ``instead`` as the way out."""
    if torch.version.cuda is None:
        raise ThaError(f"{what} needs a CUDA build of torch (this is {torch.__version__}, CPU-only); "
                       f"install torch for CUDA from pytorch.org, or use {instead}")
    if not torch.cuda.is_available():
        raise ThaError(f"{what} needs an NVIDIA GPU, but torch sees none (driver?); run `tha doctor`, or use {instead}")
