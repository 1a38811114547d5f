"""Summary statistics: the evaluations' mean intervals, and the report's IQM and bootstrap."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95


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


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The interquartile mean: 25% trimmed from each end (rliable's ``aggregate_iqm``)."""
    from scipy.stats import trim_mean

    return trim_mean(scores, 0.25, axis=axis)


# Of a label's (..., seeds, tasks) scores, all seeds and tasks together.
STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: x.reshape(*x.shape[:-2], -1).mean(axis=-1),
    "iqm": lambda x: iqm(x.reshape(*x.shape[:-2], -1), axis=-1),
}


def stratified_interval(
    statistic: Callable[[np.ndarray], np.ndarray],
    scores: Sequence[np.ndarray],
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of ``statistic`` by the stratified bootstrap over seeds.

    Args:
        statistic: ``(..., seeds, tasks) -> (...)`` of one label, or of several labels'
            arrays combined by :func:`paired` (e.g. a difference).
        scores: one ``(seeds, tasks)`` array per label; the tasks (columns) are the strata and
            each label's seeds are resampled within every task.
        resamples: bootstrap replicates.
        seed: seeds the resampling.

    Returns:
        ``(low, high)``; NaN when a label has fewer than two seeds.
    """
    from scipy.stats import bootstrap

    if min(s.shape[0] for s in scores) < 2:
        return math.nan, math.nan
    tasks = scores[0].shape[1]
    samples = tuple(column for s in scores for column in np.asarray(s, float).T)

    def stacked(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
        parts = [np.stack(columns[i * tasks : (i + 1) * tasks], -1) for i in range(len(scores))]
        return statistic(*parts)

    result = bootstrap(
        samples,
        stacked,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The statistic ``name`` of a label minus the reference's (arrays of the same tasks)."""
    return lambda label, reference: STATISTICS[name](label) - STATISTICS[name](reference)
