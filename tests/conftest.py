"""Shared test fixtures: the CC BY-NC data lives in ../shared and is read from there."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("THA_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "tha4-data"
MODELS = DATA / "character_models"
CONFORMANCE = SHARED / "conformance"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
if not torch.cuda.is_available():
    # The fused CUDA kernels (Triton) then run in Triton's CPU interpreter; it is chosen when a
    # kernel is defined, so before any test module imports them.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}; tests read the upstream data from there (or set THA_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def lambda00_dir(shared) -> Path:
    return MODELS / "lambda_00"


@pytest.fixture(scope="session")
def lambda01_dir(shared) -> Path:
    return MODELS / "lambda_01"


@pytest.fixture(scope="session")
def lambda00(lambda00_dir):
    from tha.models.character import load_character_model

    return load_character_model(lambda00_dir)


@pytest.fixture(scope="session")
def student_reference(shared):
    return dict(np.load(CONFORMANCE / "student_reference_lambda_00.npz"))
