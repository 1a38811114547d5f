"""The tuning table: omni's distillation variants by the return after one step on `val` tasks.

Run: ``python results/sweeps/tune/table.py results/sweeps/tune/navigation-2d`` after
``omnirl sweep results/sweeps/tune/navigation-2d.yaml`` and, for every run folder RUN,
``omnirl evaluate RUN --split val --tasks 100 --steps 1 --episodes 20 --checkpoint latest
--out RUN/eval-val`` (which writes ``eval-val.json``). Prints a markdown table: per variant,
each seed's mean return after 0 and 1 steps over the 100 validation tasks, the mean over
seeds, and the variant chosen (the best mean after one step). Test tasks are never read.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main(sweep: Path) -> None:
    """Print the table of the sweep folder ``sweep`` (its runs' ``eval-val/eval-val.json``)."""
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for path in sorted(sweep.glob("*/eval-val/eval-val.json")):
        data = json.loads(path.read_text())
        assert data["split"] == "val", path
        match = re.match(r".*-omni-(\d+)-(.+)$", path.parent.parent.name)
        seed, tag = int(match.group(1)), match.group(2)
        mean = data["runs"][0]["mean"]
        rows.setdefault(tag, {})[seed] = (mean[0], mean[1])
    seeds = sorted({s for r in rows.values() for s in r})
    head = " | ".join(f"seed {s}: 0 / 1 step" for s in seeds)
    print(f"| variant | {head} | mean after 1 step |\n|---|" + "---:|" * (len(seeds) + 1))
    best = max(rows, key=lambda t: sum(v[1] for v in rows[t].values()) / len(rows[t]))
    for tag, by_seed in rows.items():
        cells = " | ".join(
            f"{by_seed[s][0]:.2f} / {by_seed[s][1]:.2f}" if s in by_seed else "-" for s in seeds
        )
        mean = sum(v[1] for v in by_seed.values()) / len(by_seed)
        mark = " (chosen)" if tag == best else ""
        print(f"| {tag}{mark} | {cells} | {mean:.2f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
