"""What a backend on CUDA needs from the process: a CUDA torch with a visible GPU, and exact
matmul settings while it runs. Kept apart from the backends so each imports it, not one another."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from tha.models.errors import ThaError


@contextmanager
def precise_matmuls() -> Iterator[None]:
    """Inside this block only: no TF32 (PyTorch lets cuDNN use it by default, which put 1.95% of
    alpha>0 pixels more than one level off on an H100) and fp16 GEMMs reduce in fp32 (cuBLAS may
    otherwise split K with fp16 partial sums). The caller's settings come back."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32, torch.backends.cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    matmul.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = saved


def require_cuda(what: str, instead: str = "--backend fastcpu") -> None:
    """One line when ``what`` (e.g. "--backend cuda") cannot run here, with ``instead`` as the way out."""
    if torch.version.cuda is None:
        raise ThaError(f"{what} needs a CUDA build of torch (this is {torch.__version__}, CPU-only); "
                       f"install torch for CUDA from pytorch.org, or use {instead}")
    if not torch.cuda.is_available():
        raise ThaError(f"{what} needs an NVIDIA GPU, but torch sees none (driver?); run `tha doctor`, or use {instead}")
