"""Pearson correlation (PCC), the accuracy measure tt-metal's module tests assert on."""

from __future__ import annotations

import numpy as np

from mesh.errors import TTJaxError


def pcc(golden, calculated) -> float:
    """Pearson correlation of two arrays, flattened, in float64. Identical constant arrays give 1.0."""
    a = np.asarray(golden, dtype=np.float64).ravel()
    b = np.asarray(calculated, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise TTJaxError(f"pcc of arrays of different sizes: {a.size} vs {b.size} values.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float((a * b).sum() / denom)


def comp_pcc(golden, calculated, threshold: float = 0.99) -> tuple[bool, float]:
    """(passed, value) like tt-metal's comp_pcc."""
    value = pcc(golden, calculated)
    return value >= threshold, value
