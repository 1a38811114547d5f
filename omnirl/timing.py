"""Wall-clock totals per named section, so every run can say where its time goes.

Sections nest freely (the totals of nested sections overlap). The trainer logs and clears them
every iteration as ``time/<section>_s``; ``bench/iteration.py`` prints them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_TOTALS: defaultdict[str, float] = defaultdict(float)


@contextmanager
def timed(section: str) -> Iterator[None]:
    """Add the wall-clock time of the block to ``section``'s total."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _TOTALS[section] += time.perf_counter() - start


def take() -> dict[str, float]:
    """Return the totals accumulated since the last call, and reset them."""
    totals = dict(_TOTALS)
    _TOTALS.clear()
    return totals
