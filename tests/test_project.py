"""The project describes itself truthfully: CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    [test_command] = [line for line in readme if line.endswith("python -m pytest -q")]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
