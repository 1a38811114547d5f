"""How much gradient omni's joint flow gets from the rollouts it reuses (``joint_rollouts: reuse``).

Run: ``python results/joint_ratios.py RUN [--init]``, e.g. ::

    python results/joint_ratios.py results/sweeps/paper/halfcheetah-vel-omni-0

RUN is an omni run folder; its latest checkpoint is restored (``--init``: the agent its config
builds before training, for comparison) and one training update is run on 40 tasks drawn with
seed 12345 (collection seed 777), in memory: nothing in RUN is written. The joint flow learns
from episodes the pre- and meta-flows collected, through the importance ratio
``pi_joint / pi_behaviour`` truncated at ``1 + importance_clip`` (``omnirl.pg.pg_surrogate``);
above the cap the truncation zeroes a step's gradient. For each of the joint flow's three
surrogates (``L_pg(P)`` and the MAML term's inner step on S and outer loss on Q) this prints,
over the valid steps, the median ratio, the share of steps at or above the cap and below 0.1,
and the mean gradient weight per step: the ratio where it is below the cap, 0 above, which is
1 for on-policy data.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import omnirl.pg as pg
from omnirl import registry
from omnirl.checkpoint import load_run
from omnirl.learner import TaskDraw
from omnirl.seeding import seed_everything
from omnirl.trainer import make_agent, make_collector

NAMES = ("joint_pre (P)", "joint_meta inner (S)", "joint_meta outer (Q)")


def recorded_ratios(run: str, init: bool) -> tuple[list[np.ndarray], float]:
    """The untruncated ratios of the joint flow's surrogates on P, S and Q; the cap."""
    pre: list[np.ndarray] = []
    per_task: list[np.ndarray] = []
    surrogate = pg.pg_surrogate

    def recording(dist, act, logp_behaviour, adv, valid, ratio_cap=None, dims=None):
        # Only the joint flow's terms pass a cap (they are the off-policy ones). L_pg(P) is over
        # all steps (no dims); the MAML term's per-task losses come as its inner step on S, then
        # its outer loss on Q, which needs the adapted parameters.
        if ratio_cap is not None:
            with torch.no_grad():
                ratio = torch.exp(dist.log_prob(act).sum(-1) - logp_behaviour)
                (pre if dims is None else per_task).append(ratio[valid.bool()].double().numpy())
        return surrogate(dist, act, logp_behaviour, adv, valid, ratio_cap, dims)

    torch.set_num_threads(1)
    restored = load_run(run, "latest")
    cfg, agent = restored.cfg, restored.learner
    if cfg.agent != "omni" or cfg.joint_rollouts != "reuse":
        raise SystemExit(f"error: {run} is not an omni run that reuses rollouts")
    if init:
        seed_everything(cfg.seed)
        agent = make_agent(cfg)
    family = registry.get_family(cfg.family)
    tasks = family.tasks.sample(cfg.tasks_per_iteration, np.random.default_rng(12345))
    pg.pg_surrogate = recording  # batch_surrogate and task_surrogate look it up at call time
    try:
        agent.update(TaskDraw(make_collector(cfg, family.env_id), tasks, 777))
    finally:
        pg.pg_surrogate = surrogate
    return [pre[0], per_task[0], per_task[1]], 1.0 + cfg.importance_clip


def main(argv: list[str]) -> None:
    """Print the ratio statistics of ``argv[0]`` (``--init`` anywhere: before training)."""
    init = "--init" in argv
    run = next(a for a in argv if a != "--init")
    ratios, cap = recorded_ratios(run, init)
    print(f"{run} ({'before training' if init else 'latest checkpoint'}), cap {cap:g}")
    print("| surrogate | steps | median ratio | >= cap | < 0.1 | mean gradient weight |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in zip(NAMES, ratios, strict=True):
        weight = np.where(r < cap, r, 0.0).mean()
        print(
            f"| {name} | {r.size} | {np.median(r):.3f} | {np.mean(r >= cap):.2f} "
            f"| {np.mean(r < 0.1):.2f} | {weight:.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
