"""Omni-Training for few-shot sinusoid regression (``family: sinusoid``; DESIGN.md section 9).

Run through the same command line as the RL families (``omnirl train sinusoid``, ``omnirl
evaluate RUN...``, ``omnirl render RUN``); ``omnirl.registry`` names the entry points below as
the ``sinusoid`` problem kind. The tasks and their data are in ``envs/sinusoid.py`` (numpy), the
regressors and learning rules in ``agents/sinusoid.py``; this package reaches them only through
the registry (``registry.kinds()["sinusoid"].load("data")``, ``registry.load_learner``).

- :mod:`omnirl.sinusoid.config`: the strict run config (:class:`SinusoidConfig`) and the
  learner factory :func:`make_learner`.
- :mod:`omnirl.sinusoid.train`: :class:`SinusoidTrainer`. Each iteration draws a meta-batch of
  B tasks from the fixed training set (30,000 tasks x 50 points, drawn from ``data_seed``), K
  support and Q query points per task, and takes one Adam step of the learner's rule. Every
  ``log_every`` iterations: one line of ``metrics.jsonl`` (means over the window), a quick
  evaluation, and atomic checkpoints (``latest.pt``; ``best.pt`` by ``eval/mse_post``, the quick
  evaluation's MSE after one step).
- :mod:`omnirl.sinusoid.evaluate`: fresh test tasks from their own seed stream, K in {5, 10,
  20} support points (the first K of the same 20, so K's differ only in data), 1..10 SGD steps
  at the inner learning rate, MSE on 100 query points per task; mean and 95% CI over tasks.
  The plot is the paper's Figure 5 (log scale).
- :mod:`omnirl.sinusoid.render`: one task, its K support points, the true wave and the
  recovered ones after the chosen step counts (the paper's Figure 6).
"""
