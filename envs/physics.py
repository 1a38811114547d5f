"""Physics domains: a task's multipliers applied to a MuJoCo model or to a batch's simulations.

Every element of ``body_mass``, ``body_inertia``, ``dof_damping`` and ``geom_friction`` becomes
the compiled model's value times the task's multiplier (``omnirl.envs.distributions
.Multipliers``: ``base^u`` per element, as in the rand-param envs of PEARL and ProMP). Masses
and inertias are inputs of ``mj_setConst`` (``mujoco.MjModel._setconst_inputs``), so the
constants MuJoCo derives from them (``body_subtreemass``, ``dof_invweight0``,
``actuator_acc0``, ...) are recomputed after every change; damping and friction are read
directly by the solver.

- A single env changes its own model (:class:`ModelDomain`).
- A native vector env gives each simulation of its ``mujoco.batch.Batch`` its own values with
  ``Batch.expand`` and then ``Batch.set_const`` (:class:`BatchDomains`), which is what running
  each simulation on its own changed model does, bit for bit (tested).

Unit multipliers are the compiled physics exactly: a model or batch that never left them is
never touched, and one that did gets the compiled values back (``x * 1.0 == x``) and
``mj_setConst`` recomputes the compiled constants bit for bit (tested). Changes take effect at
once, so a domain set between resets applies from the next step in both kinds of env.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

from omnirl.envs.distributions import PHYSICS_BASES

PHYSICS_FIELDS = tuple(PHYSICS_BASES)
Multipliers = dict[str, np.ndarray]


def model_shapes(model: mujoco.MjModel) -> dict[str, tuple[int, ...]]:
    """The shape of every physics field in ``model`` (what a task's multipliers must match)."""
    return {key: getattr(model, key).shape for key in PHYSICS_FIELDS}


def task_multipliers(
    tasks: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]]
) -> Multipliers:
    """``(N, *shape)`` multipliers of every physics field for N validated tasks (ones if absent).

    Each task object is converted once: collectors pass the same task for all its episodes.
    """
    rows: dict[int, int] = {}
    unique = [rows.setdefault(id(task), len(rows)) for task in tasks]
    firsts = {row: task for task, row in zip(tasks, unique, strict=True)}
    out = {}
    for key, shape in shapes.items():
        values = np.ones((len(rows), *shape))
        for row, task in firsts.items():
            if key in task:
                values[row] = task[key]
        out[key] = values[unique]
    return out


def _is_unit(multipliers: Multipliers) -> bool:
    return all(bool(np.all(m == 1.0)) for m in multipliers.values())


class ModelDomain:
    """The physics domain of one model: multipliers written into it, constants recomputed.

    Args:
        model: the env's own model (Gymnasium's ``MujocoEnv.model``), changed in place.
    """

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self._base = {key: getattr(model, key).copy() for key in PHYSICS_FIELDS}
        self.shapes = model_shapes(model)
        self._current: Multipliers | None = None  # None: the compiled model, never changed
        self._scratch: mujoco.MjData | None = None  # mj_setConst's workspace, not the env's data

    def apply(self, multipliers: Multipliers) -> None:
        """Set the domain: every physics field = compiled value x multiplier (one per element)."""
        if self._current is None and _is_unit(multipliers):
            return
        if self._current is not None and all(
            np.array_equal(multipliers[key], self._current[key]) for key in PHYSICS_FIELDS
        ):
            return
        for key in PHYSICS_FIELDS:
            getattr(self.model, key)[:] = self._base[key] * multipliers[key]
        if self._scratch is None:
            self._scratch = mujoco.MjData(self.model)
        mujoco.mj_setConst(self.model, self._scratch)
        self._current = {key: np.array(multipliers[key]) for key in PHYSICS_FIELDS}


class BatchDomains:
    """Per-simulation physics domains of a ``mujoco.batch.Batch``.

    The batch shares one model until a simulation first leaves the unit physics; then the four
    fields are expanded (``Batch.expand``) and each simulation whose multipliers changed gets
    its values and its derived constants (``Batch.set_const`` on those simulations only).

    Args:
        batch: the vector env's batch.
    """

    def __init__(self, batch: Any):
        self.batch = batch
        self._base = {key: getattr(batch.model, key).copy() for key in PHYSICS_FIELDS}
        self.shapes = model_shapes(batch.model)
        self._fields: Multipliers | None = None  # the expanded (nsim, ...) model fields
        self._current: Multipliers | None = None  # the (nsim, ...) multipliers in effect

    def apply(self, multipliers: Multipliers) -> None:
        """Set simulation i's domain from ``multipliers[key][i]`` for every physics field."""
        if self._fields is None:
            if _is_unit(multipliers):
                return
            self._fields = {key: self.batch.expand(key) for key in PHYSICS_FIELDS}
            self._current = {key: np.ones_like(multipliers[key]) for key in PHYSICS_FIELDS}
        assert self._current is not None
        nsim = self.batch.nsim
        changed = np.zeros(nsim, dtype=bool)
        for key in PHYSICS_FIELDS:
            changed |= (multipliers[key] != self._current[key]).reshape(nsim, -1).any(axis=1)
        ids = np.flatnonzero(changed)
        if not len(ids):
            return
        for key in PHYSICS_FIELDS:
            self._fields[key][ids] = self._base[key] * multipliers[key][ids]
            self._current[key][ids] = multipliers[key][ids]
        self.batch.set_const(ids)

    def model(self, sim: int) -> mujoco.MjModel:
        """Simulation ``sim``'s model with its domain (a copy, e.g. to compare or render)."""
        return self.batch.get_model(sim)
