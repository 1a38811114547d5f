"""``omnirl report``: aggregates over seeds, with the stratified bootstrap of rliable.

Input: the ``eval.json`` that ``omnirl evaluate RUN`` (or ``omnirl sweep``) wrote into each run
folder (RL, sinusoid or few-shot; :func:`scores_of` reads each), all of one family and split
evaluated on the same tasks (same seed and count).
Runs are grouped by *label*: the agent, plus the variant tag of a sweep's run folder
(``<family>-<agent>-<seed>-<tag>``). For every family, split, label and number of adaptation
steps the report gives, over the label's seeds x the test tasks:

- the mean and the interquartile mean (IQM: the mean of the middle 50% of the scores,
  ``scipy.stats.trim_mean(scores, 0.25)``) of the per-task returns;
- their 95% intervals by the stratified bootstrap of Agarwal et al. (2021, rliable): the tasks
  are the strata, and each replicate resamples a label's seeds with replacement within every
  task (percentile intervals, :func:`scipy.stats.bootstrap` with one sample per task). It
  measures how much the result would move with other seeds on these tasks; the per-run
  intervals of ``eval.json`` are the ones over tasks;
- the paired difference to the ``reference`` label (default ``maml``; ``protonet`` for
  few-shot, which has no ``maml``): the same statistic of
  the label minus the reference's, both on the same tasks, each label's seeds resampled within
  each task.

A label with one seed has no interval (NaN). The learning curves (and each label against the
reference at equal env steps) are in :mod:`omnirl.curves`, the statistics in :mod:`omnirl.stats`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.curves import at_equal_env_steps, band, curves_figure, learning_curves
from omnirl.options import OptionError
from omnirl.report import Report, csv_bytes, figure_bytes, json_bytes, pyplot
from omnirl.stats import CONFIDENCE, STATISTICS, iqm, paired, stratified_interval

__all__ = ["CONFIDENCE", "STATISTICS", "aggregate_report", "iqm", "paired", "stratified_interval"]


# ------------------------------------------------------------------------------ inputs
def run_folders(paths: Sequence[Path]) -> list[Path]:
    """Run folders: each path itself if it is one, else the run folders inside it (a sweep)."""
    runs: list[Path] = []
    for path in paths:
        if (path / "config.yaml").is_file():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
        else:
            raise FileNotFoundError(f"{path} is neither a run folder nor a folder of runs")
    if not runs:
        raise OptionError(f"no run folders in {', '.join(map(str, paths))}")
    return runs


def label_of(run: Path, cfg: Any) -> str:
    """The agent, plus the variant tag of a sweep's ``<family>-<agent>-<seed>-<tag>`` folder."""
    stem = f"{cfg.family}-{cfg.agent}-{cfg.seed}-"
    in_sweep = (run.parent / "sweep.yaml").is_file()
    return (
        f"{cfg.agent}-{run.name[len(stem) :]}"
        if in_sweep and run.name.startswith(stem)
        else cfg.agent
    )


# What each problem kind's eval.json holds: the metric, its table digits, and its scores.
METRICS = {"rl": ("return", 1), "sinusoid": ("MSE", 3), "fewshot": ("accuracy %", 1)}
# The paired differences' default reference: the kind's plain meta-learner.
REFERENCES = {"rl": "maml", "sinusoid": "maml", "fewshot": "protonet"}


def scores_of(kind: str, payload: dict[str, Any], entry: dict[str, Any]) -> Iterator[tuple]:
    """``(split, scores (steps + 1, tasks), protocol)`` of one run's entry in an ``eval.json``.

    RL: the split's returns after 0..steps steps. Sinusoid: one split per K (``K=5``), the
    MSE after 0..steps SGD steps. Few-shot: one split per dataset and shot (``glyphs 5-shot``),
    each episode's accuracy in % as a single "step". ``protocol`` is what must match for runs
    to be aggregated together (the tasks, their seed, and how they were scored).
    """
    if kind == "rl":
        keys = ("tasks", "steps", "episodes", "seed")
        yield payload.get("split", "test"), entry["returns"], {k: payload[k] for k in keys}
    elif kind == "sinusoid":
        protocol = {k: payload[k] for k in ("tasks", "steps", "query_points", "seed")}
        for shots, mse in entry["mse"].items():
            yield f"K={shots}", mse["tasks"], protocol
    elif kind == "fewshot":
        protocol = {k: payload[k] for k in ("way", "queries", "episodes", "seed")}
        for dataset, by_shots in entry["results"].items():
            for shots, result in by_shots.items():
                accuracies = 100.0 * np.asarray(result["accuracies"], dtype=float)
                yield f"{dataset} {shots}-shot", accuracies[None], protocol


def load_scores(runs: Sequence[Path]) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """The evaluated runs by (family, split): their protocol and per-label scores.

    A run's evaluations are its ``eval.json`` (for RL the test split) and ``eval-<split>.json``
    (the other RL splits, as ``omnirl evaluate --split`` names them); each of
    :func:`scores_of`'s splits is a group.

    Returns:
        ``{(family, split): {"protocol": ..., "kind": ..., "labels": {label: {"runs": [...],
        "scores": (seeds, steps + 1, tasks)}}}}`` and notes on runs left out.

    Raises:
        OptionError: runs of one family and split evaluated on different tasks (one line).
    """
    from omnirl.config import kind_of, load_run_config

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    notes = []
    for run in runs:
        kind = kind_of(run).name
        files = sorted(run.glob("eval-*.json")) if kind == "rl" else []
        files = [run / "eval.json", *files] if (run / "eval.json").is_file() else files
        if not files:
            notes.append(f"{run}: not evaluated (omnirl evaluate {run}), left out")
            continue
        for path in files:
            payload = json.loads(path.read_text())
            entry = next((r for r in payload["runs"] if Path(r["run"]).name == run.name), None)
            if entry is None:
                notes.append(f"{path} does not evaluate {run.name}, left out")
                continue
            for split, scores, protocol in scores_of(kind, payload, entry):
                key = (payload["family"], split)
                new = {"protocol": protocol, "kind": kind, "labels": {}, "first": run}
                group = groups.setdefault(key, new)
                if group["protocol"] != protocol:
                    raise OptionError(
                        f"{run} was evaluated on other tasks than {group['first']} "
                        f"({_protocol_text(protocol)} vs {_protocol_text(group['protocol'])})"
                        ": evaluate them alike to aggregate them"
                    )
                labels = group["labels"]
                label = labels.setdefault(label_of(run, load_run_config(run)), {"runs": []})
                label["runs"].append(str(run))
                label.setdefault("scores", []).append(np.asarray(scores, dtype=float))
    for group in groups.values():
        for label in group["labels"].values():
            label["scores"] = np.stack(label["scores"])
    return groups, notes


def _protocol_text(protocol: dict[str, Any]) -> str:
    return ", ".join(
        f"{len(v) if isinstance(v, list) else v} {k}" for k, v in sorted(protocol.items())
    )


# ---------------------------------------------------------------------------- aggregate
def aggregate(
    groups: dict[tuple[str, str], dict[str, Any]],
    reference: str | None,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Per family, split and label: mean and IQM per step with intervals, and differences."""
    out = []
    for (family, split), group in sorted(groups.items()):
        labels, entries = group["labels"], {}
        ref_label = reference or REFERENCES[group["kind"]]
        ref = labels.get(ref_label)
        for label, data in sorted(labels.items()):
            scores = data["scores"]  # (seeds, steps + 1, tasks)
            entry: dict[str, Any] = {"runs": data["runs"], "seeds": int(scores.shape[0])}
            # Each run's own mean per step: the spread between seeds, which the stratified
            # bootstrap (seeds resampled within every task) does not show as a seed effect.
            entry["run_means"] = scores.mean(axis=-1).tolist()
            for name, stat in STATISTICS.items():
                per_step = [scores[:, s] for s in range(scores.shape[1])]
                entry[name] = [float(stat(x)) for x in per_step]
                entry[f"{name}_ci"] = [
                    stratified_interval(stat, [x], resamples, seed) for x in per_step
                ]
                if ref is not None and label != ref_label:
                    diff = paired(name)
                    pairs = [(x, ref["scores"][:, s]) for s, x in enumerate(per_step)]
                    entry[f"{name}_diff"] = [float(diff(x, r)) for x, r in pairs]
                    entry[f"{name}_diff_ci"] = [
                        stratified_interval(diff, [x, r], resamples, seed) for x, r in pairs
                    ]
            entries[label] = entry
        tasks = int(next(iter(labels.values()))["scores"].shape[-1])
        metric, digits = METRICS[group["kind"]]
        out.append(
            {
                "family": family,
                "split": split,
                "tasks": tasks,
                "metric": metric,
                "digits": digits,
                "reference": ref_label,
                "labels": entries,
            }
        )
    return out


# ------------------------------------------------------------------------------ figures
def aggregate_figure(results: list[dict[str, Any]]) -> bytes:
    """IQM return vs adaptation steps, one line and 95% band per label, a panel per family."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(results), figsize=(5.2 * len(results), 4), dpi=120, squeeze=False
    )
    for ax, result in zip(axes[0], results, strict=True):
        for i, (label, entry) in enumerate(result["labels"].items()):
            steps = range(len(entry["iqm"]))
            n = entry["seeds"]
            name = f"{label} ({n} seed{'s' if n != 1 else ''})"
            band(ax, steps, entry["iqm"], entry["iqm_ci"], name, i)
        ax.set_xticks(range(max(len(e["iqm"]) for e in result["labels"].values())))
        ylabel = f"IQM {result['metric']} (95% stratified bootstrap CI)"
        ax.set(xlabel="adaptation steps", ylabel=ylabel)
        ax.set_title(f"{result['family']}, {result['split']} split, {result['tasks']} tasks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_bytes(fig)


# ------------------------------------------------------------------------------ report
def _interval(ci: Sequence[float], digits: int = 1) -> str:
    if not all(math.isfinite(v) for v in ci):
        return ""
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _rows(results: list[dict[str, Any]], steps: int) -> tuple[list[list[str]], list[list]]:
    rows, csv_rows = [], []
    for result in results:
        d = result["digits"]
        for label, e in result["labels"].items():
            last = len(e["iqm"]) - 1
            diff = (
                f"{e['iqm_diff'][last]:+.{d}f}{_interval(e['iqm_diff_ci'][last], d)}"
                if "iqm_diff" in e
                else ""
            )
            rows.append(
                [f"{result['family']} ({result['split']})", label, str(e["seeds"])]
                + [
                    f"{v:.{d}f}{_interval(c, d)}"
                    for v, c in zip(e["iqm"], e["iqm_ci"], strict=True)
                ]
                + [""] * (steps - len(e["iqm"]))
                + [f"{e['mean'][last]:.{d}f}{_interval(e['mean_ci'][last], d)}", diff]
            )
            for step in range(last + 1):
                row = [result["family"], result["split"], label, step, e["seeds"], result["tasks"]]
                for name in ("mean", "iqm", "mean_diff", "iqm_diff"):
                    if name in e:
                        row += [e[name][step], *e[f"{name}_ci"][step]]
                    else:
                        row += ["", "", ""]
                csv_rows.append(row)
    return rows, csv_rows


def aggregate_report(
    paths: Sequence[Path],
    reference: str | None = None,
    out: Path | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> Report:
    """``omnirl report``: the aggregates of the evaluated RL runs in ``paths``.

    Args:
        paths: sweep folders (their run folders are read) or run folders.
        reference: the label the paired differences are taken against (default: per kind,
            :data:`REFERENCES`).
        out: where ``report.json``, ``report.csv``, ``report.png`` and ``curves.png`` go
            (default: the one folder given, else ``./report``).
        resamples: bootstrap replicates per interval.
        seed: seeds the bootstrap.

    Raises:
        OptionError, FileNotFoundError: no evaluated runs, or runs evaluated differently.
    """
    groups, notes = load_scores(run_folders(paths))
    if not groups:
        raise OptionError(f"no evaluated runs in {', '.join(map(str, paths))}: {'; '.join(notes)}")
    results = aggregate(groups, reference, resamples, seed)
    curves = learning_curves(groups, resamples, seed)
    for r in results:
        if r["reference"] not in r["labels"]:
            notes.append(
                f"{r['family']} ({r['split']}): no {r['reference']!r} runs, no paired "
                "differences (--reference names one)"
            )
    folder = out or (Path(paths[0]) if len(paths) == 1 else Path("report"))
    payload = {"reference": reference, "resamples": resamples, "confidence": CONFIDENCE}
    curve_reference = reference or REFERENCES["rl"]
    equal = at_equal_env_steps(curves, curve_reference)
    payload.update(results=results, curves=curves, equal_env_steps=equal)
    for family, by_label in sorted(equal.items()):
        for label, at in sorted(by_label.items()):
            notes.append(
                f"{family}: quick evaluation at equal env steps ({at['env_steps']:,.0f}): "
                f"{label} {at['mean']:.1f}, {curve_reference} {at['reference_mean']:.1f}"
            )
    steps = max(len(e["iqm"]) for r in results for e in r["labels"].values())
    header = ["family", "split", "label", "step", "seeds", "tasks"]
    for name in ("mean", "iqm", "mean_diff", "iqm_diff"):
        header += [name, f"{name}_low", f"{name}_high"]
    rows, csv_rows = _rows(results, steps)
    files = {
        folder / "report.json": json_bytes(payload),
        folder / "report.csv": csv_bytes(header, csv_rows),
        folder / "report.png": aggregate_figure(results),
    }
    if curves:
        files[folder / "curves.png"] = curves_figure(curves, curve_reference)
    return Report(
        "IQM over seeds x tasks (return, MSE or accuracy %) [95% stratified bootstrap CI]",
        [
            "family (split)",
            "label",
            "seeds",
            *(f"IQM, {s} steps" for s in range(steps)),
            "mean, last step",
            "IQM - reference, last step",
        ],
        rows,
        files=files,
        notes=notes,
        payload=payload,
    )
