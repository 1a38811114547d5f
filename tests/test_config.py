"""omnirl.config: packaged configs, typed overrides, one-line errors, save/load round trip."""

from __future__ import annotations

import dataclasses
import importlib.resources

import pytest
import yaml

from omnirl.config import (
    ConfigError,
    TrainConfig,
    config_to_dict,
    kind_of,
    load_config,
    packaged_configs,
    save_config,
)

SMOKE = "smoke-navigation-2d"
FIELD_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]


def config_error(source: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The message of the ConfigError that loading raises; it must be a single line."""
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------------ packaged configs
def test_packaged_configs_are_listed():
    names = packaged_configs()
    expected = {
        "navigation-2d",
        "halfcheetah-vel",
        "halfcheetah-dir",
        "smoke-navigation-2d",
        "smoke-halfcheetah-vel",
    }
    assert expected <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", packaged_configs())
def test_every_packaged_config_loads_and_writes_every_key_with_a_comment(name):
    text = (importlib.resources.files("omnirl.configs") / f"{name}.yaml").read_text()
    # Every problem kind (RL, sinusoid, fewshot) brings its own schema.
    schema = kind_of(name).load("config")
    field_names = [f.name for f in dataclasses.fields(schema)]
    cfg = load_config(name, schema=schema)
    assert isinstance(cfg, schema)
    assert cfg.agent == "omni"
    assert list(yaml.safe_load(text)) == field_names  # every key, in field order
    keys = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(keys) == len(field_names)
    uncommented = [line for line in keys if "  # " not in line]
    assert uncommented == []


@pytest.mark.parametrize(
    ("name", "family", "tasks", "horizon"),
    [
        ("navigation-2d", "navigation-2d", 20, 100),
        ("halfcheetah-vel", "halfcheetah-vel", 40, 200),
        ("halfcheetah-dir", "halfcheetah-dir", 40, 200),
    ],
)
def test_paper_configs_follow_the_protocol(name, family, tasks, horizon):
    from omnirl import registry

    cfg = load_config(name)
    assert (cfg.family, cfg.tasks_per_iteration, cfg.horizon) == (family, tasks, None)
    assert registry.get_family(cfg.family).horizon == horizon  # what horizon: null means
    assert (cfg.iterations, cfg.episodes_per_task, cfg.inner_steps) == (500, 20, 1)
    assert (cfg.inner_lr, cfg.max_kl, cfg.distill_weight, cfg.ema_decay) == (0.1, 0.01, 0.05, 0.99)


@pytest.mark.parametrize("name", ["smoke-navigation-2d", "smoke-halfcheetah-vel"])
def test_smoke_configs_are_tiny(name):
    cfg = load_config(name)
    sizes = (cfg.iterations, cfg.tasks_per_iteration, cfg.episodes_per_task, cfg.horizon)
    assert sizes == (2, 2, 2, 10)
    assert (cfg.hidden_sizes, cfg.branch_rank, cfg.cg_iters, cfg.ls_max_steps) == ((8, 8), 2, 3, 3)
    assert (cfg.eval_every, cfg.eval_tasks) == (0, 2)


def test_defaults_are_the_halfcheetah_protocol():
    cfg = TrainConfig()
    assert (cfg.family, cfg.agent, cfg.iterations, cfg.tasks_per_iteration) == (
        "halfcheetah-vel",
        "maml",
        500,
        40,
    )
    assert (cfg.hidden_sizes, cfg.cg_damping, cfg.outer_optimizer) == ((64, 64), 1e-5, "trpo")


# ------------------------------------------------------------------------------ overrides
@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("iterations=3", "iterations", 3),
        ("first_order=true", "first_order", True),
        ("hidden_sizes=[32,32]", "hidden_sizes", (32, 32)),
        ("hidden_sizes=[32, 16, 8]", "hidden_sizes", (32, 16, 8)),
        ("horizon=null", "horizon", None),
        ("horizon=7", "horizon", 7),
        ("max_kl=1", "max_kl", 1.0),  # an int for a float field becomes a float
        ("cg_damping=1e-4", "cg_damping", 1e-4),  # YAML 1.1 would read 1e-4 as a string
        ("agent=maml", "agent", "maml"),
        (" seed = 5", "seed", 5),
        ("run_dir=/tmp/some runs", "run_dir", "/tmp/some runs"),
    ],
)
def test_overrides_are_typed(override, key, value):
    got = getattr(load_config(SMOKE, [override]), key)
    assert got == value
    assert type(got) is type(value)


def test_later_overrides_win_and_the_rest_of_the_file_stays():
    cfg = load_config(SMOKE, ["iterations=3", "iterations=4"])
    assert cfg.iterations == 4
    assert cfg == dataclasses.replace(load_config(SMOKE), iterations=4)


def test_family_given_by_gymnasium_id_is_stored_by_short_name():
    assert load_config(SMOKE, ["family=omnirl/HalfCheetahDir-v0"]).family == "halfcheetah-dir"


# --------------------------------------------------------------------------------- errors
def test_unknown_key_in_a_file_suggests_the_close_match(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("family: navigation-2d\nitertions: 3\n")
    message = config_error(str(path))
    assert message == f"unknown config key 'itertions' in {path} (did you mean 'iterations'?)"


def test_unknown_key_in_an_override_suggests_the_close_match():
    message = config_error(SMOKE, ["max_kll=0.1"])
    assert message == "unknown config key 'max_kll' in --set (did you mean 'max_kl'?)"


def test_unknown_key_without_a_close_match_lists_the_keys():
    message = config_error(SMOKE, ["zzz=1"])
    assert "'zzz'" in message and "iterations" in message and "torch_threads" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("iterations=ten", "config key 'iterations' must be an integer, got 'ten'"),
        ("iterations=1.5", "config key 'iterations' must be an integer, got 1.5"),
        ("iterations=true", "config key 'iterations' must be an integer, got True"),
        ("max_kl=abc", "config key 'max_kl' must be a number, got 'abc'"),
        ("max_kl=false", "config key 'max_kl' must be a number, got False"),
        ("max_kl=.inf", "config key 'max_kl' must be a finite number, got inf"),
        ("first_order=1", "config key 'first_order' must be true or false, got 1"),
        ("first_order=yes", "config key 'first_order' must be true or false, got 'yes'"),
        ("agent=3", "config key 'agent' must be a string, got 3"),
        ("horizon=ten", "config key 'horizon' must be an integer or null, got 'ten'"),
        ("gamma=null", "config key 'gamma' must be a number, got None"),
        ("hidden_sizes=64", "config key 'hidden_sizes' must be a list of integers, got 64"),
        ("hidden_sizes=[8, 1.5]", "config key 'hidden_sizes' must be a list of integers"),
    ],
)
def test_wrong_types_name_the_key_and_the_expected_type(override, expected):
    assert config_error(SMOKE, [override]).startswith(expected)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("max_kl=-1", "config key 'max_kl' = -1.0 is out of range (allowed: > 0)"),
        ("gamma=0", "config key 'gamma' = 0.0 is out of range (allowed: (0, 1])"),
        ("ema_decay=1", "config key 'ema_decay' = 1.0 is out of range (allowed: [0, 1))"),
        (
            "ls_backtrack_ratio=1",
            "config key 'ls_backtrack_ratio' = 1.0 is out of range (allowed: (0, 1))",
        ),
        ("gae_lambda=1.5", "config key 'gae_lambda' = 1.5 is out of range (allowed: [0, 1])"),
        ("seed=-1", "config key 'seed' = -1 is out of range (allowed: 0 to 2^63 - 1)"),
        ("seed=9223372036854775808", "config key 'seed' = 9223372036854775808 is out of range"),
        ("torch_threads=100000", "config key 'torch_threads' = 100000 is out of range"),
        ("iterations=0", "config key 'iterations' = 0 is out of range (allowed: >= 1)"),
        ("tasks_per_iteration=0", "config key 'tasks_per_iteration' = 0 is out of range"),
        ("horizon=0", "config key 'horizon' = 0 is out of range (allowed: >= 1)"),
        ("hidden_sizes=[]", "config key 'hidden_sizes' = () is out of range"),
        ("hidden_sizes=[8, 0]", "config key 'hidden_sizes' = (8, 0) is out of range"),
    ],
)
def test_out_of_range_names_the_key_and_the_allowed_range(override, expected):
    assert config_error(SMOKE, [override]).startswith(expected)


def test_unknown_agent_lists_the_allowed_agents():
    message = config_error(SMOKE, ["agent=ppo"])
    assert message == (
        "config key 'agent' = 'ppo' is not allowed "
        "(allowed: one of omni, maml, pretrain, joint, random, oracle)"
    )


def test_other_choices_list_what_is_allowed():
    assert "one of trpo, adam" in config_error(SMOKE, ["outer_optimizer=sgd"])
    assert "one of reuse, own" in config_error(SMOKE, ["joint_rollouts=both"])


def test_unknown_family_mentions_the_key_and_the_known_families():
    message = config_error(SMOKE, ["family=cartpole"])
    assert "'family'" in message and "'cartpole'" in message
    assert "navigation-2d" in message and "halfcheetah-vel" in message
    assert "halfcheetah-dir" in message


@pytest.mark.parametrize("override", ["iterations", "=3", ""])
def test_malformed_override(override):
    assert config_error(SMOKE, [override]).startswith("--set takes key=value")


def test_override_that_is_not_yaml_names_it():
    assert config_error(SMOKE, ["hidden_sizes=[8,"]).startswith("--set hidden_sizes=[8,:")


def test_missing_file_lists_the_packaged_configs(tmp_path):
    message = config_error(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in message
    for name in packaged_configs():
        assert name in message


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("family: navigation-2d\nhidden_sizes: [8, 8\nseed: 0\n")
    message = config_error(str(path))
    assert message.startswith(f"{path} line ")
    assert int(message.split(" line ")[1].split(":")[0]) >= 2


def test_a_key_given_twice_is_an_error(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("iterations: 3\nseed: 1\niterations: 4\n")
    assert config_error(str(path)) == f"{path} line 3: key 'iterations' given twice"


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- iterations\n- 3\n")
    assert "mapping" in config_error(str(path))


def test_an_empty_file_is_an_error_not_all_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(str(path))


def test_yaml_aliases_and_huge_files_are_refused(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb.write_text("\n".join(lines) + "\n")
    message = config_error(str(bomb))
    assert "YAML aliases (*name) are not allowed" in message and len(message) < 200
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\nfamily: navigation-2d\n")
    assert "is not a config (at most 1 MiB)" in config_error(str(huge))


def test_a_long_bad_value_is_shortened_in_the_message():
    message = config_error(SMOKE, ["run_dir=[" + ",".join(["1"] * 10000) + "]"])
    assert message.startswith("config key 'run_dir' must be a string") and len(message) < 200


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="'iterations' must be an integer"):
        TrainConfig(iterations="ten")
    with pytest.raises(ConfigError, match="'gamma' = 2.0 is out of range"):
        dataclasses.replace(TrainConfig(), gamma=2)
    assert TrainConfig(hidden_sizes=[3, 4]).hidden_sizes == (3, 4)


# ---------------------------------------------------------------------------- save & load
def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        "navigation-2d",
        [
            "agent=maml",
            "hidden_sizes=[16, 8]",
            "horizon=50",
            "first_order=true",
            "cg_damping=1e-7",
            "run_dir='1e5'",  # a string YAML would read as a number if written bare
        ],
    )
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(str(path)) == cfg
    assert yaml.safe_load(path.read_text())["hidden_sizes"] == [16, 8]


def test_config_to_dict_is_plain_data():
    data = config_to_dict(load_config(SMOKE))
    assert list(data) == FIELD_NAMES
    assert data["hidden_sizes"] == [8, 8]
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in data.values())


def test_train_config_is_frozen():
    cfg = load_config(SMOKE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iterations = 3  # type: ignore[misc]
    assert cfg.iterations == 2
