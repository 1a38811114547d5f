"""The linear feature baseline of Duan et al. (2016), fitted per task in one batched solve."""

from __future__ import annotations

import torch

from omnirl.episodes import Episodes


def baseline_features(obs_TNO: torch.Tensor, valid_TN: torch.Tensor) -> torch.Tensor:
    """Features ``[o, o^2, t, t^2, t^3, 1]`` with ``t = step / 100``, zero on invalid steps.

    Returns:
        ``(T, N, 2*O + 4)`` float64 features.
    """
    obs_TNO = obs_TNO.double()
    mask_TN1 = valid_TN.double().unsqueeze(-1)
    t_TN1 = torch.arange(obs_TNO.shape[0], dtype=torch.float64).view(-1, 1, 1) / 100.0 * mask_TN1
    feats = [obs_TNO * mask_TN1, obs_TNO.square() * mask_TN1, t_TN1, t_TN1**2, t_TN1**3, mask_TN1]
    return torch.cat(feats, dim=-1)


def fit_linear_baseline(
    feat_TNF: torch.Tensor,
    returns_TN: torch.Tensor,
    task_N: torch.Tensor,
    num_tasks: int,
    reg: float = 1e-5,
    max_tries: int = 5,
) -> torch.Tensor:
    """Ridge regression of returns on features, one weight vector per task.

    Solves ``(X_b^T X_b + reg I) w_b = X_b^T y_b`` for every task b at once with
    ``torch.linalg.solve_ex``; a task whose solution is not finite is solved again with its
    ``reg`` multiplied by 10, up to ``max_tries`` times (as rllab and pytorch-maml-rl do).

    Args:
        feat_TNF: features, zero on invalid steps (so those rows drop out of the fit).
        returns_TN: regression targets (discounted returns).
        task_N: task index of every sub-env.
        num_tasks: B.
        reg: initial ridge coefficient.
        max_tries: how many times ``reg`` may grow.

    Returns:
        ``(B, F)`` float64 weights.

    Raises:
        FloatingPointError: some task has no finite solution after ``max_tries`` attempts.
    """
    feat_TNF = feat_TNF.double()
    returns_TN = returns_TN.double()
    num_features = feat_TNF.shape[-1]
    # X^T X and X^T y per sub-env, then summed over each task's sub-envs.
    xtx_NFF = torch.einsum("tnf,tng->nfg", feat_TNF, feat_TNF)
    xty_NF = torch.einsum("tnf,tn->nf", feat_TNF, returns_TN)
    xtx_BFF = torch.zeros(num_tasks, num_features, num_features, dtype=torch.float64)
    xtx_BFF.index_add_(0, task_N, xtx_NFF)
    xty_BF = torch.zeros(num_tasks, num_features, dtype=torch.float64).index_add_(0, task_N, xty_NF)
    eye_FF = torch.eye(num_features, dtype=torch.float64)
    reg_B = torch.full((num_tasks,), float(reg), dtype=torch.float64)
    weights_BF = torch.full_like(xty_BF, float("nan"))
    todo_B = torch.ones(num_tasks, dtype=torch.bool)
    for _ in range(max_tries):
        lhs = xtx_BFF[todo_B] + reg_B[todo_B].view(-1, 1, 1) * eye_FF
        solution, _ = torch.linalg.solve_ex(lhs, xty_BF[todo_B])
        weights_BF[todo_B] = solution
        todo_B = ~torch.isfinite(weights_BF).all(dim=1)
        if not todo_B.any():
            return weights_BF
        reg_B[todo_B] *= 10.0
    bad = torch.nonzero(todo_B).flatten().tolist()
    raise FloatingPointError(
        f"linear baseline: no finite fit for tasks {bad} (reg up to {reg_B.max():g})"
    )


class LinearFeatureBaseline:
    """State-value baseline linear in ``[o, o^2, t, t^2, t^3, 1]``, refitted per task each batch.

    References:
        Duan, Chen, Houthooft, Schulman, Abbeel. "Benchmarking Deep Reinforcement Learning for
        Continuous Control." ICML 2016 (rllab's ``LinearFeatureBaseline``).
    """

    def __init__(self, reg: float = 1e-5):
        self.reg = reg

    def values(self, episodes: Episodes, returns_TN: torch.Tensor) -> torch.Tensor:
        """Fit to ``returns_TN`` per task and return the fitted values ``(T, N)``."""
        feat_TNF = baseline_features(episodes.obs_TNO, episodes.valid_TN)
        weights_BF = fit_linear_baseline(
            feat_TNF, returns_TN, episodes.task_N, episodes.num_tasks, self.reg
        )
        values_TN = torch.einsum("tnf,nf->tn", feat_TNF, weights_BF[episodes.task_N])
        return values_TN.to(returns_TN.dtype)
