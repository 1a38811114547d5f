"""Sinusoid regression: tasks, Omni-Net regressor, supervised MAML, the loop, evaluate, render."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from omnirl import checkpoint, registry
from omnirl.agents.omni_net import FLOWS
from omnirl.agents.sinusoid import (
    OmniRegression,
    RegressionBatch,
    adapt,
    maml_loss,
    task_mse,
)
from omnirl.agents.sinusoid_net import MLPRegressor, inner_params, omni_regressor
from omnirl.config import ConfigError, load_config
from omnirl.envs.sinusoid import (
    MetaBatch,
    make_dataset,
    sample_batch,
    sine,
    task_arrays,
)
from omnirl.functional import flow_params, task_call, task_params, unstack
from omnirl.learner import Learner
from omnirl.options import EvaluateOptions, OptionError, RenderOptions
from omnirl.report import write_report
from omnirl.sinusoid.config import SinusoidConfig, make_learner
from omnirl.sinusoid.evaluate import adaptation_mse, evaluate_report, evaluate_runs
from omnirl.sinusoid.render import render_report
from omnirl.sinusoid.train import SinusoidTrainer


# ---------------------------------------------------------------------------------- tasks
def test_dataset_ranges_shapes_and_determinism():
    data = make_dataset(500, 50, np.random.default_rng(3))
    assert data.x_BN.shape == data.y_BN.shape == (500, 50) and data.x_BN.dtype == np.float32
    assert 0.1 <= data.amplitude_B.min() and data.amplitude_B.max() <= 5.0
    assert 0.0 <= data.phase_B.min() and data.phase_B.max() <= 2 * math.pi
    assert -5.0 <= data.x_BN.min() and data.x_BN.max() <= 5.0
    np.testing.assert_allclose(
        data.y_BN, data.amplitude_B[:, None] * np.sin(data.x_BN - data.phase_B[:, None]), atol=1e-5
    )
    again = make_dataset(500, 50, np.random.default_rng(3))
    assert np.array_equal(data.x_BN, again.x_BN) and np.array_equal(data.y_BN, again.y_BN)
    assert json.dumps(data.tasks()[:2])  # tasks are JSON-serialisable dicts


def test_sine_by_hand():
    y = sine(np.array([2.0]), np.array([math.pi / 2]), np.array([[0.0, math.pi / 2, math.pi]]))
    np.testing.assert_allclose(y, [[-2.0, 0.0, 2.0]], atol=1e-12)


def test_meta_batch_support_and_query_are_disjoint_points_of_one_task():
    data = make_dataset(7, 12, np.random.default_rng(0))
    x_s, y_s, x_q, y_q = sample_batch(data, 5, 4, 6, np.random.default_rng(1))
    assert x_s.shape == y_s.shape == (5, 4) and x_q.shape == y_q.shape == (5, 6)
    for b in range(5):
        [task] = np.flatnonzero((data.x_BN == x_s[b, 0]).any(axis=1))  # the row's one task
        y_of = dict(zip(data.x_BN[task].tolist(), data.y_BN[task].tolist(), strict=True))
        assert [y_of[x] for x in x_s[b].tolist()] == y_s[b].tolist()
        assert [y_of[x] for x in x_q[b].tolist()] == y_q[b].tolist()
        assert not set(x_s[b].tolist()) & set(x_q[b].tolist())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: task_arrays([{"amplitude": 7.0, "phase": 0.0}]),
            "'amplitude' = 7.0 is out of range",
        ),
        (lambda: task_arrays([{"amplitude": 1.0}]), "missing field 'phase'"),
        (lambda: task_arrays([{"amplitude": 1.0, "phase": 0, "x": 1}]), "unknown task field"),
        (
            lambda: sample_batch(make_dataset(2, 8, np.random.default_rng(0)), 2, 5, 4, None),
            "shots + queries = 9 exceeds the 8 points",
        ),
        (lambda: make_dataset(0, 5, np.random.default_rng(0)), "number of tasks must be >= 1"),
    ],
)
def test_bad_task_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace(".", r"\.")):
        call()


# --------------------------------------------------------------------------------- models
@pytest.mark.parametrize("flow", FLOWS)
def test_omni_regressor_shapes_and_equal_flows_at_init(flow):
    torch.manual_seed(0)
    model = omni_regressor(hidden=(8, 8), rank=2)
    x = torch.randn(3, 5, 1)
    assert model(x, flow=flow).shape == (3, 5, 1)
    torch.testing.assert_close(model(x, flow=flow), model(x, flow="joint"), rtol=0, atol=0)
    names = model.flow_parameter_names(flow)
    assert any(n.startswith(f"heads.{flow}.") for n in names)
    assert all(".pre." not in n for n in names) or flow == "pre"
    # Per-task parameters through vmap equal the module's own call.
    params_B = task_params(flow_params(model, flow), 3)
    torch.testing.assert_close(task_call(model, params_B, x, flow=flow), model(x, flow=flow))


def test_mlp_regressor_has_one_flow():
    model = MLPRegressor(hidden=(4,))
    assert model(torch.zeros(2, 3, 1)).shape == (2, 3, 1)
    assert model.flow_parameter_names() == [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="single flow"):
        model(torch.zeros(1, 1), flow="meta")


# ---------------------------------------------------------------------- supervised MAML
def tiny_arrays(seed=0):
    """The numpy meta-batch a learner's update takes: 3 tasks, 4 support and 5 query points."""
    data = make_dataset(4, 9, np.random.default_rng(seed))
    return sample_batch(data, 3, 4, 5, np.random.default_rng(seed + 1))


def tiny_batch(seed=0, dtype=torch.float64):
    arrays = tiny_arrays(seed)
    return RegressionBatch(*(torch.as_tensor(a, dtype=dtype).unsqueeze(-1) for a in arrays))


def test_second_order_regression_meta_gradient_matches_finite_differences(numeric_gradient):
    torch.manual_seed(1)
    model = MLPRegressor(hidden=(5,)).double()
    batch, lrs = tiny_batch(), [0.3, 0.2]  # two inner steps: the Hessian terms compound
    params = list(model.parameters())
    loss, _ = maml_loss(model, batch, None, lrs)
    analytic = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    numeric = numeric_gradient(lambda: maml_loss(model, batch, None, lrs)[0], params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("branches", [True, False])
def test_omni_meta_flow_gradient_matches_finite_differences(branches, numeric_gradient):
    torch.manual_seed(2)
    model = omni_regressor(hidden=(4,), rank=2).double()
    for p in model.parameters():  # non-zero branches, so the folded path carries gradient
        torch.nn.init.normal_(p, std=0.4)
    batch = tiny_batch(seed=3)
    # Every parameter the meta flow uses gets the outer gradient, adapted in the inner step
    # or not (branches=False: the branch factors are outer-loop parameters only).
    params = [dict(model.named_parameters())[n] for n in model.flow_parameter_names("meta")]

    def objective():
        return maml_loss(model, batch, "meta", [0.25], branches=branches)[0]

    analytic = torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective(), params)])
    numeric = numeric_gradient(objective, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_inner_steps_leave_the_branches_to_the_outer_loop_unless_asked():
    model = omni_regressor(hidden=(4, 4), rank=2)
    everything = inner_params(model, "meta", branches=True)
    assert set(everything) == set(model.flow_parameter_names("meta"))
    inner = inner_params(model, "meta", branches=False)
    assert set(inner) == {n for n in everything if ".meta.up." not in n and ".meta.down." not in n}
    assert {"layers.0.joint.weight", "layers.1.joint.bias", "heads.meta.weight"} <= set(inner)
    plain = MLPRegressor(hidden=(3,))
    assert set(inner_params(plain, None, branches=False)) == {
        n for n, _ in plain.named_parameters()
    }


def test_first_order_is_the_query_gradient_at_the_adapted_parameters():
    torch.manual_seed(3)
    model = MLPRegressor(hidden=(5,)).double()
    batch, lr = tiny_batch(seed=5), 0.3
    params = list(model.parameters())
    first = torch.autograd.grad(maml_loss(model, batch, None, [lr], True)[0], params)
    second = torch.autograd.grad(maml_loss(model, batch, None, [lr], False)[0], params)
    expected = [torch.zeros_like(p) for p in params]
    for b in range(3):  # one task at a time, adapted by hand with an ordinary module call
        theta = dict(model.named_parameters())
        pred = torch.func.functional_call(model, theta, (batch.x_support_BK1[b],))
        loss_s = (pred - batch.y_support_BK1[b]).square().mean()
        grads = torch.autograd.grad(loss_s, list(theta.values()))
        leaves = {
            k: (v - lr * g).detach().requires_grad_()
            for (k, v), g in zip(theta.items(), grads, strict=True)
        }
        pred_q = torch.func.functional_call(model, leaves, (batch.x_query_BQ1[b],))
        loss_q = (pred_q - batch.y_query_BQ1[b]).square().mean() / 3
        for acc, g in zip(
            expected, torch.autograd.grad(loss_q, list(leaves.values())), strict=True
        ):
            acc += g
    for f, e in zip(first, expected, strict=True):
        torch.testing.assert_close(f, e)
    assert any((f - s).abs().max() > 1e-6 for f, s in zip(first, second, strict=True))


def test_batched_adaptation_equals_one_task_at_a_time():
    torch.manual_seed(4)
    model = omni_regressor(hidden=(6,), rank=2).double()
    batch = tiny_batch(seed=7)
    params = flow_params(model, "meta")
    batched = unstack(
        adapt(model, params, batch.x_support_BK1, batch.y_support_BK1, "meta", [0.1, 0.05])
    )
    for b in range(3):
        x, y = batch.x_support_BK1[b : b + 1], batch.y_support_BK1[b : b + 1]
        single = unstack(adapt(model, params, x, y, "meta", [0.1, 0.05]))[0]
        for name in params:
            torch.testing.assert_close(batched[b][name], single[name])


def test_task_mse_by_hand():
    pred = torch.tensor([[[1.0], [2.0]], [[0.0], [0.0]]])
    target = torch.tensor([[[0.0], [0.0]], [[3.0], [1.0]]])
    torch.testing.assert_close(task_mse(pred, target), torch.tensor([2.5, 5.0]))


def smoke_cfg(*sets, run_dir="runs"):
    """The smoke config; learners and the functions below never create its run_dir."""
    return load_config("smoke-sinusoid", [f"run_dir={run_dir}", *sets], schema=SinusoidConfig)


def test_omni_update_moves_every_flow_and_the_teacher_follows_by_ema():
    torch.manual_seed(0)
    agent = OmniRegression(smoke_cfg())
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    batch = tiny_arrays()
    assert isinstance(batch, MetaBatch) and isinstance(batch.x_support_BK, np.ndarray)
    metrics = agent.update(batch)  # plain numpy in: the learner makes its tensors
    assert (
        metrics["train/pre_distill"] == 0 and metrics["train/meta_distill"] == 0
    )  # teacher = student
    for key in ("train/pre_mse", "train/meta_mse", "train/joint_pre_mse", "train/joint_meta_mse"):
        assert metrics[key] > 0
    after = agent.model.state_dict()
    for flow in FLOWS:  # every head and the branches moved (up factors start at zero)
        assert not torch.equal(after[f"heads.{flow}.weight"], before[f"heads.{flow}.weight"])
    assert not torch.equal(after["layers.0.pre.up.weight"], before["layers.0.pre.up.weight"])
    assert not torch.equal(after["layers.0.meta.up.weight"], before["layers.0.meta.up.weight"])
    teacher = agent.teacher.module.state_dict()
    for name, value in before.items():
        torch.testing.assert_close(teacher[name], 0.99 * value + 0.01 * after[name])


def test_distill_terms_are_logged_unweighted_and_weighted_by_lambda_in_the_loss():
    torch.manual_seed(0)
    agent = OmniRegression(smoke_cfg("distill_weight=2.5", "ema_decay=0.5"))
    agent.update(tiny_arrays(seed=0))  # the teacher now lags the student: R > 0
    metrics = agent.update(tiny_arrays(seed=2))
    assert metrics["train/pre_distill"] > 0 and metrics["train/meta_distill"] > 0
    terms = {k.removeprefix("train/"): v for k, v in metrics.items()}
    expected = sum(terms[f"{t}_mse"] for t in ("pre", "meta", "joint_pre", "joint_meta"))
    expected += 2.5 * (terms["pre_distill"] + terms["meta_distill"])
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["train/grad_norm"] > 0


def test_a_non_finite_loss_updates_nothing():
    torch.manual_seed(0)
    agent = make_learner(smoke_cfg("agent=maml"))
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    x_s, y_s, x_q, y_q = tiny_arrays()
    with pytest.raises(FloatingPointError, match="non-finite outer loss"):
        agent.update(MetaBatch(x_s, y_s, x_q, np.full_like(y_q, np.nan)))
    for name, value in agent.model.state_dict().items():
        assert torch.equal(value, before[name])


@pytest.mark.parametrize("name", registry.learner_names("sinusoid"))
def test_every_registered_sinusoid_learner_implements_the_contract(name):
    learner = make_learner(smoke_cfg(f"agent={name}"))
    assert isinstance(learner, Learner)
    assert (learner.name, learner.kind, learner.adapts, learner.trains) == (
        name,
        "sinusoid",
        True,
        True,
    )
    assert learner.eval_flow in learner.flows
    metrics = learner.update(tiny_arrays())
    assert metrics["train/loss"] > 0 and all(k.startswith("train/") for k in metrics)
    fresh = make_learner(smoke_cfg(f"agent={name}"))
    fresh.load_state_dict(learner.state_dict())
    for key, value in learner.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value)


def test_the_agent_key_follows_the_learner_registry(monkeypatch):
    monkeypatch.setitem(
        registry._LEARNERS, ("sinusoid", "mine"), "omnirl.agents.sinusoid:MAMLRegression"
    )
    assert smoke_cfg("agent=mine").agent == "mine"
    assert isinstance(make_learner(smoke_cfg("agent=mine")), Learner)
    with pytest.raises(ConfigError, match="allowed: one of omni, maml, pretrain, joint, mine"):
        smoke_cfg("agent=theirs")


def test_adapted_predictions_start_at_the_model_and_reduce_support_error():
    torch.manual_seed(0)
    cfg = smoke_cfg("agent=maml", "hidden_sizes=[16]")
    agent = make_learner(cfg)
    data = make_dataset(6, 30, np.random.default_rng(0))
    mse = adaptation_mse(agent, data, 10, [0.05] * 5, queries=10)
    assert mse.shape == (6, 6)
    x = torch.as_tensor(data.x_BN[:, -10:]).unsqueeze(-1)
    direct = task_mse(agent.model(x), torch.as_tensor(data.y_BN[:, -10:]).unsqueeze(-1))
    np.testing.assert_allclose(mse[0], direct.detach().numpy(), rtol=1e-6)
    x_s, y_s = (torch.as_tensor(a[:, :10]).unsqueeze(-1) for a in (data.x_BN, data.y_BN))
    pred = agent.adapted_predictions(x_s, y_s, x_s, [0.05] * 5)
    support_mse = (pred - y_s).square().mean(dim=(1, 2, 3))
    assert (support_mse[1:] < support_mse[:-1]).all()  # small SGD steps descend the support loss
    assert all(p.grad is None for p in agent.model.parameters())  # the model is untouched


# ---------------------------------------------------------------------- config and loop
def test_the_sinusoid_kind_names_its_entry_points():
    kind = registry.kinds()["sinusoid"]
    assert kind.load("config") is SinusoidConfig and kind.load("trainer") is SinusoidTrainer
    assert kind.load("learner") is make_learner
    assert kind.load("evaluate") is evaluate_report and kind.load("render") is render_report
    assert kind.load("data").make_dataset is make_dataset
    assert registry.kind_of("sinusoid") is kind
    assert set(registry.learner_names("sinusoid")) == {"omni", "maml", "pretrain", "joint"}


def test_config_is_strict():
    with pytest.raises(ConfigError, match="unknown config key 'shot'.*did you mean 'shots'"):
        smoke_cfg("shot=3")
    with pytest.raises(ConfigError, match="'agent' = 'random' is not allowed"):
        smoke_cfg("agent=random")
    with pytest.raises(ConfigError, match="'agent' = 'oracle' is not allowed"):
        smoke_cfg("agent=oracle")
    with pytest.raises(ConfigError, match="'shots' \\+ 'query_points' = 13 exceed"):
        smoke_cfg("shots=8")
    with pytest.raises(ConfigError, match="'inner_lr' = -1.0 is out of range"):
        load_config("sinusoid", ["inner_lr=-1"], schema=SinusoidConfig)
    cfg = load_config("sinusoid", schema=SinusoidConfig)
    assert (cfg.train_tasks, cfg.points_per_task, cfg.inner_lr) == (30000, 50, 0.02)


def test_training_resumes_bit_for_bit(tmp_path):
    full = SinusoidTrainer(smoke_cfg("iterations=6", run_dir=tmp_path / "a"))
    full.train()
    lines = (full.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [2, 4, 6]
    first = json.loads(lines[0])
    assert {"train/meta_distill", "eval/mse_pre", "eval/mse_post", "time/sps"} <= set(first)
    assert f"eval MSE after 1 step {first['eval/mse_post']:.3f}" in SinusoidTrainer.progress_stats(
        first
    )
    half = SinusoidTrainer(smoke_cfg("iterations=4", run_dir=tmp_path / "b"))
    half.train()
    resumed = SinusoidTrainer.resume(half.run_dir, iterations=6)
    resumed.train()
    a = checkpoint.load(full.run_dir / "checkpoints" / "latest.pt")["agent"]
    b = checkpoint.load(resumed.run_dir / "checkpoints" / "latest.pt")["agent"]
    for key in ("model", "teacher"):
        state_a = a[key]["module"] if key == "teacher" else a[key]
        state_b = b[key]["module"] if key == "teacher" else b[key]
        for name in state_a:
            assert torch.equal(state_a[name], state_b[name]), (key, name)

    def untimed(text):  # wall times differ between runs; every other logged number is equal
        rows = [json.loads(line) for line in text.splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]

    assert untimed((resumed.run_dir / "metrics.jsonl").read_text()) == untimed("\n".join(lines))


def test_best_checkpoint_is_the_lowest_post_adaptation_mse(tmp_path):
    trainer = SinusoidTrainer(smoke_cfg("iterations=6", "log_every=1", run_dir=tmp_path))
    trainer.train()
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").open()]
    best = min(rows, key=lambda row: row["eval/mse_post"])
    state = checkpoint.load(trainer.run_dir / "checkpoints" / "best.pt")
    assert (state["iteration"], state["best"]) == (best["iteration"], best["eval/mse_post"])


# ------------------------------------------------------------------- evaluate and render
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A smoke omni run and a maml run, 4 iterations each."""
    root = tmp_path_factory.mktemp("sinusoid")
    runs = {}
    for agent in ("omni", "maml"):
        cfg = smoke_cfg(f"agent={agent}", "iterations=4", run_dir=root / "runs")
        runs[agent] = SinusoidTrainer(cfg).train()
        assert runs[agent].name.startswith(f"sinusoid-{agent}-0-")
    return runs


def test_train_evaluate_render(trained_runs, tmp_path):
    cfg = yaml.safe_load((trained_runs["omni"] / "config.yaml").read_text())
    assert cfg["family"] == "sinusoid" and cfg["iterations"] == 4
    out = tmp_path / "eval"
    progress = []
    options = EvaluateOptions(tasks=6, steps=3, shots="2,5", out=out)
    report = evaluate_report(
        list(trained_runs.values()), options, lambda *args: progress.append(args)
    )
    assert progress[-1][1:] == (4, 4) and len(progress) == 4  # 2 runs x 2 K's
    assert report.columns == ["run", "K", "0 steps", "1 step", "2 steps", "3 steps"]
    assert len(report.rows) == 4 and report.rows[0][1] == "2" and " ± " in report.rows[0][2]
    written = write_report(report)
    assert set(written) == {out / "eval.json", out / "eval.csv", out / "eval.png"}
    payload = json.loads((out / "eval.json").read_text())
    assert payload == json.loads(json.dumps(report.payload))
    assert payload["shots"] == [2, 5] and len(payload["tasks"]) == 6
    omni, maml = payload["runs"]
    assert (omni["agent"], omni["flow"], maml["flow"]) == ("omni", "meta", None)
    assert np.array(omni["mse"]["5"]["tasks"]).shape == (4, 6)  # steps 0..3 x tasks
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "eval.csv").read_text().splitlines()) == 1 + 2 * 2 * 4
    png = tmp_path / "waves.png"
    task = '{"amplitude": 2.0, "phase": 1.0}'
    options = RenderOptions(task=task, steps="0,2", out=png)
    report = render_report(trained_runs["omni"], options)
    assert not png.exists()  # nothing is written until the report is
    assert write_report(report) == [png]
    assert png.read_bytes()[:4] == b"\x89PNG" and "2 steps" in report.columns
    assert report.payload["task"] == {"amplitude": 2.0, "phase": 1.0}
    assert [row[0] for row in report.rows] == ["5", "10"]  # the default K's


def test_a_run_without_best_pt_is_evaluated_from_latest_with_a_note(trained_runs, tmp_path):
    cfg = smoke_cfg("iterations=1", run_dir=tmp_path / "runs")
    run = SinusoidTrainer(cfg).train()
    (run / "checkpoints" / "best.pt").unlink()  # as a run before its first quick evaluation
    report = evaluate_report([run], EvaluateOptions(tasks=2, steps=1, shots="3"))
    assert report.payload["runs"][0]["checkpoint"] == "latest"
    assert len(report.notes) == 1 and "using latest.pt" in report.notes[0]
    assert set(report.files) == {run / "eval.json", run / "eval.csv", run / "eval.png"}


def test_same_test_tasks_for_every_run_and_seed(trained_runs):
    a = evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=5)
    b = evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=5)
    assert a == b
    c = evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=6)
    assert a["tasks"] != c["tasks"]


EVALUATE, RENDER = evaluate_report, render_report


@pytest.mark.parametrize(
    ("command", "runs", "options", "error", "message"),
    [
        (EVALUATE, "omni", {"shots": "0,5"}, OptionError, "--shots values must lie in 1..1000"),
        (EVALUATE, "omni", {"shots": "five"}, OptionError, "--shots takes comma-separated"),
        (EVALUATE, "omni", {"episodes": 3}, OptionError, "--episodes does not apply to sinusoid"),
        (EVALUATE, "omni", {"data": ("glyphs",)}, OptionError, "--data does not apply"),
        (EVALUATE, "omni", {"flow": "sideways"}, OptionError, "--flow 'sideways' does not exist"),
        (EVALUATE, "maml", {"flow": "meta"}, OptionError, "(its flows: none)"),
        (EVALUATE, "omni", {"steps": 2, "lr_schedule": "0.1"}, OptionError, "needs 2 positive"),
        (EVALUATE, "omni", {"checkpoint": "worst"}, OptionError, "best or latest"),
        (EVALUATE, "omni nav", {}, OptionError, "runs of different families cannot share"),
        (EVALUATE, "nav", {}, OptionError, "is not a sinusoid run (family: navigation-2d)"),
        (EVALUATE, "omni missing", {}, FileNotFoundError, "no-such-run is not a run folder"),
        (EVALUATE, "omni", {"out": "{tmp}/file.txt/sub"}, OSError, "cannot write to"),
        (RENDER, "omni", {"task": '{"amplitude": 9, "phase": 0}'}, OptionError, "'amplitude' = 9"),
        (RENDER, "omni", {"task": "amplitude"}, OptionError, "--task must be JSON like"),
        (RENDER, "omni", {"out": "{tmp}/w.gif"}, OptionError, "must be a file ending in .png"),
        (RENDER, "omni", {"sample": True}, OptionError, "--sample does not apply to sinusoid"),
        (RENDER, "omni", {"steps": "0,200"}, OptionError, "--steps values must lie in 0..100"),
        (RENDER, "empty", {"checkpoint": "best"}, FileNotFoundError, "has no checkpoint best.pt"),
    ],
)
def test_bad_input_is_one_clear_line(
    trained_runs, tmp_path, command, runs, options, error, message
):
    nav, empty = tmp_path / "nav-run", tmp_path / "empty-run"
    for folder, config in ((nav, "family: navigation-2d\n"), (empty, "family: sinusoid\n")):
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
    (tmp_path / "file.txt").write_text("not a folder")
    paths = {**trained_runs, "nav": nav, "empty": empty, "missing": tmp_path / "no-such-run"}
    folders = [paths[name] for name in runs.split()]
    if "out" in options:
        options["out"] = Path(options["out"].replace("{tmp}", str(tmp_path)))
    if command is RENDER:
        options.setdefault("out", tmp_path / "waves.png")
        call = lambda: RENDER(folders[0], RenderOptions(**options))  # noqa: E731
    else:
        options.setdefault("out", tmp_path / "eval")
        call = lambda: EVALUATE(folders, EvaluateOptions(**options))  # noqa: E731
    with pytest.raises(error) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not list(tmp_path.glob("eval/*")) and not (tmp_path / "waves.png").exists()


def test_resuming_a_run_without_a_checkpoint_is_one_clear_line(tmp_path):
    (tmp_path / "config.yaml").write_text("family: sinusoid\n")
    with pytest.raises(FileNotFoundError, match="has no checkpoint to resume"):
        SinusoidTrainer.resume(tmp_path)
