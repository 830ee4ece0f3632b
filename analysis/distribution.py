"""The shape of a distribution of values (weights or activations): is it bimodal?

Training under multiplicative noise may push weights or activations towards two values
(self-binarisation, the paper's claim (c)). :func:`bimodality_coefficient` measures that with
Sarle's bimodality coefficient, from the sample's skewness and excess kurtosis:

    b = (g² + 1) / (κ + 3 (n − 1)² / ((n − 2)(n − 3)))

with g and κ the bias-corrected sample skewness and excess kurtosis (G1, G2). For large n,
b → (γ₁² + 1) / β₂ (β₂ the plain kurtosis), so a Gaussian gives 1/3, a uniform distribution
5/9, and two equal point masses (±c) 1; values above 5/9 suggest two modes (a heavy-tailed
unimodal distribution gives less than 1/3). It is scale free, so it compares layers and
models directly; it says nothing about *where* the modes are, which the shares near zero and
at the extremes (:mod:`analysis.weights`, :mod:`analysis.activations`) add.

:func:`bimodality_from_moments` computes it from central moments, for statistics gathered in
pieces (activations over batches).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["bimodality_coefficient", "bimodality_from_moments", "BIMODALITY_THRESHOLD"]

#: b of a uniform distribution; Sarle's rule of thumb reads b above it as bimodal.
BIMODALITY_THRESHOLD = 5 / 9


def bimodality_from_moments(n: int, m2: float, m3: float, m4: float) -> float:
    """Sarle's bimodality coefficient of ``n`` values with population central moments
    ``m2, m3, m4`` (mean of (x − mean)^k). NaN for fewer than 4 values or constant values
    (no spread, no shape)."""
    if n < 4 or not m2 > 0:
        return math.nan
    g1 = m3 / m2 ** 1.5                      # population skewness
    g2 = m4 / m2 ** 2 - 3.0                  # population excess kurtosis
    skew = g1 * math.sqrt(n * (n - 1)) / (n - 2)                  # G1
    kurt = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6.0)   # G2
    return float((skew ** 2 + 1.0) / (kurt + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def bimodality_coefficient(values) -> float:
    """Sarle's bimodality coefficient of ``values`` (any shape, flattened; see the module
    docstring): ≈ 1/3 for a Gaussian, 5/9 for a uniform, 1 for two equal point masses.
    NaN for fewer than 4 values or constant values; ValueError for NaN or infinite ones."""
    x = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("values contain NaN or infinite values")
    if x.size < 4:
        return math.nan
    d = x - x.mean()
    d2 = d * d
    return bimodality_from_moments(x.size, float(d2.mean()), float((d2 * d).mean()),
                                   float((d2 * d2).mean()))
