"""Few-shot test protocol: N-way K-shot accuracy on test-class episodes, mean ± 95% CI.

For every dataset and shot, one list of episodes (drawn from the test classes with the
evaluation seed) is shared by every run, so runs are compared on the same episodes. A run's
network embeds every test image once (eval mode: batch norms use their running statistics);
an episode is then a selection of features, classified by the learner as it is tested: with
prototypes (ProtoNet) or with a new linear layer fine-tuned on the support set (Baseline).
:func:`evaluate_report` is ``omnirl evaluate`` for few-shot runs: a table, ``eval.json`` (every
episode's accuracy), ``eval.csv`` and ``eval.png``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl.checkpoint import Run, load_runs
from omnirl.fewshot.config import FAMILY, data_module
from omnirl.options import (
    EvaluateOptions,
    OptionError,
    check_flow,
    parse_counts,
    reject,
)
from omnirl.report import (
    Report,
    csv_bytes,
    figure_bytes,
    json_bytes,
    mean_ci_text,
    output_folder,
    pyplot,
    run_label,
)
from omnirl.seeding import TEST_STREAM, stream
from omnirl.stats import mean_ci95

CHUNK = 100  # episodes classified at once (bounds memory for large feature sizes)
DEFAULT_SHOTS = "1,5"
DEFAULT_EPISODES = 600  # the standard protocol
MAX_SHOT = 1000
# Options of `omnirl evaluate` that only RL and regression runs use (--split: RL only).
NOT_FEWSHOT = ("tasks", "steps", "lr_schedule", "split")

Progress = Callable[[str, int, int], None]


def episode_accuracies(
    learner: Any,
    features_ND: torch.Tensor,
    episodes: Sequence[Any],
    flow: str,
    generator: torch.Generator,
) -> np.ndarray:
    """Accuracy of every episode, its images given as rows of ``features_ND``.

    Args:
        learner: classifies each episode as its ``flow`` is tested (``learner.classify``).
        features_ND: ``flow``'s features of every image of the split the episodes index.
        episodes: episodes (``omnirl.envs.fewshot.Episode``) of one way/shot/queries.
        flow: the flow the features are of.
        generator: seeds fine-tuned classifiers' initialisation and mini-batches.
    """
    accuracies = []
    for start in range(0, len(episodes), CHUNK):
        chunk = episodes[start : start + CHUNK]
        support = features_ND[torch.from_numpy(np.stack([e.support_WK for e in chunk]))]
        query = features_ND[torch.from_numpy(np.stack([e.query_WQ for e in chunk]))]
        way, queries = query.shape[1:3]
        labels = torch.arange(way).repeat_interleave(queries)
        predicted = learner.classify(support, query, flow, generator)
        accuracies.append((predicted == labels).double().mean(-1))  # exact k/n in JSON
    return torch.cat(accuracies).numpy().astype(np.float64)


def sample_test_episodes(
    images: Any, way: int, shot: int, queries: int, count: int, seed: int
) -> list[Any]:
    """``count`` test episodes of an image set, the same for every run evaluated with ``seed``."""
    sampler = data_module().EpisodeSampler(images, way, shot, queries)
    rng = stream(seed, shot, TEST_STREAM)
    return [sampler.sample(rng) for _ in range(count)]


def load_test_sets(
    runs: Sequence[Run], datas: Sequence[str], max_shot: int
) -> dict[tuple[str, int], Any]:
    """The test classes of every dataset at every image size the runs use, checked up front.

    Raises:
        DataError: a dataset cannot make ``max_shot``-shot test episodes (before any work).
    """
    data = data_module()
    way, queries = runs[0].cfg.test_way, runs[0].cfg.test_queries
    sets = {}
    for name in datas:
        for size in sorted({run.cfg.image_size for run in runs}):
            sets[name, size] = data.load_split(name, "test", size)
            data.check_episodes(sets[name, size], way, max_shot, queries)
    return sets


def _run_entry(run: Run, flow: str | None) -> dict[str, Any]:
    learner = run.learner
    check_flow(learner, flow, run.path)
    flow = learner.eval_flow if flow is None else flow
    return {
        "run": str(run.path),
        "agent": run.cfg.agent,
        "trained_on": data_module().data_name(run.cfg.data),
        "flow": flow,
        "classifier": learner.classifier(flow),
        "results": {},
    }


def evaluate_runs(
    runs: Sequence[Run | str | Path],
    datas: Sequence[str],
    shots: Sequence[int] = (1, 5),
    episodes: int = DEFAULT_EPISODES,
    seed: int = 1000,
    flow: str | None = None,
    on_progress: Progress | None = None,
    test_sets: dict[tuple[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Accuracy of every run on ``episodes`` test episodes per dataset and shot.

    Args:
        runs: runs restored with :func:`omnirl.checkpoint.load_run`, or their folders
            (restored from ``best.pt``).
        datas: datasets whose test classes to use (folders or embedded names).
        shots: support images per class (K) of the test episodes.
        episodes: episodes per dataset and shot (the standard protocol: 600).
        seed: seeds the episodes and the fine-tuned classifiers.
        flow: the flow to test (default: each learner's ``eval_flow``).
        on_progress: called as ``(run label, episodes done, episodes in all)``.
        test_sets: the datasets' test classes if already loaded (:func:`load_test_sets`).

    Returns:
        The ``eval.json`` payload: the protocol and, per run, mean, 95% CI and every episode's
        accuracy per dataset and shot.

    Raises:
        OptionError: a flow the runs do not have.
        DataError: a dataset that cannot make the episodes (too few classes or images).
    """
    loaded = [
        run if isinstance(run, Run) else load_runs([run], flow=flow, kind="fewshot")[0]
        for run in runs
    ]
    way, queries = loaded[0].cfg.test_way, loaded[0].cfg.test_queries
    results = [_run_entry(run, flow) for run in loaded]
    test_sets = test_sets or load_test_sets(loaded, datas, max(shots))
    name_of = data_module().data_name
    done, total = 0, len(loaded) * len(datas) * len(shots) * episodes
    for data in datas:
        for entry, run in zip(results, loaded, strict=True):
            images = test_sets[data, run.cfg.image_size]
            features = run.learner.embed(images.images_NCHW, entry["flow"])
            for shot in shots:
                chosen = sample_test_episodes(images, way, shot, queries, episodes, seed)
                generator = torch.Generator().manual_seed(seed + shot)
                acc = episode_accuracies(run.learner, features, chosen, entry["flow"], generator)
                mean, ci = mean_ci95(acc)
                entry["results"].setdefault(name_of(data), {})[str(shot)] = {
                    "mean": mean,
                    "ci95": ci,
                    "accuracies": acc.tolist(),
                }
                done += episodes
                if on_progress is not None:
                    on_progress(run_label(entry), done, total)
    return {
        "family": FAMILY,
        "way": way,
        "queries": queries,
        "shots": list(shots),
        "episodes": episodes,
        "seed": seed,
        "data": [name_of(d) for d in datas],
        "runs": results,
    }


# ----------------------------------------------------------------------------- the report
def method_label(entry: dict[str, Any]) -> str:
    """``omni (meta flow, protonet)``-style label of a run's entry: how it was tested."""
    flow = "" if entry["agent"] != "omni" else f"{entry['flow']} flow, "
    return f"{entry['agent']} ({flow}{entry['classifier']})"


def plot_bytes(payload: dict[str, Any]) -> bytes:
    """PNG: one panel per dataset, bars of mean accuracy ± 95% CI per shot and run."""
    plt = pyplot()
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
                label=method_label(entry) if ax is axes[0][0] else None,
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
    return figure_bytes(fig)


def _eval_json(payload: dict[str, Any]) -> bytes:
    """``eval.json`` with every episode's accuracies on one line per list."""
    # 600-long columns of numbers made the file 4x longer.
    text = json_bytes(payload).decode()
    return re.sub(r"\[[-+.\deE,\s]+\]", lambda m: "".join(m.group().split()), text).encode()


def _eval_csv(payload: dict[str, Any]) -> bytes:
    """``eval.csv``: one row per run, dataset and shot."""
    rows = [
        [e["run"], e["agent"], e["flow"], e["classifier"], data, shot, r["mean"], r["ci95"]]
        for e in payload["runs"]
        for data in payload["data"]
        for shot in payload["shots"]
        for r in [e["results"][data][str(shot)]]
    ]
    header = ["run", "agent", "flow", "classifier", "data", "shot", "accuracy", "ci95"]
    return csv_bytes(header, rows)


def _table(payload: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """Title, columns and rows: accuracy (%) ± 95% CI per run, dataset and shot."""
    title = f"{payload['way']}-way accuracy (%) ± 95% CI on {payload['episodes']} test episodes"
    columns = ["run"] + [f"{d} {s}-shot" for d in payload["data"] for s in payload["shots"]]
    rows = [
        [f"{method_label(e)}\n{Path(e['run']).name}"]
        + [
            mean_ci_text(r["mean"], r["ci95"], scale=100)
            for d in payload["data"]
            for r in (e["results"][d][str(s)] for s in payload["shots"])
        ]
        for e in payload["runs"]
    ]
    return title, columns, rows


def _datasets(runs: Sequence[Run], data: Sequence[str]) -> list[str]:
    """The datasets to test on: ``--data`` as given, else the data the runs were trained on."""
    if data:
        return list(data)
    trained = sorted({run.cfg.data for run in runs})
    if len(trained) != 1:
        raise OptionError(f"the runs were trained on different data {trained}; choose with --data")
    return trained


def evaluate_report(
    runs: Sequence[Path], options: EvaluateOptions, on_progress: Progress | None = None
) -> Report:
    """``omnirl evaluate`` for few-shot runs: the table, ``eval.json|csv|png`` and notes.

    Every run is tested on the same ``--episodes`` (default 600) 5-way episodes per dataset and
    shot (``--shots``, default 1,5) drawn from the test classes of each ``--data`` (default:
    the data the runs were trained on; another dataset gives a cross-domain evaluation).
    Everything is checked before any episode: options, runs, flows, the output folder and
    whether the data can make the episodes.

    Raises:
        OptionError: an option that does not apply (``--tasks``, ``--steps``,
            ``--lr-schedule``, ``--split``) or a bad value.
        ConfigError: a run's config, or data that cannot make the episodes (one line).
        FileNotFoundError: a missing run or checkpoint.
        OSError: an output folder that cannot be written.
    """
    reject(options, NOT_FEWSHOT, FAMILY)
    shots = parse_counts(options.shots or DEFAULT_SHOTS, "--shots", 1, MAX_SHOT)
    episodes = DEFAULT_EPISODES if options.episodes is None else options.episodes
    if episodes < 1:
        raise OptionError(f"--episodes must be >= 1, got {episodes}")
    loaded = load_runs(runs, options.checkpoint, options.flow, kind="fewshot")
    datas = _datasets(loaded, options.data)
    folder = output_folder(None if options.out is None else Path(options.out), runs)
    test_sets = load_test_sets(loaded, datas, max(shots))
    payload = evaluate_runs(
        loaded, datas, shots, episodes, options.seed, options.flow, on_progress, test_sets
    )
    title, columns, rows = _table(payload)
    files = {
        folder / "eval.json": _eval_json(payload),
        folder / "eval.csv": _eval_csv(payload),
        folder / "eval.png": plot_bytes(payload),
    }
    notes = [run.note for run in loaded if run.note]
    return Report(title, columns, rows, files, notes, payload)
