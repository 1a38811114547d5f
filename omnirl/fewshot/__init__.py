"""Omni-Training for few-shot image classification (``family: fewshot``), the ``fewshot`` kind.

The same file names as every supervised kind (entry points in :mod:`omnirl.registry`):

- :mod:`omnirl.fewshot.config`: the strict run config (:class:`FewShotConfig`) and the learner
  factory ``make_learner(cfg, state)`` (learners by name from the one learner registry).
- :mod:`omnirl.fewshot.train`: the training loop and its run folder (``FewShotTrainer``).
- :mod:`omnirl.fewshot.evaluate`: 600 test episodes, mean accuracy ± 95% CI, the report.
- :mod:`omnirl.fewshot.render`: one test episode as a picture, queries marked right or wrong.

The data (class folders, the embedded ``glyphs`` and ``shapes``, splits, episodes) is in
``omnirl.envs.fewshot`` and the learners are in ``omnirl.agents.fewshot``; this package reaches
them only through the registry. Importing it imports nothing else.
"""
