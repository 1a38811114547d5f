"""Sinusoid regression: tasks, Omni-Net regressor, supervised MAML, the loop and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from test_policies_maml import numeric_gradient
from typer.testing import CliRunner

from omnirl import checkpoint, regression
from omnirl.agents.omni_net import FLOWS
from omnirl.agents.regression import (
    MLPRegressor,
    OmniRegression,
    RegressionBatch,
    adapt,
    inner_params,
    maml_loss,
    omni_regressor,
    task_mse,
)
from omnirl.cli import app
from omnirl.config import ConfigError, load_config
from omnirl.envs.sinusoid import (
    make_dataset,
    sample_batch,
    sine,
    task_arrays,
)
from omnirl.maml import flow_params, task_call, task_params, unstack

runner = CliRunner()


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
def tiny_batch(seed=0, dtype=torch.float64):
    data = make_dataset(4, 9, np.random.default_rng(seed))
    arrays = sample_batch(data, 3, 4, 5, np.random.default_rng(seed + 1))
    return RegressionBatch(*(torch.as_tensor(a, dtype=dtype).unsqueeze(-1) for a in arrays))


def test_second_order_regression_meta_gradient_matches_finite_differences():
    torch.manual_seed(1)
    model = MLPRegressor(hidden=(5,)).double()
    batch, lrs = tiny_batch(), [0.3, 0.2]  # two inner steps: the Hessian terms compound
    params = list(model.parameters())
    loss, _ = maml_loss(model, batch, None, lrs)
    analytic = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    numeric = numeric_gradient(lambda: maml_loss(model, batch, None, lrs)[0], params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("branches", [True, False])
def test_omni_meta_flow_gradient_matches_finite_differences(branches):
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
    """The smoke config; agents and the functions below never create its run_dir."""
    return load_config("smoke-sinusoid", [f"run_dir={run_dir}", *sets], schema=regression.Config)


def test_omni_update_moves_every_flow_and_the_teacher_follows_by_ema():
    torch.manual_seed(0)
    agent = OmniRegression(smoke_cfg())
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    metrics = agent.update(tiny_batch(dtype=torch.float32))
    assert (
        metrics["train/pre_distill"] == 0 and metrics["train/meta_distill"] == 0
    )  # teacher = student
    for key in ("train/pre", "train/meta", "train/joint_pre", "train/joint_meta"):
        assert metrics[key] > 0
    after = agent.model.state_dict()
    for flow in FLOWS:  # every head and the branches moved (up factors start at zero)
        assert not torch.equal(after[f"heads.{flow}.weight"], before[f"heads.{flow}.weight"])
    assert not torch.equal(after["layers.0.pre.up.weight"], before["layers.0.pre.up.weight"])
    assert not torch.equal(after["layers.0.meta.up.weight"], before["layers.0.meta.up.weight"])
    teacher = agent.teacher.module.state_dict()
    for name, value in before.items():
        torch.testing.assert_close(teacher[name], 0.99 * value + 0.01 * after[name])


def test_adapted_predictions_start_at_the_model_and_reduce_support_error():
    torch.manual_seed(0)
    cfg = smoke_cfg("agent=maml", "hidden_sizes=[16]")
    agent = regression.make_agent(cfg)
    data = make_dataset(6, 30, np.random.default_rng(0))
    mse = regression.adaptation_mse(agent, data, 10, [0.05] * 5, queries=10)
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
def test_list_names_the_supervised_module():
    result = runner.invoke(app, ["list"], terminal_width=200)
    assert result.exit_code == 0 and "supervised modules: sinusoid" in result.output


def test_config_is_strict():
    with pytest.raises(ConfigError, match="unknown config key 'shot'.*did you mean 'shots'"):
        smoke_cfg("shot=3")
    with pytest.raises(ConfigError, match="'agent' = 'random' is not allowed"):
        smoke_cfg("agent=random")
    with pytest.raises(ConfigError, match="'shots' \\+ 'query_points' = 13 exceed"):
        smoke_cfg("shots=8")
    cfg = load_config("sinusoid", schema=regression.Config)
    assert (cfg.train_tasks, cfg.points_per_task, cfg.inner_lr) == (30000, 50, 0.02)


def test_training_resumes_bit_for_bit(tmp_path):
    full = regression.Trainer(smoke_cfg("iterations=6", run_dir=tmp_path / "a"))
    full.train()
    lines = (full.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [2, 4, 6]
    assert {"train/meta_distill", "eval/mse_after", "time/sps"} <= set(json.loads(lines[0]))
    half = regression.Trainer(smoke_cfg("iterations=4", run_dir=tmp_path / "b"))
    half.train()
    resumed = regression.Trainer.resume(half.run_dir, iterations=6)
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


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A smoke omni run and a maml run trained through the command line."""
    root = tmp_path_factory.mktemp("sinusoid")
    runs = {}
    for agent in ("omni", "maml"):
        args = ["train", "smoke-sinusoid", "--agent", agent, "--iterations", "4", "--no-progress"]
        result = runner.invoke(app, [*args, "--set", f"run_dir={root / 'runs'}"])
        assert result.exit_code == 0, result.output
        [runs[agent]] = (root / "runs").glob(f"sinusoid-{agent}-0-*")
    return runs


def test_train_evaluate_render_through_the_cli(trained_runs, tmp_path):
    cfg = yaml.safe_load((trained_runs["omni"] / "config.yaml").read_text())
    assert cfg["family"] == "sinusoid" and cfg["iterations"] == 4
    out = tmp_path / "eval"
    args = ["evaluate", *map(str, trained_runs.values()), "--tasks", "6", "--steps", "3"]
    result = runner.invoke(app, [*args, "--shots", "2,5", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    assert payload["shots"] == [2, 5] and len(payload["tasks"]) == 6
    omni, maml = payload["runs"]
    assert (omni["agent"], omni["flow"], maml["flow"]) == ("omni", "meta", None)
    assert np.array(omni["mse"]["5"]["tasks"]).shape == (4, 6)  # steps 0..3 x tasks
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "eval.csv").read_text().splitlines()) == 1 + 2 * 2 * 4
    png = tmp_path / "waves.png"
    task = '{"amplitude": 2.0, "phase": 1.0}'
    args = [
        "render",
        str(trained_runs["omni"]),
        "--task",
        task,
        "--steps",
        "0,2",
        "--out",
        str(png),
    ]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG" and "2 steps" in result.output


def test_same_test_tasks_for_every_run_and_seed(trained_runs):
    a = regression.evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=5)
    b = regression.evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=5)
    assert a == b
    c = regression.evaluate_runs([trained_runs["maml"]], tasks=3, shots=(4,), steps=1, seed=6)
    assert a["tasks"] != c["tasks"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "sinusoid", "--set", "inner_lr=-1"], "'inner_lr' = -1.0 is out of range"),
        (["train", "smoke-sinusoid", "--agent", "oracle"], "'agent' = 'oracle' is not allowed"),
        (["evaluate", "{omni}", "--shots", "0,5"], "--shots values must lie in 1..1000"),
        (["evaluate", "{omni}", "--shots", "five"], "--shots takes comma-separated integers"),
        (["evaluate", "{omni}", "--episodes", "3"], "--episodes applies to RL runs only"),
        (["evaluate", "{omni}", "--flow", "sideways"], "--flow 'sideways' does not exist"),
        (["evaluate", "{maml}", "--flow", "meta"], "(its flows: none)"),
        (["evaluate", "{omni}", "--steps", "2", "--lr-schedule", "0.1"], "needs 2 positive rates"),
        (["evaluate", "{omni}", "{nav}"], "runs of different families cannot share test tasks"),
        (["evaluate", "{omni}", "{tmp}/no-such-run"], "no-such-run is not a run folder"),
        (["render", "{omni}", "--task", '{"amplitude": 9, "phase": 0}'], "'amplitude' = 9"),
        (["render", "{omni}", "--task", "amplitude"], "--task must be JSON like"),
        (["render", "{omni}", "--out", "{tmp}/w.gif"], "must be a file ending in .png, .svg"),
        (["render", "{omni}", "--sample"], "--sample applies to RL runs only"),
        (["render", "{empty}", "--checkpoint", "best"], "has no checkpoint best.pt"),
        (["train", "--resume", "{empty}"], "has no checkpoint to resume"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(trained_runs, tmp_path, args, message):
    nav, empty = tmp_path / "nav-run", tmp_path / "empty-run"
    for folder, config in ((nav, "family: navigation-2d\n"), (empty, "family: sinusoid\n")):
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
    names = {**trained_runs, "nav": nav, "empty": empty, "tmp": tmp_path}
    for name, path in names.items():  # not str.format: the JSON tasks hold braces
        args = [a.replace(f"{{{name}}}", str(path)) for a in args]
    if args[0] == "render" and "--out" not in args:  # nothing is written on bad input anyway
        args += ["--out", str(tmp_path / "waves.png")]
    result = runner.invoke(app, args, terminal_width=300)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
