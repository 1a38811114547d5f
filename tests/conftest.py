import os

# Offscreen rendering for check_env's render check; must be set before MuJoCo is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from omnirl import registry  # noqa: E402

# Every registered RL family, so a new family is tested the moment it is registered.
FAMILY_IDS = [family.env_id for family in registry.families().values()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``env_id`` and does not choose its own runs on every family."""
    chosen = any(
        "env_id" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "env_id" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("env_id", FAMILY_IDS)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ------------------------------------------------------------ MAML checks (finite differences)
def _numeric_gradient(objective, params, eps=1e-6):
    """Central finite differences of ``objective()`` w.r.t. every entry of ``params`` (flat)."""
    import torch

    flat = torch.nn.utils.parameters_to_vector(params).detach()
    numeric = torch.zeros_like(flat)
    for i in range(flat.numel()):
        values = []
        for sign in (1, -1):
            shifted = flat.clone()
            shifted[i] += sign * eps
            torch.nn.utils.vector_to_parameters(shifted, params)
            values.append(objective().item())
        numeric[i] = (values[0] - values[1]) / (2 * eps)
    torch.nn.utils.vector_to_parameters(flat, params)
    return numeric


@pytest.fixture
def numeric_gradient():
    """``numeric_gradient(objective, params)``: finite-difference gradients, for MAML checks."""
    return _numeric_gradient


# ----------------------------------------------------------------------------- fewshot
FEWSHOT_SIZE = 12  # the smoke-fewshot config's image size


def _write_fewshot_classes(root, names, images, seed=0, size=FEWSHOT_SIZE):
    """Class folders ``root/<name>/*.png`` of real glyph images, each class its own glyph."""
    from PIL import Image

    from omnirl.envs.fewshot_embedded import draw_glyph, glyph_class

    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        class_rng = np.random.default_rng([seed, k])
        strokes = glyph_class(class_rng)
        for i in range(images):
            Image.fromarray(draw_glyph(strokes, class_rng, size)).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="session")
def write_fewshot_classes():
    """``write_fewshot_classes(root, names, images, seed=0)``: PNG class folders of glyphs."""
    return _write_fewshot_classes


@pytest.fixture(scope="session")
def fewshot_data(tmp_path_factory):
    """root/train|val|test/<class>/*.png: 5 classes per split, 22 images each (5 + 16 queries),
    enough for the smoke-fewshot config's 5-way validation and test episodes."""
    root = tmp_path_factory.mktemp("fewshot-data")
    for split in ("train", "val", "test"):
        _write_fewshot_classes(root / split, [f"{split}-{k}" for k in range(5)], 22, len(split))
    return root
