"""Few-shot classification: Omni conv backbone, prototypes, episodes, data errors, CLI runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnirl import checkpoint
from omnirl.agents.fewshot import Batch, EpisodeBatch, OmniConv2d, OmniConvNet
from omnirl.cli import app
from omnirl.config import ConfigError, load_config
from omnirl.fewshot.classify import (
    finetune_accuracy,
    protonet_loss,
    prototype_accuracy,
    prototype_logits,
    prototypes,
)
from omnirl.fewshot.config import FewShotConfig, make_learner
from omnirl.fewshot.data import (
    EMBEDDED,
    DataError,
    EpisodeSampler,
    draw_glyph,
    generate,
    glyph_class,
    load_split,
    split_folders,
)

runner = CliRunner()
SIZE = 12  # the smoke config's image size


def write_classes(root: Path, names: list[str], images: int, seed: int = 0) -> None:
    """Class folders of real PNG glyphs (each class its own glyph)."""
    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        rng = np.random.default_rng([seed, k])
        strokes = glyph_class(rng)
        for i in range(images):
            Image.fromarray(draw_glyph(strokes, rng, SIZE)).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """root/train|val|test/<class>/*.png: 5 classes per split, 22 images each (5 + 16 queries)."""
    root = tmp_path_factory.mktemp("tiny")
    for split in ("train", "val", "test"):
        write_classes(root / split, [f"{split}-{k}" for k in range(5)], 22, seed=len(split))
    return root


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


def test_a_non_finite_loss_is_refused_before_any_update():
    learner = make_learner(load_config("smoke-fewshot", schema=FewShotConfig), num_classes=4)
    before = [p.detach().clone() for p in learner.net.parameters()]
    nan = float("nan")
    batch = Batch(torch.full((8, 3, SIZE, SIZE), nan), torch.zeros(8, dtype=torch.long))
    episode = EpisodeBatch(torch.full((9, 3, SIZE, SIZE), nan), way=3, shot=1, queries=2)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        learner.step(batch, episode)
    for old, new in zip(before, learner.net.parameters(), strict=True):
        torch.testing.assert_close(old, new, rtol=0, atol=0)


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
    batched = prototype_accuracy(support_WKD[None], torch.tensor([[[[1.0, 1.0]], [[0.0, 9.0]]]]))
    torch.testing.assert_close(batched, torch.tensor([1.0], dtype=torch.float64))


def test_finetuned_linear_classifier_learns_separable_episodes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:3] * 5  # 3-way, features of size 4
    support = centres[None, :, None] + 0.3 * torch.randn(8, 3, 5, 4, generator=generator)
    query = centres[None, :, None] + 0.3 * torch.randn(8, 3, 7, 4, generator=generator)
    acc = finetune_accuracy(support, query, torch.Generator().manual_seed(1))
    assert acc.shape == (8,) and acc.min() == 1.0
    shuffled = query[:, torch.tensor([1, 2, 0])]  # queries under the wrong labels
    assert finetune_accuracy(support, shuffled, torch.Generator().manual_seed(1)).max() == 0.0


# --------------------------------------------------------------------------- data, episodes
def test_embedded_splits_are_disjoint_seeded_and_sized():
    glyphs = EMBEDDED["glyphs"]
    small = glyphs.__class__(**{**glyphs.__dict__, "images_per_class": 2})
    splits = {s: generate(small, s, SIZE) for s in ("train", "val", "test")}
    assert [len(splits[s].classes) for s in splits] == [64, 16, 20]
    names = [set(splits[s].classes) for s in splits]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    test = splits["test"]
    assert test.images_NCHW.shape == (40, 3, SIZE, SIZE) and test.images_NCHW.dtype == np.uint8
    np.testing.assert_array_equal(generate(small, "test", SIZE).images_NCHW, test.images_NCHW)


def test_episode_sampler_never_mixes_train_and_test_classes(tiny_data):
    train = load_split(str(tiny_data), "train", SIZE)
    test = load_split(str(tiny_data), "test", SIZE)
    assert set(train.classes).isdisjoint(test.classes)
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


def test_too_few_classes_or_images_is_a_clear_error(tiny_data, tmp_path):
    test = load_split(str(tiny_data), "test", SIZE)
    with pytest.raises(DataError, match=r"test classes: 5 classes, but 6-way episodes need .* 6"):
        EpisodeSampler(test, way=6, shot=1, queries=1)
    write_classes(tmp_path / "test", ["a", "b"], 6)
    write_classes(tmp_path / "test", ["few"], 4, seed=1)
    write_classes(tmp_path / "train", ["t"], 1)
    small = load_split(str(tmp_path), "test", SIZE)
    message = (
        "class 'few' has 4 images, but 5-shot episodes with 1 queries per class need at least 6"
    )
    with pytest.raises(DataError, match=message):
        EpisodeSampler(small, way=3, shot=5, queries=1)
    with pytest.raises(DataError, match="neither a folder nor an embedded dataset"):
        load_split(str(tmp_path / "missing"), "test", SIZE)
    (tmp_path / "test" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_split(str(tmp_path), "test", SIZE)


def test_config_is_strict(tmp_path):
    cfg = load_config("fewshot", schema=FewShotConfig)
    assert cfg.family == "fewshot" and cfg.agent == "omni" and cfg.channels == (32, 32, 32, 32)
    with pytest.raises(ConfigError, match="unknown config key 'distil_weight'.*distill_weight"):
        load_config("fewshot", ["distil_weight=1"], schema=FewShotConfig)
    with pytest.raises(ConfigError, match="'agent' = 'maml' is not allowed"):
        load_config("fewshot", ["agent=maml"], schema=FewShotConfig)
    with pytest.raises(ConfigError, match="'image_size' = 8 is too small for 4 conv blocks"):
        load_config("fewshot", ["image_size=8"], schema=FewShotConfig)


# --------------------------------------------------------------------------- command line
def train_cli(tmp_path, data, *args):
    command = ["train", "smoke-fewshot", "--data", str(data), "--no-progress"]
    return runner.invoke(app, [*command, "--set", f"run_dir={tmp_path}", *args])


@pytest.mark.parametrize("agent", ["omni", "protonet", "pretrain", "joint"])
def test_every_learner_trains_and_evaluates_through_the_cli(tmp_path, tiny_data, agent):
    result = train_cli(tmp_path, tiny_data, "--agent", agent)
    assert result.exit_code == 0, result.output
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run.name.startswith(f"fewshot-{agent}-0-")
    cfg = load_config(str(run / "config.yaml"), schema=FewShotConfig)
    assert (cfg.family, cfg.agent, cfg.data) == ("fewshot", agent, str(tiny_data))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    assert all(np.isfinite(line["train/loss"]) and "time/sps" in line for line in lines)
    assert 0 <= lines[-1]["eval/accuracy"] <= 1
    state = checkpoint.load(run / "checkpoints" / "best.pt")
    assert state["iteration"] == 2 and ("teacher" in state["agent"]) == (agent == "omni")

    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--episodes", "4", "--shots", "1,2", "--out", str(out)]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    [entry] = payload["runs"]
    assert payload["way"] == 5 and payload["data"] == [tiny_data.name]
    stats = entry["results"][tiny_data.name]
    assert len(stats["1"]["accuracies"]) == 4 and 0 <= stats["2"]["mean"] <= 1
    assert entry["classifier"] == ("finetune" if agent == "pretrain" else "protonet")
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{tiny_data.name} 2-shot" in result.output
    if agent == "protonet":  # bad test input: one line, exit code 2, before any episode
        result = runner.invoke(app, ["evaluate", str(run), "--shots", "1,7", "--out", str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "has 22 images, but 7-shot episodes with 16 queries per class need at least 23" in (
            result.output
        )
        result = runner.invoke(app, [*args, "--flow", "meta"])
        assert result.exit_code == 2 and "--flow 'meta' does not exist" in result.output


def test_resume_continues_bit_for_bit(tmp_path, tiny_data):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_cli(straight, tiny_data, "--iterations", "4").exit_code == 0
    assert train_cli(split, tiny_data, "--iterations", "2").exit_code == 0
    [run] = list(split.iterdir())
    result = runner.invoke(
        app, ["train", "--resume", str(run), "--iterations", "4", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    [reference] = list(straight.iterdir())
    a = checkpoint.load(reference / "checkpoints" / "latest.pt")["agent"]
    b = checkpoint.load(run / "checkpoints" / "latest.pt")["agent"]
    for key in a["net"]:
        torch.testing.assert_close(a["net"][key], b["net"][key], rtol=0, atol=0)
    for key in a["teacher"]["module"]:
        torch.testing.assert_close(a["teacher"]["module"][key], b["teacher"]["module"][key])


def test_bad_data_is_one_line_and_exit_code_2(tmp_path):
    write_classes(tmp_path / "d" / "train", ["a", "b"], 3)
    write_classes(tmp_path / "d" / "test", ["c"], 3)
    result = train_cli(tmp_path, tmp_path / "d", "--set", "eval_every=0")
    assert result.exit_code == 2
    assert "train classes: 2 classes, but 3-way episodes need at least 3" in result.output
    assert "Traceback" not in result.output
    result = train_cli(tmp_path, tmp_path / "nowhere")
    assert result.exit_code == 2 and "neither a folder nor an embedded dataset" in result.output
