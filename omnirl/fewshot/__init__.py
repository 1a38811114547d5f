"""Omni-Training for few-shot image classification (``family: fewshot``).

- :mod:`omnirl.fewshot.data`: class folders, the embedded ``glyphs`` and ``shapes`` datasets,
  class splits and the episode sampler (numpy and Pillow only).
- :mod:`omnirl.fewshot.config`: the strict run config and the learning rules by name (the
  learners themselves live in ``omnirl.agents.fewshot``).
- :mod:`omnirl.fewshot.classify`: prototypes and the fine-tuned linear classifier.
- :mod:`omnirl.fewshot.train`: the training loop and its run folder.
- :mod:`omnirl.fewshot.evaluate`: 600 test episodes, mean accuracy ± 95% CI, report and plot.

The command line reaches the module through ``Config``, ``Trainer`` and ``evaluate_command``
(``omnirl.cli.SUPERVISED``); they are imported on first use, so importing
:mod:`omnirl.fewshot.data` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Config": "omnirl.fewshot.config:FewShotConfig",
    "Trainer": "omnirl.fewshot.train:FewShotTrainer",
    "evaluate_command": "omnirl.fewshot.evaluate:evaluate_command",
}


def __getattr__(name: str) -> Any:
    """``Config``, ``Trainer`` and ``evaluate_command``, imported on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'omnirl.fewshot' has no attribute {name!r}")
    module, _, attr = _LAZY[name].partition(":")
    return getattr(importlib.import_module(module), attr)
