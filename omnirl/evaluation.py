"""Return after 0, 1, ..., S adaptation steps on fresh tasks (the MAML paper's test protocol).

For every task: collect K episodes with the current parameters, take one policy-gradient step
on them, re-collect, and so on. All tasks of a step run in one batched collector pass, each
with its own adapted parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.collector import Collector, RolloutGroup
from omnirl.maml import flow_params, inner_step_tasks, task_params, unstack


def default_lrs(inner_lr: float, steps: int) -> list[float]:
    """The MAML paper's test schedule: ``alpha`` for the first step, ``alpha / 2`` after."""
    return [inner_lr] + [inner_lr / 2] * max(steps - 1, 0)


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
    policy = agent.policy
    flow = agent.eval_flow if flow is None else flow
    params_B = task_params(
        {k: v.detach() for k, v in flow_params(policy, flow).items()}, len(tasks)
    )
    returns = np.zeros((len(lrs) + 1, len(tasks)))
    for step in range(len(lrs) + 1):
        group = RolloutGroup(flow, unstack(params_B))
        [episodes] = collector.collect(
            policy, tasks, episodes_per_task, [group], horizon, seed if step == 0 else None
        )
        returns[step] = episodes.task_returns_B().numpy()
        if step < len(lrs):
            # Each task continues from its own adapted parameters (one step per collection).
            support = agent.batch(episodes).by_task()
            start = {k: v.detach().requires_grad_() for k, v in params_B.items()}
            adapted = inner_step_tasks(policy, start, support, flow, lrs[step], first_order=True)
            params_B = {k: v.detach() for k, v in adapted.items()}
    return returns


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

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint {path.name}")
    cfg = load_config(str(run_dir / "config.yaml"))
    agent = registry.make_agent(cfg)
    agent.load_state_dict(checkpoint.load(path)["agent"])
    return cfg, agent
