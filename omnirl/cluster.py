"""Ray, the one engine omnirl scales out on: importing it, joining or starting an instance.

Ray is an optional extra (``pip install "omnirl[ray]"``); every command that needs it says so in
one line when it is missing (:class:`RayMissingError`, an :class:`~omnirl.options.OptionError`).
Without an address (nor ``RAY_ADDRESS``), a *local* instance is started with this machine's
cores, on the loopback interface only; ``auto`` joins the instance already running here
(``ray start --head``), ``ray://host:port`` a remote cluster through Ray Client.

A task or actor is given CPUs (``num_cpus``) and runs with torch, BLAS and physics threads to
match (:func:`task_options`): oversubscribed cores made the reference implementation several
times slower here, and Ray itself only sets ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from omnirl.options import OptionError
from omnirl.threads import CPUS_ENV, available_cores

INSTALL_HINT = 'pip install "omnirl[ray]"'
# Ray binds a local instance to the machine's network address unless told this is a machine
# that cannot host a cluster: a single-machine instance then stays on 127.0.0.1.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayMissingError(OptionError):
    """Ray is not installed; the message says how to install it."""


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayMissingError: Ray is not installed (one line with the install command).
    """
    try:
        import ray
    except ImportError:
        raise RayMissingError(f"this needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Ray, connected: the instance this process already belongs to, or the one asked for.

    Args:
        address: ``None`` (the cluster ``RAY_ADDRESS`` names, else a new local instance with
            :func:`~omnirl.threads.available_cores` CPUs), ``auto`` (the instance running on
            this machine), ``ray://host:port`` (Ray Client) or a cluster's ``host:port``.

    Raises:
        RayMissingError: Ray is not installed.
        OptionError: the cluster cannot be reached (one line).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")  # read once, when Ray is imported
    ray = import_ray()
    if ray.is_initialized():  # a task or actor, or a driver that connected before
        return ray
    if address not in (None, "auto"):
        _check_reachable(address)  # Ray itself retries an unreachable one for minutes
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            # Ray runs workers at niceness 15, so any other job on the machine (a run started
            # by hand, say) starved the sweep's runs; they get the priority omnirl train has.
            local = {"include_dashboard": False, "_system_config": {"worker_niceness": 0}}
            ray.init(address="local", num_cpus=available_cores(), **local, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OptionError(f"cannot reach a Ray cluster at {address!r}: {first}") from None
    return ray


def _check_reachable(address: str) -> None:
    """Refuse, in one line, a ``[ray://]host:port`` that no server answers on.

    Raises:
        OptionError: the connection is refused or times out.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # not host:port: Ray says what it makes of it
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise OptionError(
            f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}"
        ) from None


def thread_env(num_cpus: int) -> dict[str, str]:
    """Environment variables that size every thread pool of a worker to ``num_cpus``."""
    n = str(num_cpus)
    names = (CPUS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return dict.fromkeys(names, n)


def task_options(num_cpus: int) -> dict[str, Any]:
    """``.options(...)`` of a Ray task or actor given ``num_cpus``, its threads set to match.

    The variables go in the worker's ``runtime_env``, so they are set before the worker imports
    torch or numpy (whose thread pools read them once).
    """
    return {"num_cpus": num_cpus, "runtime_env": {"env_vars": thread_env(num_cpus)}}


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the connected cluster, all nodes together."""
    return int(ray.cluster_resources().get("CPU", 0))
