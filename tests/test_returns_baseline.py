"""Returns, GAE, per-task normalisation and the linear feature baseline, checked by hand."""

import numpy as np
import pytest
import torch

from omnirl.baseline import LinearFeatureBaseline, baseline_features, fit_linear_baseline
from omnirl.episodes import Episodes
from omnirl.returns import discounted_returns, gae, normalize_per_task

# Two episodes (columns): the first lasts 3 steps, the second 2 of T = 3.
REW_TN = torch.tensor([[1.0, 2.0], [0.0, -1.0], [4.0, 9.0]], dtype=torch.float64)
VALID_TN = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)


def test_discounted_returns_by_hand():
    got = discounted_returns(REW_TN, VALID_TN, gamma=0.5)
    # column 0: G2 = 4, G1 = 0 + 0.5*4 = 2, G0 = 1 + 0.5*2 = 2; column 1 ignores the 9 after the end
    expected = torch.tensor([[2.0, 1.5], [2.0, -1.0], [4.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    assert torch.equal(REW_TN[2, 1], torch.tensor(9.0, dtype=torch.float64))  # inputs untouched


def test_gae_by_hand():
    values = torch.tensor([[1.0, 0.5], [2.0, 1.0], [3.0, 7.0]], dtype=torch.float64)
    gamma, lam = 0.5, 0.5
    got = gae(REW_TN, values, VALID_TN, gamma, lam)
    # column 0: d2 = 4 - 3 = 1; d1 = 0 + .5*3 - 2 = -0.5; d0 = 1 + .5*2 - 1 = 1
    #   A2 = 1, A1 = -0.5 + .25*1 = -0.25, A0 = 1 + .25*(-0.25) = 0.9375
    # column 1 (2 steps; V after the end is 0): d1 = -1 - 1 = -2, d0 = 2 + .5*1 - .5 = 2
    #   A1 = -2, A0 = 2 + .25*(-2) = 1.5
    expected = torch.tensor([[0.9375, 1.5], [-0.25, -2.0], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_gae_with_lambda_one_is_return_minus_value():
    torch.manual_seed(0)
    rew, values = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    valid = (torch.arange(6)[:, None] < torch.tensor([6, 2, 4, 1])).double()
    got = gae(rew, values, valid, gamma=0.9, lam=1.0)
    torch.testing.assert_close(got, (discounted_returns(rew, valid, 0.9) - values) * valid)


def test_normalize_per_task_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(5, 6))
    valid = (np.arange(5)[:, None] < np.array([5, 3, 4, 5, 2, 1])).astype(float)
    task = np.array([0, 0, 1, 1, 2, 2])
    got = normalize_per_task(torch.tensor(x), torch.tensor(valid), torch.tensor(task)).numpy()
    for b in range(3):
        cols = task == b
        values = x[:, cols][valid[:, cols] == 1]
        expected = (x[:, cols] - values.mean()) / (values.std() + 1e-8) * valid[:, cols]
        np.testing.assert_allclose(got[:, cols], expected, rtol=1e-10, atol=1e-12)


def test_baseline_features_by_hand():
    obs = torch.tensor([[[2.0]], [[3.0]]])  # T = 2, N = 1, O = 1
    valid = torch.tensor([[1.0], [0.0]])
    feats = baseline_features(obs, valid)
    torch.testing.assert_close(
        feats[0, 0], torch.tensor([2.0, 4.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    )
    assert (feats[1] == 0).all()  # invalid steps drop out of the fit
    t = 0.01
    feats = baseline_features(obs, torch.ones(2, 1))
    torch.testing.assert_close(
        feats[1, 0], torch.tensor([3.0, 9.0, t, t**2, t**3, 1.0], dtype=torch.float64)
    )


def make_episodes(rng, T=7, B=3, K=4, obs_dim=2):
    lengths = rng.integers(2, T + 1, size=B * K)
    valid = torch.tensor((np.arange(T)[:, None] < lengths).astype(np.float32))
    obs = torch.tensor(rng.normal(size=(T, B * K, obs_dim)), dtype=torch.float32) * valid[..., None]
    rew = torch.tensor(rng.normal(size=(T, B * K)), dtype=torch.float32) * valid
    task = torch.arange(B).repeat_interleave(K)
    return Episodes(obs, torch.zeros(T, B * K, 1), torch.zeros(T, B * K), rew, valid, task)


def test_baseline_matches_numpy_lstsq_per_task():
    rng = np.random.default_rng(1)
    episodes = make_episodes(rng)
    returns = discounted_returns(episodes.rew_TN, episodes.valid_TN, 0.99)
    reg = 1e-5
    feats = baseline_features(episodes.obs_TNO, episodes.valid_TN)
    weights = fit_linear_baseline(feats, returns, episodes.task_N, 3, reg)
    values = LinearFeatureBaseline(reg).values(episodes, returns)
    for b in range(3):
        cols = (episodes.task_N == b).numpy()
        X = feats[:, cols].reshape(-1, feats.shape[-1]).numpy()
        y = returns[:, cols].reshape(-1).double().numpy()
        # ridge == least squares on [X; sqrt(reg) I] w = [y; 0]
        X_aug = np.vstack([X, np.sqrt(reg) * np.eye(X.shape[1])])
        y_aug = np.concatenate([y, np.zeros(X.shape[1])])
        w, *_ = np.linalg.lstsq(X_aug, y_aug, rcond=None)
        np.testing.assert_allclose(weights[b].numpy(), w, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(
            values[:, cols].numpy(), (feats[:, cols].numpy() @ w), rtol=1e-4, atol=1e-5
        )


def test_baseline_fits_a_linear_target_exactly():
    rng = np.random.default_rng(2)
    episodes = make_episodes(rng, T=20, B=2, K=5)
    feats = baseline_features(episodes.obs_TNO, episodes.valid_TN)
    true_w = torch.tensor(rng.normal(size=(2, feats.shape[-1])))
    target = torch.einsum("tnf,nf->tn", feats, true_w[episodes.task_N])
    weights = fit_linear_baseline(feats, target, episodes.task_N, 2, reg=1e-12)
    torch.testing.assert_close(weights, true_w, rtol=1e-5, atol=1e-6)


def test_baseline_raises_when_no_finite_fit():
    feats = torch.full((3, 2, 4), float("nan"), dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"tasks \[0\]"):
        fit_linear_baseline(feats, torch.zeros(3, 2), torch.tensor([0, 0]), 1)
