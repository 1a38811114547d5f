"""Summary statistics shared by every problem kind's evaluation."""

from __future__ import annotations

import numpy as np


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval, ``1.96 s / sqrt(n)``.

    The half-width is NaN for fewer than two values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def mean_ci95_rows(rows: np.ndarray) -> tuple[list[float], list[float]]:
    """:func:`mean_ci95` of every row of ``rows``: the means and the half-widths."""
    stats = [mean_ci95(row) for row in rows]
    return [m for m, _ in stats], [c for _, c in stats]
