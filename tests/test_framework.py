"""One framework: the layers stay one-way, every learner keeps the contract, limits hold."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omnirl import registry
from omnirl.config import load_config
from omnirl.learner import Learner
from omnirl.options import (
    EvaluateOptions,
    OptionError,
    parse_counts,
    parse_lr_schedule,
    parse_task,
    reject,
)

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "omnirl").rglob("*.py"))
LAYERS = [ROOT / "omnirl", ROOT / "agents", ROOT / "envs"]
# An entry point or module path into the outer layers, e.g. "omnirl.agents.maml:MAMLAgent".
OUTER = re.compile(r"^omnirl\.(agents|envs)(\.\w+)*(:\w+)?$")


def outer_references(path: Path) -> list[str]:
    """Imports of ``omnirl.agents``/``omnirl.envs`` and strings naming them, anywhere in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            continue
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if OUTER.match(n)]
        if isinstance(node, ast.ImportFrom) and node.module == "omnirl":
            found += [
                f"{path.name}:{node.lineno}: from omnirl import {alias.name}"
                for alias in node.names
                if alias.name in ("agents", "envs")
            ]
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_agents_or_envs(path):
    # Only the registry names entry points; everything else reaches agents and envs through it.
    if path.name == "registry.py":
        return
    assert outer_references(path) == []


def test_the_static_check_finds_a_hidden_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "def f():\n    from omnirl.envs.navigation import optimal_return\n"
        "def g():\n    import importlib\n"
        "    return importlib.import_module('omnirl.agents.fewshot')\n"
    )
    assert len(outer_references(sneaky)) == 3  # the module, its member, and the string


def test_importing_the_core_loads_no_agent_or_env_module():
    code = (
        "import sys\n"
        "import omnirl.trainer, omnirl.evaluation, omnirl.render, omnirl.cli, omnirl.checkpoint\n"
        "import omnirl.sinusoid.train, omnirl.sinusoid.evaluate, omnirl.sinusoid.render\n"
        "import omnirl.fewshot.train, omnirl.fewshot.evaluate, omnirl.fewshot.render\n"
        "print(sorted(m for m in sys.modules if m.startswith(('omnirl.agents', 'omnirl.envs'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def smoke_learner(kind: str, name: str):
    """A learner of ``kind`` built as ``load_run`` builds one, from a smoke config."""
    problem = registry.kinds()[kind]
    source = {"rl": "smoke-navigation-2d", "sinusoid": "smoke-sinusoid"}.get(kind, "smoke-fewshot")
    cfg = load_config(source, [f"agent={name}"], schema=problem.load("config"))
    state = {"classes": ["a", "b", "c"]}  # what a few-shot checkpoint sizes its heads by
    return problem.load("learner")(cfg, state)


@pytest.mark.parametrize(
    ("kind", "name"),
    [(kind, name) for kind in registry.kinds() for name in registry.learner_names(kind)],
)
def test_every_registered_learner_keeps_the_contract(kind, name):
    learner = smoke_learner(kind, name)
    assert isinstance(learner, Learner)
    assert (learner.kind, learner.name) == (kind, name)
    assert learner.eval_flow in learner.flows
    assert isinstance(learner.adapts, bool) and isinstance(learner.trains, bool)
    state = learner.state_dict()
    smoke_learner(kind, name).load_state_dict(state)  # a fresh one restores it


def test_every_kind_piece_resolves():
    for kind in registry.kinds().values():
        for piece in ("config", "trainer", "learner", "evaluate", "render", "data"):
            assert kind.load(piece) is not None, (kind.name, piece)


def test_kinds_of_families_configs_and_names():
    from omnirl.config import kind_of

    assert kind_of("halfcheetah-vel").name == "rl"
    assert kind_of("smoke-sinusoid").name == "sinusoid"
    assert kind_of("fewshot").name == "fewshot"
    assert kind_of("no-such-thing").name == "rl"  # loading it reports the unknown family
    known = "Known learners: joint, omni, pretrain, protonet"
    with pytest.raises(registry.UnknownNameError, match=known):
        registry.load_learner("protonett", "fewshot")


# ----------------------------------------------------------------------- one of each
def definitions(name: str) -> list[str]:
    """Where a function or class ``name`` is defined in the three layers."""
    found = []
    for layer in LAYERS:
        for path in layer.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                defined = isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name
                if defined:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize(
    "name", ["load_run", "write_report", "adam_step", "mean_ci95", "parse_counts", "Learner"]
)
def test_one_definition_each(name):
    assert len(definitions(name)) == 1, definitions(name)


def test_seed_stream_constants_are_defined_once():
    for literal in ("7919", "104_?729", "30011"):
        places = [
            str(path.relative_to(ROOT))
            for layer in LAYERS
            for path in layer.rglob("*.py")
            if re.search(rf"\b{literal}\b", path.read_text())
        ]
        assert places == ["omnirl/seeding.py"], (literal, places)


def code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of code of a function: its span less its docstring, blank and comment lines."""
    body = node.body
    start = body[0].end_lineno if ast.get_docstring(node) and len(body) > 1 else node.lineno
    lines = source[start : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize(
    "path",
    [p for layer in LAYERS for p in sorted(layer.rglob("*.py"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_functions_and_modules_are_within_the_size_limits(path):
    source = path.read_text().splitlines()
    assert len(source) <= 400
    for node in ast.walk(ast.parse("\n".join(source))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert code_lines(node, source) <= 60, f"{node.name} at line {node.lineno}"


# ----------------------------------------------------------------------- option parsers
def test_comma_lists():
    assert parse_counts("5, 10,5", "--shots", 1, 20) == [5, 10]
    for bad, message in [("5,x", "comma-separated integers"), ("0", "lie in 1..20")]:
        with pytest.raises(OptionError, match=f"--shots.*{message}|{message}"):
            parse_counts(bad, "--shots", 1, 20)


@pytest.mark.parametrize("text", ["nan,nan", "inf,inf", "0.1,-1", "0.1", "0.1,0,0.1", "a,b"])
def test_lr_schedules_must_be_finite_positive_one_per_step(text):
    with pytest.raises(OptionError, match="--lr-schedule"):
        parse_lr_schedule(text, 2)


def test_lr_schedule_and_task_parse():
    assert parse_lr_schedule("0.1,0.05", 2) == [0.1, 0.05]
    assert parse_lr_schedule(None, 3) is None
    tasks = registry.get_family("halfcheetah-vel").tasks
    assert parse_task('{"velocity": 1.5}', tasks, "halfcheetah-vel") == {"velocity": 1.5}
    with pytest.raises(OptionError, match="must be JSON like"):
        parse_task("{velocity: 1}", tasks, "halfcheetah-vel")
    with pytest.raises(OptionError, match="does not fit halfcheetah-vel"):
        parse_task('{"velocity": 9}', tasks, "halfcheetah-vel")


def test_options_a_kind_does_not_use_are_refused():
    reject(EvaluateOptions(seed=3), ["shots"], "RL")  # given but used: fine
    with pytest.raises(OptionError, match="--lr-schedule does not apply to fewshot runs"):
        reject(EvaluateOptions(lr_schedule="0.1"), ["steps", "lr_schedule"], "fewshot")
