"""``omnirl evaluate --ray``: the task chunks of every run on Ray workers, the same numbers.

An evaluation splits its tasks into chunks (:func:`omnirl.evaluation.task_chunks`), and chunk
``i`` seeds its first collection with ``chunk_seed(seed, i)``: a chunk's returns depend only
on the learner, its tasks and that seed, not on the process that collects them. So every
chunk of every run becomes one Ray task (one CPU, one thread of each kind), each learner goes
into the object store once, and the returns are put back together in task order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from omnirl import cluster

LOCAL = "local"  # --ray without an address: a new local instance


def chunk_returns(
    learner: Any,
    env_id: str,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes: int,
    flow: str | None,
    seed: int,
) -> np.ndarray:
    """One chunk's ``(steps + 1, len(tasks))`` returns, as the in-process evaluation has them."""
    from omnirl import registry
    from omnirl.collector import Collector
    from omnirl.evaluation import adaptation_returns

    registry.families()  # a fresh worker process: the families register on first use
    with Collector(env_id) as collector:  # chunk 0 too: every first collection is seeded
        return adaptation_returns(learner, collector, tasks, lrs, episodes, flow, seed=seed)


class RemoteChunks:
    """Every run's chunks submitted to Ray at once; their returns fetched run by run.

    Args:
        address: :data:`LOCAL` or an address for :func:`omnirl.cluster.connect`.
        runs: the restored runs (:class:`omnirl.checkpoint.Run`).
        env_id: their family's Gymnasium id.
        tasks: the test tasks.
        schedules: each run's learning rate per step.
        episodes: K episodes per task and step.
        flow: the flow to adapt (``None``: each learner's ``eval_flow``).
        seed: the evaluation's seed.

    Raises:
        RayMissingError: Ray is not installed.
        OptionError: the cluster cannot be reached.
    """

    def __init__(
        self,
        address: str,
        runs: Sequence[Any],
        env_id: str,
        tasks: Sequence[dict[str, Any]],
        schedules: Sequence[Sequence[float]],
        episodes: int,
        flow: str | None,
        seed: int,
    ):
        from omnirl.evaluation import task_chunks
        from omnirl.seeding import chunk_seed

        self.ray = cluster.connect(None if address == LOCAL else address)
        remote = self.ray.remote(chunk_returns).options(**cluster.task_options(1))
        self.chunks = task_chunks(tasks, episodes)
        self.refs = []
        for run, lrs in zip(runs, schedules, strict=True):
            learner = self.ray.put(run.learner)
            self.refs.append(
                [
                    remote.remote(
                        learner, env_id, chunk, list(lrs), episodes, flow, chunk_seed(seed, i)
                    )
                    for i, chunk in enumerate(self.chunks)
                ]
            )

    def returns(self, index: int, on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
        """Run ``index``'s ``(steps + 1, tasks)`` returns; ``on_chunk(tasks)`` as chunks finish."""
        size = {ref: len(chunk) for ref, chunk in zip(self.refs[index], self.chunks, strict=True)}
        pending = list(size)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            if on_chunk is not None:
                on_chunk(size[done[0]])
        return np.concatenate(self.ray.get(self.refs[index]), axis=1)
