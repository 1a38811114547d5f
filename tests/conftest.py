import os

# Offscreen rendering for check_env's render check; must be set before MuJoCo is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import omnirl.envs  # noqa: E402,F401  (registers the families)

FAMILY_IDS = ["omnirl/Navigation2D-v1", "omnirl/HalfCheetahVel-v0", "omnirl/HalfCheetahDir-v0"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
