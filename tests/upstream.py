"""How close our float outputs must be to upstream's reference arrays."""
from __future__ import annotations

import numpy as np


def assert_matches_upstream(ours, theirs, what: str) -> None:
    """Upstream's fp32 outputs, to their own rounding. A few line-art pixels move by up to ~5e-3
    with the GEMMs' summation order alone (measured on one Xeon: one thread 2.0e-3, float64 1.6e-3,
    an occasional 2-thread run 5.0e-3 in the face or 2.6e-3 in the final image, 5-7 values above
    1e-3 of 2M); a wrong network is off everywhere, which the mean and the count catch."""
    error = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64))
    assert error.shape == np.shape(theirs), f"{what}: shape {error.shape}, upstream {np.shape(theirs)}"
    assert error.max() <= 2e-2, f"{what}: max abs {error.max():.3g}"
    assert (error > 1e-3).mean() <= 1e-4, f"{what}: {(error > 1e-3).sum()} values off by more than 1e-3"
    assert error.mean() <= 1e-5, f"{what}: mean abs {error.mean():.3g}"
