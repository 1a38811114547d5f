"""Return after 0, 1, ..., S adaptation steps on fresh tasks (the MAML paper's test protocol).

For every task: collect K episodes with the current parameters, take one policy-gradient step
on them, re-collect, and so on. All tasks of a step run in one batched collector pass, each
with its own adapted parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.collector import Collector, RolloutGroup
from omnirl.maml import flow_params, inner_step_tasks, task_params, unstack


def default_lrs(inner_lr: float, steps: int) -> list[float]:
    """The MAML paper's test schedule: ``alpha`` for the first step, ``alpha / 2`` after."""
    return [inner_lr] + [inner_lr / 2] * max(steps - 1, 0)


def adaptation_stages(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    horizon: int | None = None,
    seed: int | None = None,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Per-task parameters and their episodes after 0, 1, ..., ``len(lrs)`` adaptation steps.

    Yields ``len(lrs) + 1`` pairs ``(params_B, episodes)``: the parameters of every task (leading
    dimension B) and the K episodes per task collected with them. Step ``s + 1`` adapts with
    ``lrs[s]`` on the episodes of step ``s`` (one step per collection, first order at test time).
    Arguments are those of :func:`adaptation_returns`.
    """
    policy = agent.policy
    flow = agent.eval_flow if flow is None else flow
    params_B = task_params(
        {k: v.detach() for k, v in flow_params(policy, flow).items()}, len(tasks)
    )
    for step in range(len(lrs) + 1):
        group = RolloutGroup(flow, unstack(params_B))
        [episodes] = collector.collect(
            policy, tasks, episodes_per_task, [group], horizon, seed if step == 0 else None
        )
        yield params_B, episodes
        if step < len(lrs):
            support = agent.batch(episodes).by_task()
            start = {k: v.detach().requires_grad_() for k, v in params_B.items()}
            adapted = inner_step_tasks(policy, start, support, flow, lrs[step], first_order=True)
            params_B = {k: v.detach() for k, v in adapted.items()}


def adaptation_returns(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    horizon: int | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Mean episode return of every task after 0..len(lrs) adaptation steps.

    Args:
        agent: an agent (its ``policy`` and ``batch`` are used).
        collector: the collector of the agent's family.
        tasks: the test tasks.
        lrs: one learning rate per adaptation step.
        episodes_per_task: K episodes per task and step.
        flow: the flow to evaluate (default: the agent's ``eval_flow``).
        horizon: episode length (default: the family's).
        seed: seeds the first collection (later ones continue the stream).

    Returns:
        ``(len(lrs) + 1, len(tasks))`` array of mean undiscounted returns.
    """
    if not getattr(agent, "adapts", True):
        # An agent that does not adapt (the oracle, told the task) is evaluated by itself, and
        # its returns are the same after any number of steps: one row, repeated.
        row_B = agent.task_returns(tasks, episodes_per_task, horizon, seed)
        return np.tile(row_B, (len(lrs) + 1, 1))
    stages = adaptation_stages(agent, collector, tasks, lrs, episodes_per_task, flow, horizon, seed)
    return np.stack([episodes.task_returns_B().numpy() for _, episodes in stages])


# Test tasks come from their own stream, never the training one (seeded by the run's seed).
TEST_STREAM = 104729


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval, ``1.96 s / sqrt(n)``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def sample_test_tasks(family: Any, num_tasks: int, seed: int) -> list[dict[str, Any]]:
    """``num_tasks`` test tasks of ``family``; the same for every run evaluated with ``seed``."""
    return family.tasks.sample(num_tasks, np.random.default_rng([seed, TEST_STREAM]))


def load_run(run_dir: str | Path, which: str = "best") -> tuple[Any, Any]:
    """The config and the agent restored from ``run_dir/checkpoints/<which>.pt``.

    Raises:
        FileNotFoundError: no run folder, or no such checkpoint (one line, for the CLI).
    """
    from omnirl import checkpoint, registry
    from omnirl.config import load_config

    path = checkpoint.run_checkpoint(run_dir, which)
    run_dir = Path(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"))
    agent = registry.make_agent(cfg)
    agent.load_state_dict(checkpoint.load(path)["agent"])
    return cfg, agent


# Sub-envs per collector pass when evaluating many tasks: large enough to keep the batched
# physics busy, small enough that the adaptation graph of a chunk fits in memory (2,000 tasks
# x 20 episodes x 200 steps at once would need tens of GB).
CHUNK_ENVS = 4000


def chunked_adaptation_returns(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    seed: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """:func:`adaptation_returns` over ``tasks`` in chunks of about :data:`CHUNK_ENVS` sub-envs.

    Chunk ``i`` seeds its first collection from ``(seed, i)`` (chunk 0 with ``seed`` itself),
    so a result depends only on the tasks, the seed and the chunk size. ``on_chunk`` is called
    with the number of tasks finished after each chunk (a progress bar).
    """
    size = max(1, CHUNK_ENVS // episodes_per_task)
    parts = []
    for index, start in enumerate(range(0, len(tasks), size)):
        chunk = tasks[start : start + size]
        chunk_seed = (
            seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        )
        parts.append(
            adaptation_returns(
                agent, collector, chunk, lrs, episodes_per_task, flow, seed=chunk_seed
            )
        )
        if on_chunk is not None:
            on_chunk(len(chunk))
    return np.concatenate(parts, axis=1)
