"""Few-shot test protocol: N-way K-shot accuracy on test-class episodes, mean ± 95% CI.

For every dataset and shot, one list of episodes (drawn from the test classes with the
evaluation seed) is shared by every run, so runs are compared on the same episodes. A run's
network embeds every test image once (eval mode: batch norms use their running statistics);
an episode is then a selection of features, classified with prototypes (ProtoNet) or with a new
linear layer fine-tuned on the support set (Baseline). Outputs: ``eval.json`` (every episode's
accuracy) and ``eval.png``, written atomically.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl import checkpoint
from omnirl.config import ConfigError, load_config
from omnirl.evaluation import mean_ci95
from omnirl.fewshot.classify import finetune_accuracy, prototype_accuracy
from omnirl.fewshot.config import FewShotConfig, make_learner
from omnirl.fewshot.data import (
    Episode,
    EpisodeSampler,
    ImageSet,
    check_episodes,
    data_name,
    load_split,
)
from omnirl.files import write_atomic

TEST_STREAM = 104_729  # seeds the test episodes apart from training and validation draws
CHUNK = 100  # episodes classified at once (bounds memory for large feature sizes)


def episode_accuracies(
    features_ND: torch.Tensor,
    episodes: Sequence[Episode],
    classifier: str,
    generator: torch.Generator,
) -> np.ndarray:
    """Accuracy of every episode, its images given as rows of ``features_ND``.

    Args:
        features_ND: features of every image of the split the episodes index.
        episodes: episodes of one way/shot/queries.
        classifier: ``"protonet"`` (nearest prototype) or ``"finetune"`` (a new linear layer,
            :func:`~omnirl.fewshot.classify.finetune_accuracy`).
        generator: seeds the fine-tuned layers' initialisation and mini-batches.
    """
    accuracies = []
    for start in range(0, len(episodes), CHUNK):
        chunk = episodes[start : start + CHUNK]
        support = features_ND[torch.from_numpy(np.stack([e.support_WK for e in chunk]))]
        query = features_ND[torch.from_numpy(np.stack([e.query_WQ for e in chunk]))]
        if classifier == "protonet":
            accuracies.append(prototype_accuracy(support, query))
        else:
            accuracies.append(finetune_accuracy(support, query, generator))
    return torch.cat(accuracies).numpy().astype(np.float64)


def load_fewshot_run(run_dir: str | Path, which: str = "best") -> tuple[FewShotConfig, Any]:
    """The config and the learner restored from ``run_dir/checkpoints/<which>.pt``.

    Raises:
        FileNotFoundError: no run folder, or no such checkpoint (one line, for the CLI).
    """
    path = checkpoint.run_checkpoint(run_dir, which)
    run_dir = Path(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"), schema=FewShotConfig)
    state = checkpoint.load(path)
    learner = make_learner(cfg, len(state["classes"]))
    learner.load_state_dict(state["agent"])
    return cfg, learner


def sample_test_episodes(
    images: ImageSet, way: int, shot: int, queries: int, count: int, seed: int
) -> list[Episode]:
    """``count`` test episodes, the same for every run evaluated with ``seed``."""
    sampler = EpisodeSampler(images, way, shot, queries)
    rng = np.random.default_rng([seed, shot, TEST_STREAM])
    return [sampler.sample(rng) for _ in range(count)]


def evaluate_runs(
    runs: Sequence[tuple[Path, FewShotConfig, Any]],
    datas: Sequence[str],
    shots: Sequence[int] = (1, 5),
    episodes: int = 600,
    seed: int = 1000,
    flow: str | None = None,
    on_episodes: Callable[[int], None] | None = None,
    test_sets: dict[tuple[str, int], ImageSet] | None = None,
) -> dict[str, Any]:
    """Accuracy of every run on ``episodes`` test episodes per dataset and shot.

    Args:
        runs: (run folder, config, learner) of each run.
        datas: datasets whose test classes to use (folders or embedded names).
        shots: support images per class (K) of the test episodes.
        episodes: episodes per dataset and shot (the standard protocol: 600).
        seed: seeds the episodes and the fine-tuned classifiers.
        flow: the flow to test (default: each learner's ``eval_flow``).
        on_episodes: called with the number of episodes just evaluated (a progress bar).
        test_sets: the datasets' test classes if already loaded (:func:`load_test_sets`).

    Returns:
        The ``eval.json`` payload: the protocol and, per run, mean, 95% CI and every episode's
        accuracy per dataset and shot.

    Raises:
        ConfigError: a flow the runs do not have; a dataset that cannot make the episodes
            (:class:`~omnirl.fewshot.data.DataError`: too few classes or images).
    """
    way, queries = runs[0][1].test_way, runs[0][1].test_queries
    results = [_run_entry(run, cfg, learner, flow) for run, cfg, learner in runs]
    test_sets = test_sets or load_test_sets(runs, datas, max(shots))
    for data in datas:
        for entry, (_, cfg, learner) in zip(results, runs, strict=True):
            images = test_sets[data, cfg.image_size]
            features = learner.embed(images.images_NCHW, entry["flow"])
            for shot in shots:
                chosen = sample_test_episodes(images, way, shot, queries, episodes, seed)
                generator = torch.Generator().manual_seed(seed + shot)
                acc = episode_accuracies(features, chosen, entry["classifier"], generator)
                mean, ci = mean_ci95(acc)
                entry["results"].setdefault(data_name(data), {})[str(shot)] = {
                    "mean": mean,
                    "ci95": ci,
                    "accuracies": acc.tolist(),
                }
                if on_episodes is not None:
                    on_episodes(episodes)
    return {
        "family": "fewshot",
        "way": way,
        "queries": queries,
        "shots": list(shots),
        "episodes": episodes,
        "seed": seed,
        "data": [data_name(d) for d in datas],
        "runs": results,
    }


def load_test_sets(
    runs: Sequence[tuple[Path, FewShotConfig, Any]], datas: Sequence[str], max_shot: int
) -> dict[tuple[str, int], ImageSet]:
    """The test classes of every dataset at every image size the runs use, checked up front.

    Raises:
        DataError: a dataset cannot make ``max_shot``-shot test episodes (before any work).
    """
    way, queries = runs[0][1].test_way, runs[0][1].test_queries
    sets = {}
    for data in datas:
        for size in sorted({cfg.image_size for _, cfg, _ in runs}):
            sets[data, size] = load_split(data, "test", size)
            check_episodes(sets[data, size], way, max_shot, queries)
    return sets


def _run_entry(run: Path, cfg: FewShotConfig, learner: Any, flow: str | None) -> dict[str, Any]:
    flow = learner.eval_flow if flow is None else flow
    if flow not in learner.net.flows:
        raise ConfigError(
            f"--flow {flow!r} does not exist in {run} (its flows: {', '.join(learner.net.flows)})"
        )
    return {
        "run": str(run),
        "agent": cfg.agent,
        "trained_on": data_name(cfg.data),
        "flow": flow,
        "classifier": learner.classifier(flow),
        "results": {},
    }


def run_label(entry: dict[str, Any]) -> str:
    """``omni (meta flow, protonet)``-style label of a run's entry."""
    flow = "" if entry["agent"] != "omni" else f"{entry['flow']} flow, "
    return f"{entry['agent']} ({flow}{entry['classifier']})"


def plot_bytes(payload: dict[str, Any]) -> bytes:
    """PNG: one panel per dataset, bars of mean accuracy ± 95% CI per shot and run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    datas, shots, runs = payload["data"], payload["shots"], payload["runs"]
    fig, axes = plt.subplots(
        1, len(datas), figsize=(3.2 + 2.6 * len(datas), 3.8), dpi=120, squeeze=False
    )
    width = 0.8 / len(runs)
    for ax, data in zip(axes[0], datas, strict=True):
        for i, entry in enumerate(runs):
            stats = [entry["results"][data][str(s)] for s in shots]
            x = np.arange(len(shots)) + (i - (len(runs) - 1) / 2) * width
            bars = ax.bar(
                x,
                [100 * s["mean"] for s in stats],
                width,
                yerr=[100 * s["ci95"] for s in stats],
                capsize=3,
                label=run_label(entry) if ax is axes[0][0] else None,
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
        trained = {entry["trained_on"] for entry in runs}
        note = "test classes" if trained == {data} else "cross-domain"
        ax.set_title(f"{data} ({note})", fontsize=10)
        ax.set_xticks(range(len(shots)), [f"{payload['way']}-way {s}-shot" for s in shots])
        ax.set_ylim(100 / payload["way"] - 5, 100)
        ax.axhline(100 / payload["way"], color="gray", linestyle=":", linewidth=1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"accuracy % ({payload['episodes']} episodes, 95% CI)")
    fig.legend(loc="lower center", ncol=min(len(runs), 4), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(folder: Path, payload: dict[str, Any]) -> list[Path]:
    """Write ``eval.json`` and ``eval.png`` into ``folder`` atomically; return their paths."""
    # Every episode's accuracy on one line per list: 600-long columns made the file 4x longer.
    text = re.sub(
        r"\[[-+.\deE,\s]+\]", lambda m: "".join(m.group().split()), json.dumps(payload, indent=1)
    )
    files = {
        "eval.json": text.encode(),
        "eval.png": plot_bytes(payload),
    }
    for name, data in files.items():
        write_atomic(folder / name, data)
    return [folder / name for name in files]


def parse_shots(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]``.

    Raises:
        ConfigError: not a comma-separated list of integers >= 1.
    """
    try:
        shots = [int(x) for x in text.split(",")]
    except ValueError:
        shots = []
    if not shots or min(shots) < 1:
        raise ConfigError(f"--shots takes comma-separated integers >= 1, like 1,5; got {text!r}")
    return shots


def _datasets(loaded: Sequence[tuple[Path, FewShotConfig, Any]], data: Sequence[str] | None):
    """The datasets to test on: ``--data`` as given, else the data the runs were trained on."""
    if data:
        return list(data)
    trained = sorted({cfg.data for _, cfg, _ in loaded})
    if len(trained) != 1:
        raise ConfigError(f"the runs were trained on different data {trained}; choose with --data")
    return trained


def evaluate_command(
    console: Any,
    runs: Sequence[Path],
    episodes: int | None = None,
    shots: str | None = None,
    seed: int = 1000,
    checkpoint: str = "best",
    flow: str | None = None,
    out: Path | None = None,
    data: Sequence[str] | None = None,
    steps: int | None = None,
    lr_schedule: str | None = None,
    **_rl_options: Any,
) -> None:
    """``omnirl evaluate`` for few-shot runs: table, ``eval.json`` and ``eval.png``.

    Every run is tested on the same ``episodes`` (default 600) 5-way episodes per dataset and
    shot (default 1 and 5) drawn from the test classes of each ``data`` (default: the data the
    runs were trained on; another dataset gives a cross-domain evaluation). RL-only options
    (``tasks``) are ignored; ``steps`` and ``lr_schedule`` are refused.

    Raises:
        ConfigError: a bad option or data that cannot make the episodes (one line).
        OSError: a missing run or checkpoint, or an output folder that cannot be written.
    """
    from rich.table import Table

    from omnirl.cli import _progress
    from omnirl.report import check_writable

    for name, value in (("--steps", steps), ("--lr-schedule", lr_schedule)):
        if value is not None:
            raise ConfigError(f"{name} does not apply to few-shot runs (see --shots, --data)")
    shot_list = parse_shots(shots or "1,5")
    episodes = 600 if episodes is None else episodes
    loaded = [(Path(run), *load_fewshot_run(run, checkpoint)) for run in runs]
    datas = _datasets(loaded, data)
    folder = out or (Path(runs[0]) if len(runs) == 1 else Path("eval"))
    check_writable(folder)
    for run, cfg, learner in loaded:  # bad flows and data fail before the progress bar
        _run_entry(run, cfg, learner, flow)
    test_sets = load_test_sets(loaded, datas, max(shot_list))
    bar = _progress("episodes")
    bar.add_task("evaluate", total=len(runs) * len(datas) * len(shot_list) * episodes)
    with bar:
        payload = evaluate_runs(
            loaded,
            datas,
            shot_list,
            episodes,
            seed,
            flow,
            on_episodes=lambda n: bar.advance(bar.task_ids[0], n),
            test_sets=test_sets,
        )
    way = payload["way"]
    table = Table(title=f"{way}-way accuracy (%) ± 95% CI on {episodes} test episodes")
    table.add_column("run")
    for name in payload["data"]:
        for shot in shot_list:
            table.add_column(f"{name} {shot}-shot", justify="right")
    for entry in payload["runs"]:
        cells = [
            f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"
            for name in payload["data"]
            for r in (entry["results"][name][str(shot)] for shot in shot_list)
        ]
        table.add_row(f"{run_label(entry)}\n{Path(entry['run']).name}", *cells)
    console.print(table)
    for path in write_report(folder, payload):
        console.print(f"wrote {path}", highlight=False)
