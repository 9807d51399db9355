"""cuda-python's CUDA runtime API (the trt backend's stream sync, the viewer's CUDA-GL interop),
found where this cuda-python keeps it, with one error when it is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from tha.models.errors import ThaError

# cuda-python >= 12.6 moved the runtime module; older releases still serve it as cuda.cudart.
MODULES = ("cuda.bindings.runtime", "cuda.cudart")


def cudart() -> ModuleType:
    """The runtime module, or one line saying what needs it and how to install it."""
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ThaError("cuda-python is not installed: `pip install cuda-python` (or tha's gpu extra); the trt backend and "
                   "the viewer's CUDA-GL interop (a GPU backend's frames shown without a host copy) need it")
