"""Ray sessions for the optional Ray engine (``--engine ray``).

Ray is an optional dependency (``pip install 'moodshift[ray]'``). By default a local
Ray is started with ``ray.init(num_cpus=2)`` and shut down afterwards; pass
``address`` (``"auto"`` or ``"ray://host:10001"``) to use an existing cluster, which is
left running. The jobs themselves live with their stage: the self-join in
:mod:`moodshift.mining.ray_engine`, embedding extraction in :mod:`moodshift.audio.ray_embed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from moodshift.errors import DependencyError, InputError

ENGINES = ("local", "ray")
#: Workers of the local Ray started when no address is given.
DEFAULT_LOCAL_CPUS = 2


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise DependencyError(
            "--engine ray needs Ray: pip install 'moodshift[ray]' (or 'ray[data]'); "
            "or use --engine local"
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(*, address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to Ray for the duration of a block.

    Parameters
    ----------
    address : str, optional
        An existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        left running afterwards. None starts a local Ray and shuts it down after.
    num_cpus : int, optional
        CPUs of the local Ray (default :data:`DEFAULT_LOCAL_CPUS`); ignored with an address.

    Yields
    ------
    module
        The ``ray`` module, initialised.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Workers inherit the driver's environment: one BLAS thread per task, or the 2 tasks
    # of a 2-CPU node would each start 2 threads and contend.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        else:
            ray.init(num_cpus=int(num_cpus or DEFAULT_LOCAL_CPUS), include_dashboard=False,
                     runtime_env={"env_vars": env}, log_to_driver=False)  # fmt: skip
    except ConnectionError as exc:
        raise InputError(
            f"cannot connect to the Ray cluster at {address!r} ({exc}); check the address "
            "(e.g. 'auto' on a cluster node, or ray://head:10001), or omit --ray-address to "
            "start a local Ray"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()
