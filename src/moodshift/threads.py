"""Thread policy: how many threads torch, BLAS, numba and FAISS may use.

Every numeric library starts as many threads as the machine has cores, and
OpenMP threads spin while they wait. On a machine that also runs other work
(a laptop, a CI runner, a shared server) that is the worst case: each thread
waits for a core another process holds, and a parallel region runs at the
speed of its slowest, descheduled thread. Measured on a 2-core machine at load
average 5: one training epoch took 17 s with torch's default 2 threads and
1.2 s with one.

So the count is the cores this process can actually get:

1. ``MOODSHIFT_THREADS=N`` (or a ``--threads N`` option), when given, wins;
2. otherwise the cores it may run on (``os.sched_getaffinity``), capped by the
   cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
   ``cpu.cfs_period_us``: a container limited to 1.5 CPUs gets 1 thread);
3. minus the cores other processes keep busy: the larger of the 1-minute load
   average and the processes runnable right now (``/proc/loadavg``), so a run
   that starts next to busy jobs does not wait a minute for the average to rise;
4. at least 1. A server (``role="serve"``) always uses 1 per process: its
   concurrency comes from concurrent requests (and ``--workers``), not from
   splitting one small product over cores.

:func:`apply_thread_policy` sets the count everywhere; long jobs (training)
call :func:`ThreadPolicy.refresh` between epochs so a machine that becomes busy
mid-run is noticed.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from moodshift._deps import require_faiss
from moodshift.errors import InputError

ENV = "MOODSHIFT_THREADS"
ROLES = ("train", "mine", "serve")
_CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = _CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores, or None when unlimited/unknown.

    Parameters
    ----------
    root : Path
        Where the cgroup file system is mounted.

    Returns
    -------
    float or None
        ``quota / period`` (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``).
    """
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by the cgroup quota (>= 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        # A quota of 1.5 cores gives 1 thread: a second one would be throttled half the time.
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def _own_running() -> int:
    """Threads of this process that are runnable now (state ``R`` in ``/proc/self/task``)."""
    count = 0
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, IndexError):
                # The state follows the parenthesised command name, which may hold spaces.
                count += task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    return count


def busy_cores(*, own: float = 0.0, samples: int = 5, interval: float = 0.01) -> float:
    """Cores kept busy by other processes: max(1-min load average, runnable now).

    ``/proc/loadavg``'s fourth field counts the tasks runnable at this instant; this
    process's own runnable threads are subtracted, and the median of a few samples smooths
    the noise. It reacts at once, where the load average takes about a minute to follow a
    new job.

    Parameters
    ----------
    own : float
        Cores this process itself used lately (CPU seconds per second), subtracted from the
        load average, which counts them too.
    samples : int
    interval : float
        Seconds between samples.
    """
    try:
        text = Path("/proc/loadavg").read_text()
    except OSError:
        with contextlib.suppress(OSError, AttributeError):
            return max(0.0, float(os.getloadavg()[0]) - own)
        return 0.0
    load1 = max(0.0, float(text.split()[0]) - own)
    running = []
    for i in range(samples):
        if i:
            time.sleep(interval)
            text = Path("/proc/loadavg").read_text()
        running.append(max(0, int(text.split()[3].split("/")[0]) - _own_running()))
    running.sort()
    return max(load1, float(running[len(running) // 2]))


def env_threads() -> int | None:
    """``MOODSHIFT_THREADS`` as an int, None when unset or empty.

    Raises
    ------
    InputError
        When it is set to something other than a positive integer.
    """
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{ENV}={raw!r} is not a positive integer; set e.g. {ENV}=1 or unset it")
    return value


@dataclass
class ThreadPolicy:
    """The thread count chosen for this process, and why.

    Attributes
    ----------
    threads : int
        Threads each library may use.
    reason : str
        ``"override"``, ``"serve"``, ``"cores"`` (all available cores are free) or
        ``"load"`` (reduced because other processes keep cores busy).
    cores : int
        Cores available (affinity and quota).
    busy : float
        Cores other processes kept busy when it was decided.
    role : str
    """

    threads: int
    reason: str
    cores: int
    busy: float
    role: str
    _mark: tuple[float, float] = field(
        repr=False, default_factory=lambda: (time.monotonic(), time.process_time())
    )

    def as_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "reason": self.reason, "cores": self.cores,
                "busy": round(self.busy, 2), "role": self.role}  # fmt: skip

    def refresh(self) -> bool:
        """Decide again from the current load (no-op for an override); True if it changed."""
        if self.reason in ("override", "serve"):
            return False
        now = (time.monotonic(), time.process_time())
        wall = now[0] - self._mark[0]
        # What this process used since the last decision is in the load average too.
        own = (now[1] - self._mark[1]) / wall if wall > 0 else 0.0
        self._mark = now
        new = decide_threads(role=self.role, own=own)
        changed = new.threads != self.threads
        self.threads, self.reason, self.cores, self.busy = (new.threads, new.reason, new.cores,
                                                            new.busy)  # fmt: skip
        if changed:
            set_threads(self.threads)
        return changed


def decide_threads(
    *, role: str = "train", threads: int | None = None, own: float = 0.0
) -> ThreadPolicy:
    """Choose the thread count (see the module docstring for the rule).

    Parameters
    ----------
    role : {"train", "mine", "serve"}
    threads : int, optional
        Explicit count (a ``--threads`` option); beats ``MOODSHIFT_THREADS``.
    own : float
        Cores this process used lately (see :func:`busy_cores`).

    Returns
    -------
    ThreadPolicy

    Raises
    ------
    InputError
        Unknown role, ``threads < 1`` or a malformed ``MOODSHIFT_THREADS``.
    """
    if role not in ROLES:
        raise InputError(f"unknown thread role {role!r}; use one of {', '.join(ROLES)}")
    cores = available_cores()
    if threads is not None:
        if int(threads) < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        return ThreadPolicy(int(threads), "override", cores, 0.0, role)
    override = env_threads()
    if override is not None:
        return ThreadPolicy(override, "override", cores, 0.0, role)
    if role == "serve":
        return ThreadPolicy(1, "serve", cores, 0.0, role)
    busy = busy_cores(own=own)
    # Round the free share down: a thread that only gets part of a core stalls the others
    # at every barrier of a parallel region.
    free = max(1, min(cores, math.floor(cores - busy + 0.25)))
    return ThreadPolicy(free, "cores" if free == cores else "load", cores, busy, role)


def set_threads(n: int) -> None:
    """Give torch, the BLAS under numpy, numba and FAISS ``n`` threads each.

    torch's inter-op pool can only be sized before its first parallel work; later
    attempts are skipped silently (it matters little: moodshift runs no inter-op work).
    """
    import torch  # torch is heavy: load on use

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits  # optional: comes with scikit-learn

        threadpool_limits(limits=n)
    with contextlib.suppress(ImportError, ValueError):
        import numba  # numba is heavy: load on use

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    with contextlib.suppress(ImportError):
        import faiss  # faiss is heavy: load on use

        faiss.omp_set_num_threads(n)


def apply_thread_policy(*, role: str = "train", threads: int | None = None) -> ThreadPolicy:
    """Decide the thread count (:func:`decide_threads`) and set it in every library.

    Returns
    -------
    ThreadPolicy
        Keep it to :meth:`ThreadPolicy.refresh` between long steps.

    Raises
    ------
    InputError
        As :func:`decide_threads`.
    """
    policy = decide_threads(role=role, threads=threads)
    set_threads(policy.threads)
    return policy


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the count afterwards.

    The CPU self-join runs one single-threaded product per worker thread: the workers'
    selection scans then run beside the other workers' products.
    """
    import torch  # torch is heavy: load on use

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` FAISS (OpenMP) threads, restoring the count afterwards."""

    faiss = require_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` threads in torch, FAISS and the BLAS under numpy, restored after.

    The scoped form of :func:`set_threads` for code that measures as a server runs
    (one thread per library) without changing the caller's settings.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(n))
        stack.enter_context(faiss_threads(n))
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits  # optional: comes with scikit-learn

            stack.enter_context(threadpool_limits(limits=n))
        yield
