"""Video files and MuJoCo's offscreen OpenGL: what ``omnirl render`` writes its films with.

MuJoCo renders without a display through EGL or OSMesa; :func:`choose_gl_backend` finds one
that works in a child process (a backend that fails to load can break the process that tried).
Videos are encoded in memory and written atomically (:func:`omnirl.files.write_atomic`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnirl.files import write_atomic
from omnirl.options import OptionError

# Offscreen OpenGL backends MuJoCo can use without a display, in order of preference.
GL_BACKENDS = ("egl", "osmesa")
VIDEO_SUFFIXES = (".mp4", ".gif")

_PROBE = """
import mujoco
ctx = mujoco.GLContext(16, 16)
ctx.make_current()
ctx.free()
"""


class RenderError(OptionError):
    """Rendering cannot be done as asked (a video path, no OpenGL); one line for the CLI."""


def check_video_path(path: Path) -> None:
    """Fail early on an output path that cannot become a video.

    Raises:
        RenderError: an unsupported suffix or a folder that cannot be written.
    """
    from omnirl.report import check_writable

    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise RenderError(f"--out must end in .mp4 or .gif, got {str(path)!r}")
    if path.is_dir():
        raise RenderError(f"--out {path} is a folder; give a file name ending in .mp4 or .gif")
    try:
        check_writable(path.parent)
    except OSError as exc:
        raise RenderError(str(exc)) from None


def _probe_backend(backend: str) -> str | None:
    """``None`` if MuJoCo can open an offscreen context with ``backend``, else why not."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        # A child process: a backend that fails to load can leave this process's OpenGL broken.
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def choose_gl_backend() -> str:
    """Set ``MUJOCO_GL`` to a working offscreen backend (the user's choice if set) and return it.

    Must run before anything imports PyOpenGL, which fixes its platform on first import.

    Raises:
        RenderError: no backend works; the message says what each one reported and what to install.
    """
    requested = os.environ.get("MUJOCO_GL")
    candidates = (requested,) if requested else GL_BACKENDS
    errors = {}
    for backend in candidates:
        error = _probe_backend(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors[backend] = error
    tried = "; ".join(f"MUJOCO_GL={b}: {e}" for b, e in errors.items())
    raise RenderError(
        f"MuJoCo offscreen rendering does not work here ({tried}); install EGL or OSMesa "
        "(Debian/Ubuntu: apt-get install libegl1 libosmesa6)"
    )


def label_frame(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` on a dark band at the top."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 24), fill=(20, 20, 20))
    draw.text((8, 4), text, fill=(255, 255, 255), font=ImageFont.load_default(size=14))
    return np.asarray(image)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    """Encode ``frames`` as MP4 or GIF (by suffix) and write the file atomically."""
    import imageio.v3 as iio

    suffix = path.suffix.lower()
    stacked = np.stack(frames)
    if suffix == ".gif":
        data = iio.imwrite("<bytes>", stacked, extension=".gif", duration=1000 / fps, loop=0)
    else:
        data = iio.imwrite("<bytes>", stacked, extension=".mp4", fps=fps)
    write_atomic(path, data)
