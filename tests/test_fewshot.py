"""Few-shot classification: Omni conv backbone, prototypes, episodes, data errors, the loop,
evaluation and rendering (through the library functions the CLI calls)."""

import dataclasses
import functools
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from omnirl import checkpoint, registry
from omnirl.agents.fewshot_net import (
    OmniConv2d,
    OmniConvNet,
    finetune_predictions,
    protonet_loss,
    prototype_logits,
    prototype_predictions,
    prototypes,
)
from omnirl.config import ConfigError, load_config
from omnirl.envs.fewshot import (
    EMBEDDED,
    DataError,
    EpisodeImages,
    EpisodeSampler,
    ImageBatch,
    TrainingDraw,
    class_names,
    draw_training,
    generate,
    load_split,
    split_folders,
)
from omnirl.fewshot.config import FewShotConfig, make_learner
from omnirl.fewshot.evaluate import evaluate_report, evaluate_runs
from omnirl.fewshot.render import render_report
from omnirl.fewshot.train import FewShotTrainer
from omnirl.learner import Learner
from omnirl.options import EvaluateOptions, OptionError, RenderOptions
from omnirl.report import write_report
from omnirl.trainer import TrainingError

SIZE = 12  # the smoke config's image size
AGENTS = ["omni", "protonet", "pretrain", "joint"]
# The metric vocabulary shared by every kind (train/<term>_<loss>, eval/<metric>_post, time/).
METRIC = re.compile(
    r"train/(loss|grad_norm|(pre|meta|joint_pre|joint_meta)_(ce|distill|accuracy))"
    r"|eval/accuracy_post(_ci95)?|time/(sps|iteration_s)"
)


def smoke_cfg(*sets, data=None, run_dir="runs"):
    sets = [*sets, f"run_dir={run_dir}", "torch_threads=1"]
    if data is not None:
        sets.append(f"data={data}")
    return load_config("smoke-fewshot", sets, schema=FewShotConfig)


@functools.cache
def tiny_glyphs():
    """The 6 training classes of a 10-class embedded glyph set, 4 images each."""
    small = dataclasses.replace(EMBEDDED["glyphs"], num_classes=10, images_per_class=4)
    return generate(small, "train", SIZE)


CLASSES = {"classes": [f"c{k}" for k in range(6)]}  # what a checkpoint says of tiny_glyphs


def tiny_draw(learner, seed=0):
    """A real training draw of :func:`tiny_glyphs`, as the trainer makes it."""
    images = tiny_glyphs()
    sampler = EpisodeSampler(images, 3, 1, 2) if learner.uses_episode else None
    batch_size = 8 if learner.uses_batch else None
    return draw_training(images, np.random.default_rng(seed), batch_size, sampler)


# -------------------------------------------------------------------------------- network
def test_omni_conv_branch_folds_into_the_3x3_kernel():
    torch.manual_seed(0)
    conv = OmniConv2d(3, 4)
    torch.nn.init.normal_(conv.branch["meta"].weight)
    x = torch.randn(2, 3, 6, 6)
    separate = conv.joint(x) + torch.nn.functional.conv2d(x, conv.branch["meta"].weight)
    torch.testing.assert_close(conv(x, "meta"), separate)
    torch.testing.assert_close(conv(x, "pre"), conv.joint(x))  # zero-initialised branch


def test_omni_conv_net_shapes_equal_flows_at_init_and_gradients_reach_every_part():
    torch.manual_seed(0)
    net = OmniConvNet(num_classes=7, image_size=SIZE, channels=(4, 6))
    x = torch.randn(5, 3, SIZE, SIZE)
    assert net.feature_dim == 6 * 3 * 3
    features = {flow: net.features(x, flow) for flow in ("joint", "pre", "meta")}
    assert features["joint"].shape == (5, 54)
    assert net(x, "pre").shape == (5, 7)
    # Zero branches, identical batch norms and copied heads: every flow starts equal.
    torch.testing.assert_close(features["pre"], features["joint"])
    torch.testing.assert_close(features["meta"], features["joint"])
    torch.testing.assert_close(net(x, "pre"), net(x, "joint"))
    (net(x, "pre").square().mean() + features["meta"].square().mean()).backward()
    block = net.blocks[0]
    for name, param in [
        ("joint conv", block.conv.joint.weight),
        ("pre branch", block.conv.branch["pre"].weight),
        ("meta branch", block.conv.branch["meta"].weight),
        ("pre norm", block.norm["pre"].weight),
        ("meta norm", block.norm["meta"].weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert block.norm["joint"].weight.grad is None  # the joint flow was not used
    plain = OmniConvNet(7, SIZE, (4, 6), flows=("joint",), heads=("joint",))
    assert not any("branch" in name for name, _ in plain.named_parameters())
    with pytest.raises(ValueError, match="flow must be one of joint"):
        plain.features(x, "meta")


# ----------------------------------------------------------------------------- learners
@pytest.mark.parametrize("name", registry.learner_names("fewshot"))
def test_every_registered_fewshot_learner_implements_the_contract(name):
    torch.manual_seed(0)
    learner = make_learner(smoke_cfg(f"agent={name}"), CLASSES)
    assert isinstance(learner, Learner)
    assert (learner.name, learner.kind, learner.adapts, learner.trains) == (
        name,
        "fewshot",
        True,
        True,
    )
    assert learner.eval_flow in learner.flows
    assert learner.flows == (("joint", "pre", "meta") if name == "omni" else ("joint",))
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    metrics = learner.update(tiny_draw(learner))
    assert all(METRIC.fullmatch(key) for key in metrics), sorted(metrics)
    assert metrics["train/loss"] > 0 and metrics["train/grad_norm"] > 0
    moved = [k for k, v in learner.net.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # one Adam step changed the network
    fresh = make_learner(smoke_cfg(f"agent={name}"), CLASSES)
    fresh.load_state_dict(learner.state_dict())
    for key, value in learner.net.state_dict().items():
        assert torch.equal(fresh.net.state_dict()[key], value)


def test_omni_loss_is_the_sum_of_its_terms_with_unweighted_distillation_logged():
    torch.manual_seed(0)
    learner = make_learner(smoke_cfg("distill_weight=2.5", "ema_decay=0.5"), CLASSES)
    learner.update(tiny_draw(learner, seed=0))  # the teacher now lags the student: R > 0
    metrics = learner.update(tiny_draw(learner, seed=1))
    assert metrics["train/pre_distill"] > 0 and metrics["train/meta_distill"] > 0
    terms = {k.removeprefix("train/"): v for k, v in metrics.items()}
    expected = sum(terms[f"{t}_ce"] for t in ("pre", "meta", "joint_pre", "joint_meta"))
    expected += 2.5 * (terms["pre_distill"] + terms["meta_distill"])
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-6)
    for term in ("pre", "meta", "joint_pre", "joint_meta"):
        assert 0 <= metrics[f"train/{term}_accuracy"] <= 1


def test_the_teacher_follows_the_student_by_ema():
    torch.manual_seed(0)
    learner = make_learner(smoke_cfg("ema_decay=0.9"), CLASSES)
    before = {k: v.clone() for k, v in learner.net.named_parameters()}
    learner.update(tiny_draw(learner))
    after = dict(learner.net.named_parameters())
    teacher = dict(learner.teacher.module.named_parameters())
    for name, value in before.items():
        torch.testing.assert_close(teacher[name], 0.9 * value + 0.1 * after[name].detach())


def test_a_non_finite_loss_updates_nothing():
    torch.manual_seed(0)
    learner = make_learner(smoke_cfg(), CLASSES)
    with torch.no_grad():
        learner.net.heads["pre"].bias[0] = float("nan")
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    teacher = {k: v.clone() for k, v in learner.teacher.module.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite outer loss"):
        learner.update(tiny_draw(learner))
    for name, value in learner.net.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, equal_nan=True)
    for name, value in learner.teacher.module.state_dict().items():
        torch.testing.assert_close(value, teacher[name], rtol=0, atol=0, equal_nan=True)
    assert not learner.optimizer.state  # Adam never stepped


def test_the_learner_is_sized_by_the_training_classes():
    cfg = smoke_cfg()
    assert make_learner(cfg, {"classes": list("abcdefg")}).net.heads["pre"].out_features == 7
    # No checkpoint: the data's training classes, counted without reading images.
    assert make_learner(cfg).net.heads["pre"].out_features == 64


# ----------------------------------------------------------------------------- prototypes
def test_prototypes_and_logits_match_a_hand_computation():
    # 2-way 2-shot, 2-D features.
    support_WKD = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 4.0], [0.0, 2.0]]])
    torch.testing.assert_close(prototypes(support_WKD), torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    query = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    # -|q - c|^2: q0 to c0 = 0 + 1, to c1 = 1 + 4; q1 to c0 = 4 + 9, to c1 = 9 + 0.
    expected = torch.tensor([[-1.0, -5.0], [-13.0, -9.0]])
    torch.testing.assert_close(prototype_logits(query, prototypes(support_WKD)), expected)
    loss, logits = protonet_loss(support_WKD, query.reshape(2, 1, 2))
    torch.testing.assert_close(logits, expected)
    # Query 0 is class 0, query 1 class 1: CE = mean(log(1 + e^-4), log(1 + e^-4)).
    torch.testing.assert_close(loss, torch.log1p(torch.exp(torch.tensor(-4.0))))
    queries = torch.tensor([[[[1.0, 1.0]], [[0.0, 9.0]]], [[[0.0, 9.0]], [[1.0, 1.0]]]])
    predicted = prototype_predictions(support_WKD.expand(2, -1, -1, -1), queries)
    assert predicted.tolist() == [[0, 1], [1, 0]]


def test_finetuned_linear_classifier_learns_separable_episodes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:3] * 5  # 3-way, features of size 4
    support = centres[None, :, None] + 0.3 * torch.randn(8, 3, 5, 4, generator=generator)
    query = centres[None, :, None] + 0.3 * torch.randn(8, 3, 7, 4, generator=generator)
    labels = torch.arange(3).repeat_interleave(7)
    predicted = finetune_predictions(support, query, torch.Generator().manual_seed(1))
    assert predicted.shape == (8, 21) and (predicted == labels).all()
    shuffled = query[:, torch.tensor([1, 2, 0])]  # queries under the wrong labels
    wrong = finetune_predictions(support, shuffled, torch.Generator().manual_seed(1))
    assert not (wrong == labels).any()


# --------------------------------------------------------------------------- data, episodes
def test_embedded_splits_are_disjoint_seeded_and_sized():
    small = dataclasses.replace(EMBEDDED["glyphs"], images_per_class=2)
    splits = {s: generate(small, s, SIZE) for s in ("train", "val", "test")}
    assert [len(splits[s].classes) for s in splits] == [64, 16, 20]
    names = [set(splits[s].classes) for s in splits]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    test = splits["test"]
    assert test.images_NCHW.shape == (40, 3, SIZE, SIZE) and test.images_NCHW.dtype == np.uint8
    np.testing.assert_array_equal(generate(small, "test", SIZE).images_NCHW, test.images_NCHW)
    assert class_names("glyphs", "test") == test.classes


def test_episode_sampler_never_mixes_train_and_test_classes(fewshot_data):
    train = load_split(str(fewshot_data), "train", SIZE)
    test = load_split(str(fewshot_data), "test", SIZE)
    assert set(train.classes).isdisjoint(test.classes)
    assert class_names(str(fewshot_data), "train") == train.classes
    sampler = EpisodeSampler(test, way=3, shot=2, queries=4)
    rng = np.random.default_rng(0)
    for _ in range(50):
        episode = sampler.sample(rng)
        assert episode.support_WK.shape == (3, 2) and episode.query_WQ.shape == (3, 4)
        shown = {test.classes[c] for c in test.labels_N[episode.support_WK].ravel()}
        shown |= {test.classes[c] for c in test.labels_N[episode.query_WQ].ravel()}
        assert shown <= set(test.classes) and shown.isdisjoint(train.classes)
        for row, cls in enumerate(episode.classes_W):  # each row is one class
            assert set(test.labels_N[episode.support_WK[row]]) == {cls}
            assert set(test.labels_N[episode.query_WQ[row]]) == {cls}
        both = np.concatenate([episode.support_WK.ravel(), episode.query_WQ.ravel()])
        assert len(set(both)) == both.size  # no image is both support and query


def test_a_training_draw_is_the_batch_then_the_episode_as_uint8_arrays(fewshot_data):
    images = load_split(str(fewshot_data), "train", SIZE)
    sampler = EpisodeSampler(images, 3, 2, 4)
    draw = draw_training(images, np.random.default_rng(5), 6, sampler)
    assert isinstance(draw, TrainingDraw) and draw.num_images() == 6 + 3 * (2 + 4)
    assert isinstance(draw.batch, ImageBatch) and isinstance(draw.episode, EpisodeImages)
    assert draw.batch.images_NCHW.shape == (6, 3, SIZE, SIZE)
    assert draw.batch.images_NCHW.dtype == np.uint8
    rng = np.random.default_rng(5)  # the same generator, drawn in the same order
    pick = rng.integers(0, len(images.labels_N), 6)
    np.testing.assert_array_equal(draw.batch.labels_N, images.labels_N[pick])
    episode = sampler.sample(rng)
    order = np.concatenate([episode.support_WK.ravel(), episode.query_WQ.ravel()])
    np.testing.assert_array_equal(draw.episode.images_NCHW, images.images_NCHW[order])
    assert (draw.episode.way, draw.episode.shot, draw.episode.queries) == (3, 2, 4)
    only_episode = draw_training(images, np.random.default_rng(5), None, sampler)
    assert only_episode.batch is None and only_episode.episode is not None


def test_a_flat_folder_is_split_by_classes_the_same_way_every_time(tmp_path):
    names = [f"c{k:02d}" for k in range(25)]
    for name in names:
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "a.jpg")
    (tmp_path / "notes").mkdir()  # no images: not a class
    splits = split_folders(tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 4, 5]
    assert sorted(p.name for s in splits.values() for p in s) == names
    assert split_folders(tmp_path) == splits


def test_too_few_classes_or_images_is_a_clear_error(fewshot_data, write_fewshot_classes, tmp_path):
    test = load_split(str(fewshot_data), "test", SIZE)
    with pytest.raises(DataError, match=r"test classes: 5 classes, but 6-way episodes need .* 6"):
        EpisodeSampler(test, way=6, shot=1, queries=1)
    write_fewshot_classes(tmp_path / "test", ["a", "b"], 6)
    write_fewshot_classes(tmp_path / "test", ["few"], 4, seed=1)
    write_fewshot_classes(tmp_path / "train", ["t"], 1)
    small = load_split(str(tmp_path), "test", SIZE)
    message = (
        "class 'few' has 4 images, but 5-shot episodes with 1 queries per class need at least 6"
    )
    with pytest.raises(DataError, match=message):
        EpisodeSampler(small, way=3, shot=5, queries=1)
    with pytest.raises(DataError, match="neither a folder nor an embedded dataset"):
        load_split(str(tmp_path / "missing"), "test", SIZE)
    with pytest.raises(DataError, match="neither a folder nor an embedded dataset"):
        class_names(str(tmp_path / "missing"), "train")
    (tmp_path / "test" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_split(str(tmp_path), "test", SIZE)


# ----------------------------------------------------------------------- config and loop
def test_the_fewshot_kind_names_its_entry_points():
    kind = registry.kinds()["fewshot"]
    assert kind.load("config") is FewShotConfig and kind.load("trainer") is FewShotTrainer
    assert kind.load("learner") is make_learner
    assert kind.load("evaluate") is evaluate_report and kind.load("render") is render_report
    assert kind.load("data").load_split is load_split
    assert registry.kind_of("fewshot") is kind
    assert set(registry.learner_names("fewshot")) == set(AGENTS)


def test_config_is_strict():
    cfg = load_config("fewshot", schema=FewShotConfig)
    assert cfg.family == "fewshot" and cfg.agent == "omni" and cfg.channels == (32, 32, 32, 32)
    with pytest.raises(ConfigError, match="unknown config key 'distil_weight'.*distill_weight"):
        load_config("fewshot", ["distil_weight=1"], schema=FewShotConfig)
    with pytest.raises(ConfigError, match="'agent' = 'maml' is not allowed"):
        load_config("fewshot", ["agent=maml"], schema=FewShotConfig)
    with pytest.raises(ConfigError, match="'image_size' = 8 is too small for 4 conv blocks"):
        load_config("fewshot", ["image_size=8"], schema=FewShotConfig)


def test_the_agent_key_follows_the_learner_registry(monkeypatch):
    monkeypatch.setitem(
        registry._LEARNERS, ("fewshot", "mine"), "omnirl.agents.fewshot:JointLearner"
    )
    assert smoke_cfg("agent=mine").agent == "mine"
    assert isinstance(make_learner(smoke_cfg("agent=mine"), {"classes": "abc"}), Learner)
    with pytest.raises(ConfigError, match="allowed: one of omni, protonet, pretrain, joint, mine"):
        smoke_cfg("agent=theirs")


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, fewshot_data):
    """A 2-step run of every learner on the tiny class folders (validated at step 2)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        agent: FewShotTrainer(smoke_cfg(f"agent={agent}", data=fewshot_data, run_dir=root)).train()
        for agent in AGENTS
    }


@pytest.mark.parametrize("agent", AGENTS)
def test_every_learner_trains_logs_the_vocabulary_and_checkpoints(
    trained_runs, fewshot_data, agent
):
    run = trained_runs[agent]
    assert run.name.startswith(f"fewshot-{agent}-0-")
    cfg = load_config(str(run / "config.yaml"), schema=FewShotConfig)
    assert (cfg.family, cfg.agent, cfg.data) == ("fewshot", agent, str(fewshot_data))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line.pop("iteration") for line in lines] == [1, 2]
    assert all(METRIC.fullmatch(key) for line in lines for key in line)
    assert all(np.isfinite(line["train/loss"]) and line["time/sps"] > 0 for line in lines)
    assert 0 <= lines[-1]["eval/accuracy_post"] <= 1 and "eval/accuracy_post" not in lines[0]
    state = checkpoint.load(run / "checkpoints" / "best.pt")
    assert state["iteration"] == 2 and ("teacher" in state["agent"]) == (agent == "omni")
    assert state["classes"] == [f"train-{k}" for k in range(5)]


def test_evaluate_report_tables_files_and_progress(trained_runs, fewshot_data, tmp_path):
    runs = [trained_runs[agent] for agent in AGENTS]
    calls = []
    options = EvaluateOptions(episodes=4, shots="2,1", out=tmp_path / "eval")
    report = evaluate_report(runs, options, lambda *call: calls.append(call))
    assert calls[-1][1:] == (4 * 1 * 2 * 4, 4 * 1 * 2 * 4) and len(calls) == 8
    assert report.columns == ["run", f"{fewshot_data.name} 1-shot", f"{fewshot_data.name} 2-shot"]
    assert [row[0].split("\n") for row in report.rows] == [
        [label, run.name]
        for label, run in zip(
            ["omni (meta flow, protonet)", "protonet (protonet)", "pretrain (finetune)",
             "joint (protonet)"],
            runs,
            strict=True,
        )
    ]  # fmt: skip
    assert all(re.fullmatch(r"\d+\.\d ± \d+\.\d", cell) for row in report.rows for cell in row[1:])
    assert report.notes == []
    written = write_report(report)
    assert sorted(p.name for p in written) == ["eval.csv", "eval.json", "eval.png"]
    payload = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert payload == report.payload
    assert payload["way"] == 5 and payload["data"] == [fewshot_data.name]
    assert payload["shots"] == [1, 2]  # --shots is sorted, like every comma list
    for entry, agent in zip(payload["runs"], AGENTS, strict=True):
        stats = entry["results"][fewshot_data.name]
        assert len(stats["1"]["accuracies"]) == 4 and 0 <= stats["2"]["mean"] <= 1
        assert entry["classifier"] == ("finetune" if agent == "pretrain" else "protonet")
    assert (tmp_path / "eval" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (tmp_path / "eval" / "eval.csv").read_text().splitlines()
    assert csv_lines[0] == "run,agent,flow,classifier,data,shot,accuracy,ci95"
    assert len(csv_lines) == 1 + 4 * 2


def test_the_same_episodes_for_every_run_and_seed(trained_runs, fewshot_data):
    run = trained_runs["omni"]
    a = evaluate_runs([run], [str(fewshot_data)], shots=(1,), episodes=3, seed=5)
    b = evaluate_runs([run], [str(fewshot_data)], shots=(1,), episodes=3, seed=5)
    assert a == b
    c = evaluate_runs([run], [str(fewshot_data)], shots=(1,), episodes=3, seed=6)
    assert c["runs"][0]["results"] != a["runs"][0]["results"]
    pre = evaluate_runs([run], [str(fewshot_data)], shots=(1,), episodes=3, seed=5, flow="pre")
    assert (pre["runs"][0]["flow"], pre["runs"][0]["classifier"]) == ("pre", "finetune")


def test_a_run_without_best_pt_is_evaluated_from_latest_with_a_note(fewshot_data, tmp_path):
    run = FewShotTrainer(smoke_cfg(data=fewshot_data, run_dir=tmp_path / "runs")).train()
    (run / "checkpoints" / "best.pt").unlink()
    report = evaluate_report([run], EvaluateOptions(episodes=2, shots="1"))
    assert len(report.notes) == 1 and "using latest.pt" in report.notes[0]
    assert set(report.files) == {run / "eval.json", run / "eval.csv", run / "eval.png"}


def test_render_shows_one_test_episode(trained_runs, tmp_path):
    out = tmp_path / "episode.png"
    report = render_report(trained_runs["omni"], RenderOptions(shots="2", out=out, seed=3))
    assert list(report.files) == [out]
    write_report(report)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    right = np.array(report.payload["right"])
    assert right.shape == (5, 16) and report.payload["shot"] == 2
    assert [row[0] for row in report.rows] == report.payload["classes"]
    assert [row[1] for row in report.rows] == [f"{n}/16" for n in right.sum(1)]
    again = render_report(trained_runs["omni"], RenderOptions(shots="2", out=out, seed=3))
    assert again.payload == report.payload


EVALUATE, RENDER = evaluate_report, render_report


@pytest.mark.parametrize(
    ("command", "runs", "options", "error", "message"),
    [
        (
            EVALUATE,
            "protonet",
            {"shots": "1,7"},
            DataError,
            "has 22 images, but 7-shot episodes with 16 queries per class need at least 23",
        ),
        (EVALUATE, "protonet", {"flow": "meta"}, OptionError, "--flow 'meta' does not exist"),
        (EVALUATE, "omni", {"shots": "0,5"}, OptionError, "--shots values must lie in 1..1000"),
        (EVALUATE, "omni", {"shots": "five"}, OptionError, "--shots takes comma-separated"),
        (EVALUATE, "omni", {"steps": 2}, OptionError, "--steps does not apply to fewshot runs"),
        (EVALUATE, "omni", {"tasks": 3}, OptionError, "--tasks does not apply to fewshot runs"),
        (EVALUATE, "omni", {"episodes": 0}, OptionError, "--episodes must be >= 1"),
        (EVALUATE, "omni", {"checkpoint": "worst"}, OptionError, "best or latest"),
        (EVALUATE, "omni", {"data": ("nowhere",)}, DataError, "neither a folder nor an embedded"),
        (EVALUATE, "omni nav", {}, OptionError, "runs of different families cannot share"),
        (EVALUATE, "nav", {}, OptionError, "is not a fewshot run (family: navigation-2d)"),
        (EVALUATE, "omni missing", {}, FileNotFoundError, "no-such-run is not a run folder"),
        (EVALUATE, "omni", {"out": "{tmp}/file.txt/sub"}, OSError, "cannot write to"),
        (RENDER, "omni", {"task": "{}"}, OptionError, "--task does not apply to fewshot runs"),
        (RENDER, "omni", {"shots": "1,5"}, OptionError, "--shots takes one value"),
        (RENDER, "omni", {"out": "{tmp}/e.gif"}, OptionError, "--out must end in .png, .pdf"),
        (RENDER, "omni", {"flow": "sideways"}, OptionError, "--flow 'sideways' does not exist"),
        (RENDER, "empty", {"checkpoint": "best"}, FileNotFoundError, "has no checkpoint best.pt"),
    ],
)
def test_bad_input_is_one_clear_line(
    trained_runs, tmp_path, command, runs, options, error, message
):
    nav, empty = tmp_path / "nav-run", tmp_path / "empty-run"
    for folder, config in ((nav, "family: navigation-2d\n"), (empty, "family: fewshot\n")):
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
    (tmp_path / "file.txt").write_text("not a folder")
    paths = {**trained_runs, "nav": nav, "empty": empty, "missing": tmp_path / "no-such-run"}
    folders = [paths[name] for name in runs.split()]
    options = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) and k == "out" else v
        for k, v in options.items()
    }
    if command is RENDER:
        options.setdefault("out", str(tmp_path / "episode.png"))
        call = lambda: RENDER(folders[0], RenderOptions(**options))  # noqa: E731
    else:
        options.setdefault("out", str(tmp_path / "eval"))
        call = lambda: EVALUATE(folders, EvaluateOptions(**options))  # noqa: E731
    with pytest.raises(error) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not list(tmp_path.glob("eval/*")) and not (tmp_path / "episode.png").exists()


def test_resume_continues_bit_for_bit(tmp_path, fewshot_data):
    straight = FewShotTrainer(smoke_cfg("iterations=4", data=fewshot_data, run_dir=tmp_path / "a"))
    reference = straight.train()
    split = FewShotTrainer(smoke_cfg("iterations=2", data=fewshot_data, run_dir=tmp_path / "b"))
    run = split.train()
    FewShotTrainer.resume(run, iterations=4).train()
    a = checkpoint.load(reference / "checkpoints" / "latest.pt")["agent"]
    b = checkpoint.load(run / "checkpoints" / "latest.pt")["agent"]
    for key in a["net"]:
        torch.testing.assert_close(a["net"][key], b["net"][key], rtol=0, atol=0)
    for key in a["teacher"]["module"]:
        torch.testing.assert_close(a["teacher"]["module"][key], b["teacher"]["module"][key])

    def untimed(folder):  # wall times differ between runs; every other logged number is equal
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]

    assert untimed(reference) == untimed(run)


def test_a_non_finite_loss_stops_the_run_naming_the_last_good_checkpoint(fewshot_data, tmp_path):
    trainer = FewShotTrainer(smoke_cfg(data=fewshot_data, run_dir=tmp_path))
    trainer._open_run()  # writes the step-0 checkpoint
    with torch.no_grad():
        trainer.agent.net.heads["joint"].weight.fill_(float("inf"))
    message = r"step 1: non-finite outer loss .*checkpoints/latest\.pt \(step 0\)"
    with pytest.raises(TrainingError, match=message):
        trainer.step()
    trainer.lock.release()


def test_a_non_finite_initial_state_is_never_saved(fewshot_data, tmp_path):
    trainer = FewShotTrainer(smoke_cfg(data=fewshot_data, run_dir=tmp_path))
    with torch.no_grad():
        trainer.agent.net.heads["joint"].weight.fill_(float("inf"))
    with pytest.raises(TrainingError, match="step 1: non-finite parameters.*nothing to resume"):
        trainer.train()
    assert not (trainer.checkpoint_dir / "latest.pt").exists()


def test_bad_data_is_one_clear_line(write_fewshot_classes, tmp_path):
    write_fewshot_classes(tmp_path / "d" / "train", ["a", "b"], 3)
    write_fewshot_classes(tmp_path / "d" / "test", ["c"], 3)
    with pytest.raises(DataError, match="train classes: 2 classes, but 3-way episodes need") as e:
        FewShotTrainer(smoke_cfg("eval_every=0", data=tmp_path / "d", run_dir=tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no val classes .*--set eval_every=0"):
        FewShotTrainer(smoke_cfg("agent=pretrain", data=tmp_path / "d", run_dir=tmp_path))
    with pytest.raises(DataError, match="neither a folder nor an embedded dataset"):
        FewShotTrainer(smoke_cfg(data=tmp_path / "nowhere", run_dir=tmp_path))
