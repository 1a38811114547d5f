"""Strict configs: every packaged file loads; typed overrides; one-line errors."""

import dataclasses

import pytest

from omnirl.config import ConfigError, TrainConfig, load_config, packaged_configs, save_config


def test_every_packaged_config_loads():
    names = packaged_configs()
    assert {"navigation-2d", "halfcheetah-vel", "halfcheetah-dir", "smoke-navigation-2d"} <= set(
        names
    )
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig)
    paper = load_config("halfcheetah-vel")
    assert (paper.iterations, paper.tasks_per_iteration, paper.episodes_per_task) == (500, 40, 20)
    assert (paper.inner_lr, paper.max_kl, paper.distill_weight, paper.ema_decay) == (
        0.1,
        0.01,
        3.0,
        0.99,
    )
    assert load_config("navigation-2d").tasks_per_iteration == 20


def test_overrides_are_typed():
    cfg = load_config(
        "smoke-navigation-2d",
        [
            "iterations=3",
            "first_order=true",
            "hidden_sizes=[32, 32]",
            "horizon=null",
            "cg_damping=1e-4",
        ],
    )
    assert (cfg.iterations, cfg.first_order, cfg.hidden_sizes, cfg.horizon) == (
        3,
        True,
        (32, 32),
        None,
    )
    assert cfg.cg_damping == 1e-4 and isinstance(
        load_config("smoke-navigation-2d", ["max_kl=1"]).max_kl, float
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("itertions=3", "unknown config key 'itertions' in --set (did you mean 'iterations'?)"),
        ("iterations=ten", "'iterations' must be an integer, got 'ten'"),
        ("iterations=1.5", "'iterations' must be an integer"),
        ("iterations=true", "'iterations' must be an integer"),
        ("max_kl=abc", "'max_kl' must be a number"),
        ("first_order=1", "'first_order' must be true or false"),
        ("max_kl=-1", "'max_kl' = -1.0 is out of range (allowed: > 0)"),
        ("gamma=0", "'gamma' = 0.0 is out of range (allowed: (0, 1])"),
        ("ema_decay=1", "'ema_decay' = 1.0 is out of range (allowed: [0, 1))"),
        ("ls_backtrack_ratio=1", "'ls_backtrack_ratio'"),
        ("agent=ppo", "allowed: one of omni, maml, pretrain, joint, random"),
        ("family=cartpole", "'family': unknown family 'cartpole'. Known families:"),
        ("hidden_sizes=[]", "'hidden_sizes'"),
        ("iterations", "--set takes key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("smoke-navigation-2d", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no config 'nope'.*navigation-2d"):
        load_config("nope")
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("family: navigation-2d\nmax_kll: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'max_kll' in .*bad.yaml \(did you mean 'max_kl'\?\)"
    ):
        load_config(str(bad_key))
    broken = tmp_path / "broken.yaml"
    broken.write_text("family: [navigation-2d\n")
    with pytest.raises(ConfigError, match="broken.yaml line"):
        load_config(str(broken))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(listing))


def test_save_load_round_trip_and_frozen(tmp_path):
    cfg = load_config("navigation-2d", ["agent=maml", "hidden_sizes=[16]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iterations = 3
