"""``moodshift bench``: what every heavy stage achieves on this machine, as one JSON.

    moodshift bench selfjoin --n 200000 --dim 512      # exact self-join vs the sgemm peak
    moodshift bench approx                             # IVF mining: speed-up and top-K recall
    moodshift bench train | embed | query | serve | request | mining | soak | transfer | all

Every sub-benchmark reports wall seconds, CPU seconds and the peak resident
memory of its stage (``peak_rss_mb``: the process's high-water mark, reset at
the start of the stage where Linux allows it). Benchmarks measure; they are not
tests, and on a machine shared with other work the wall-clock figures move with
the load (``machine.load_avg`` is recorded before and after). Figures per CPU
second (``*_per_cpu_s``) are less sensitive to that: they count only the cycles
this process actually got.

Definitions
-----------
sgemm peak
    Best of 3 runs of one large float32 product ``(8192 x d) @ (d x 8192)`` in torch
    (the BLAS the self-join uses: MKL on CPU, cuBLAS on GPU) with torch's thread
    count, measured just before and just after the join; the higher is used.
self-join GFLOP/s
    ``2 N^2 d / seconds``: every track's dot product with every track of every class
    (the class sizes sum to N), whatever the implementation skips.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moodshift._deps import require_faiss
from moodshift.bench.serve import run_request_bench, run_serve_bench
from moodshift.bench.soak import format_soak, run_soak
from moodshift.bench.transfer import run_transfer_bench, transfer_markdown
from moodshift.errors import InputError
from moodshift.retrieval.index import KINDS, FaissIndex, build_index, tuning_grid
from moodshift.synthetic import make_catalog
from moodshift.threads import available_cores, faiss_threads, torch_threads

QUERY_SIZES = (100_000, 1_000_000)
#: ``all`` measures the exact self-join at up to this many tracks (minutes, not tens of them).
ALL_SELFJOIN_MAX_N = 100_000
#: ``approx`` runs the per-query FAISS methods (HNSW, IndexIVFFlat) only up to this size:
#: above it they take many minutes on 2 cores (and lose to ``ivf`` anyway).
HNSW_MAX_N = 20_000
NOTE = (
    "Shared machine: wall-clock figures move with other users' load (see machine.load_avg); "
    "*_per_cpu_s figures count only the CPU time this process got."
)


# --------------------------------------------------------------------------- entry point
def run_bench(
    what: str = "selfjoin",
    *,
    n: int | None = None,
    dim: int | None = None,
    k: int = 100,
    classes: int = 4,
    seed: int = 0,
    query_sizes: Sequence[int] | None = None,
    train_n: int = 20_000,
    train_epochs: int = 3,
    embed_seconds: float = 30.0,
    approx_sample: int = 2048,
    mining_epochs: int = 60,
    query_kind: str = "auto",
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run one benchmark of :data:`BENCHMARKS` (or ``all``) and return its figures as JSON.

    Parameters
    ----------
    what : a name of :data:`BENCHMARKS`, or "all" (those with ``in_all``)
    n, dim, k, classes : int
        Self-join size: ``n`` synthetic tracks of ``dim`` dimensions in ``classes``
        moods, top-``k`` per class (``n`` and ``dim`` default to the benchmark's
        :attr:`Benchmark.defaults`, else 200,000 and 512).
    seed : int
    query_sizes : sequence of int, optional
        Catalogue sizes of the query-latency benchmark (default 10^5 and 10^6).
    train_n, train_epochs : int
        Synthetic catalogue size and epochs of the training-speed benchmark.
    embed_seconds : float
        Length of the synthetic track each embedder is timed on.
    approx_sample : int
        Query rows whose exact lists are computed to measure recall (and, when the full
        exact join was not run, to extrapolate its time).
    mining_epochs : int
        Epochs of each of the two training runs of ``mining`` (exact vs IVF proxy mining).
    query_kind : {"auto", "flat", "hnsw", "ivf"}
        Index of the query-latency benchmark (``auto``: what ``moodshift index`` builds).
    progress : bool
        Progress bars on stderr.
    **options
        The options of one benchmark (``moodshift bench``'s flags), e.g. ``clients``,
        ``duration_s``, ``requests``, ``workdir``, ``workers`` (serve, request, soak),
        ``audio_dir``, ``files``, ``embedders``, ``render`` (embed).

    Returns
    -------
    dict
        ``machine``, ``note`` and one entry per sub-benchmark (each with ``wall_s``,
        ``cpu_s``, ``peak_rss_mb``; a skipped one has ``skipped`` and the reason).

    Raises
    ------
    InputError
        For an unknown benchmark, a size below 1, or ``n`` too small for ``classes``.
    """
    if what not in WHATS:
        raise InputError(f"unknown benchmark {what!r}; use one of {', '.join(WHATS)}")
    todo = ALL if what == "all" else (what,)
    sizes = {name: (BENCHMARKS[name].defaults.get("n", 200_000) if n is None else n,
                    BENCHMARKS[name].defaults.get("dim", 512) if dim is None else dim)
             for name in todo}  # fmt: skip
    checked = [("k", k), ("classes", classes)]
    checked += [pair for size, d in sizes.values() for pair in (("n", size), ("dim", d))]
    for name, v in checked:
        if v < 1:
            raise InputError(f"--{name} must be >= 1, got {v}")
    smallest = min(size[0] for size in sizes.values())
    if smallest < 2 * classes:
        raise InputError(f"--n {smallest} is too small for {classes} classes; use at least "
                         f"{2 * classes}")  # fmt: skip
    first = sizes[todo[0]]
    result: dict[str, Any] = {
        "what": what,
        "params": {"n": first[0], "dim": first[1], "k": k, "classes": classes, "seed": seed},
        "machine": machine_info(),
        "note": NOTE,
    }
    data: dict[str, Any] = {}
    for name in todo:
        bench = BENCHMARKS[name]
        size, d = sizes[name]
        # Under "all" the full exact join is measured at up to ALL_SELFJOIN_MAX_N tracks (its
        # cost grows as N^2; GFLOP/s and the ratio to peak barely depend on N at this size).
        if what == "all" and name == "selfjoin":
            size = min(size, ALL_SELFJOIN_MAX_N)
        result[name] = bench.run(n=size, dim=d, k=k, classes=classes, seed=seed, data=data,
                                 query_sizes=tuple(query_sizes or QUERY_SIZES),
                                 train_n=train_n, train_epochs=train_epochs,
                                 embed_seconds=embed_seconds, approx_sample=approx_sample,
                                 mining_epochs=mining_epochs, query_kind=query_kind,
                                 progress=progress, **options)  # fmt: skip
    result["machine"]["load_avg_after"] = load_avg()
    return result


# --------------------------------------------------------------------------- measuring
def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, threads, BLAS and environment that the figures depend on.

    Returns
    -------
    dict
        JSON-ready description of this machine and process.
    """
    import torch  # heavy (seconds to import): only the benchmarks that need it

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OPENBLAS", "OMP_", "MKL_", "KMP_", "GOTO"))}  # fmt: skip
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "env": env,
        "load_avg": load_avg(),
    }
    from moodshift.mining.neighbors import numba_available  # pulls in torch: load on use

    info["numba"] = numba_available()
    return info


def _rss_mb() -> float | None:
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets the VmHWM high-water mark (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def stage(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Time a stage (wall, CPU) and record the process's peak RSS during it.

    Fills ``wall_s``, ``cpu_s``, ``rss_start_mb``, ``peak_rss_mb`` and
    ``peak_rss_scope`` ("stage" when the high-water mark could be reset, else
    "process": the peak since the process started).

    Parameters
    ----------
    record : dict
        Filled in place when the stage ends (also when it raises).

    Yields
    ------
    dict
        ``record``.
    """
    reset = _reset_peak_rss()
    rss0 = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        record["cpu_s"] = round(time.process_time() - c0, 3)
        record["rss_start_mb"] = None if rss0 is None else round(rss0, 1)
        record["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        record["peak_rss_scope"] = "stage" if reset else "process"


def sgemm_peak(*, dim: int, size: int = 8192, reps: int = 3, device: str = "cpu"
               ) -> dict[str, float]:  # fmt: skip
    """GFLOP/s of one large float32 product ``(size x dim) @ (dim x size)``, best of ``reps``.

    Parameters
    ----------
    dim : int
        Inner dimension (the embedding dimension of the join it is compared with).
    size : int
        Rows of both operands.
    reps : int
        Timed repetitions after one warm-up.
    device : str
        ``cpu`` or ``cuda``.

    Returns
    -------
    dict
        ``gflops`` (wall clock) and ``gflops_per_cpu_s`` (per process CPU second).
    """
    import torch  # heavy (seconds to import): only the benchmarks that need it

    dev = torch.device(device)
    a = torch.randn(size, dim, device=dev)
    b = torch.randn(size, dim, device=dev)
    out = torch.empty(size, size, device=dev)
    flops = 2.0 * size * size * dim
    torch.mm(a, b.T, out=out)
    best_wall, best_cpu = math.inf, math.inf
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b.T, out=out)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {
        "gflops": round(flops / best_wall / 1e9, 1),
        "gflops_per_cpu_s": round(flops / max(best_cpu, 1e-9) / 1e9, 1),
    }


# --------------------------------------------------------------------------- data
def synthetic_vectors(
    *, n: int, dim: int, classes: int, seed: int = 0, latent: int = 32, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors with mood labels, fast at any size.

    The generative model of :func:`moodshift.synthetic.make_catalog` (genre, mood,
    instruments, artist and noise through a random two-layer map), vectorised and
    generated in chunks so 10^6 x 512 needs no more than the result itself.

    Parameters
    ----------
    n, dim : int
        Output shape (n, dim).
    classes : int
        Mood classes.
    seed : int
    latent : int
        Width of the latent space.
    chunk : int
        Rows generated at a time.

    Returns
    -------
    x : np.ndarray, shape (n, dim), float32, unit rows
    y : np.ndarray, shape (n,), int64, mood class in ``[0, classes)``
    """
    rng = np.random.default_rng(seed)
    n_genres, n_inst = 6, 8
    n_artists = max(4, n // 25)

    def unit(*shape: int) -> np.ndarray:
        v = rng.standard_normal(shape)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    genre_vec, mood_vec = unit(n_genres, latent), unit(classes, latent)
    inst_vec, artist_vec = unit(n_inst, latent), unit(n_artists, latent)
    w1 = rng.standard_normal((latent, 2 * latent)) / np.sqrt(latent)
    w2 = (rng.standard_normal((2 * latent, dim)) / np.sqrt(2 * latent)).astype(np.float32)
    artist_genre = rng.integers(n_genres, size=n_artists)
    x = np.empty((n, dim), dtype=np.float32)
    y = rng.integers(classes, size=n)
    for s in range(0, n, chunk):
        m = min(n, s + chunk) - s
        artist = rng.integers(n_artists, size=m)
        genre = np.where(rng.random(m) < 0.8, artist_genre[artist], rng.integers(n_genres, size=m))
        inst = (rng.random((m, n_inst)) < 2 / n_inst).astype(np.float64)
        inst[np.arange(m), rng.integers(n_inst, size=m)] = 1.0
        z = (1.5 * genre_vec[genre] + mood_vec[y[s : s + m]] + 0.6 * inst @ inst_vec
             + 0.5 * artist_vec[artist] + rng.standard_normal((m, latent)) * 2.0 / np.sqrt(latent)
             + rng.standard_normal((m, latent)) * 0.5 / np.sqrt(latent))  # fmt: skip
        h = np.maximum(z @ w1, 0).astype(np.float32) @ w2
        h += 0.1 * rng.standard_normal(h.shape, dtype=np.float32)
        np.tanh(h, out=h)
        h /= np.linalg.norm(h, axis=1, keepdims=True)
        x[s : s + m] = h
    return x, y.astype(np.int64)


def _data(data: dict[str, Any], *, n: int, dim: int, classes: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    key = ("vectors", n, dim, classes, seed)
    if key not in data:
        data.clear()  # one data set at a time: 10^6 x 512 floats is 2 GB
        data[key] = synthetic_vectors(n=n, dim=dim, classes=classes, seed=seed)
    return data[key]


# --------------------------------------------------------------------------- self-join
def _compile_join(x: np.ndarray, y: np.ndarray, *, k: int, classes: int) -> None:
    """Compile (or load from numba's cache) the exact join's kernel outside a timed region.

    A small join would take torch's path (below ``NUMBA_MIN_WORK``), so the numba
    backend is asked for by name on CPU.
    """
    import torch  # heavy (seconds to import): only the benchmarks that need it

    from moodshift.mining.neighbors import class_topk  # pulls in torch: load on use

    backend = "auto" if torch.cuda.is_available() else "numba"
    class_topk(embeddings=x[:4096], labels=y[:4096], k=min(k, 8), n_classes=classes,
               normalized=True, backend=backend)  # fmt: skip


def _bench_selfjoin(*, n: int, dim: int, k: int, classes: int, seed: int, data: dict[str, Any],
                    progress: bool, **_: Any) -> dict[str, Any]:  # fmt: skip
    import torch  # heavy (seconds to import): only the benchmarks that need it

    from moodshift.mining.neighbors import class_topk  # pulls in torch: load on use

    x, y = _data(data, n=n, dim=dim, classes=classes, seed=seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {"n": n, "dim": dim, "k": k, "classes": classes, "device": dev}
    _compile_join(x, y, k=k, classes=classes)
    size = 8192 if n >= 8192 else 2048  # tiny test runs need no 256 MB product
    peak_before = sgemm_peak(dim=dim, device=dev, size=size)
    rec: dict[str, Any] = {}
    with stage(rec):
        nb = class_topk(embeddings=x, labels=y, k=k, n_classes=classes, normalized=True,
                        method="exact", progress=progress)  # fmt: skip
    peak_after = sgemm_peak(dim=dim, device=dev, size=size)
    flops = 2.0 * n * n * dim
    gflops = flops / rec["wall_s"] / 1e9
    gflops_cpu = flops / max(rec["cpu_s"], 1e-9) / 1e9
    peak = max(peak_before["gflops"], peak_after["gflops"])
    peak_cpu = max(peak_before["gflops_per_cpu_s"], peak_after["gflops_per_cpu_s"])
    out.update(rec)
    out.update(
        flops_definition="2 * n^2 * dim (every query against every candidate of every class)",
        backend=nb.info.get("backend"),
        sgemm_peak_gflops=peak,
        sgemm_peak_before=peak_before,
        sgemm_peak_after=peak_after,
        selfjoin_gflops=round(gflops, 1),
        ratio_to_peak=round(gflops / peak, 3),
        selfjoin_gflops_per_cpu_s=round(gflops_cpu, 1),
        ratio_to_peak_per_cpu_s=round(gflops_cpu / peak_cpu, 3),
        goal="ratio_to_peak >= 0.8",
    )
    data["exact_seconds"] = (n, dim, k, classes, rec["wall_s"])
    return out


# --------------------------------------------------------------------------- approximate
def exact_rows_topk(
    x: np.ndarray, y: np.ndarray, rows: np.ndarray, *, k: int, classes: int, threads: int
) -> tuple[np.ndarray, float]:
    """Exact per-class top-k lists of the given rows only, and the seconds it took.

    Parameters
    ----------
    x : np.ndarray, shape (n, d)
        Unit-norm vectors.
    y : np.ndarray of int, shape (n,)
        Class of each row.
    rows : np.ndarray of int, shape (r,)
        Query rows.
    k : int
    classes : int
    threads : int
        torch threads to use.

    Returns
    -------
    ids : np.ndarray, shape (len(rows), classes, k), int64 (``-1`` padded)
    seconds : float
    """
    from moodshift.mining.neighbors import topk_against  # pulls in torch: load on use

    ids = np.full((len(rows), classes, k), -1, dtype=np.int64)
    members = [np.flatnonzero(y == c) for c in range(classes)]
    pieces = np.array_split(np.arange(len(rows)), max(1, threads))

    def work(part: np.ndarray) -> None:
        q = x[rows[part]]
        for c in range(classes):
            mem = members[c]
            if mem.size == 0:
                continue
            pos = np.searchsorted(mem, rows[part])
            pos = np.where((pos < mem.size) & (mem[np.minimum(pos, mem.size - 1)] == rows[part]),
                           pos, -1)  # fmt: skip
            got, _ = topk_against(queries=q, candidates=x[mem], candidate_ids=mem, k=k,
                                  self_pos=pos)  # fmt: skip
            ids[part, c, : got.shape[1]] = got

    t0 = time.perf_counter()
    with torch_threads(1), ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(work, [p for p in pieces if p.size]))
    return ids, time.perf_counter() - t0


def _bench_approx(*, n: int, dim: int, k: int, classes: int, seed: int, data: dict[str, Any],
                  approx_sample: int, progress: bool, **_: Any) -> dict[str, Any]:  # fmt: skip
    import torch  # heavy (seconds to import): only the benchmarks that need it

    from moodshift.mining.neighbors import (  # pulls in torch: load on use
        EXACT_MAX_CLASS,
        class_topk,
        default_nprobe,
        ivf_nlist,
        list_recall,
    )

    x, y = _data(data, n=n, dim=dim, classes=classes, seed=seed)
    threads = torch.get_num_threads()
    out: dict[str, Any] = {"n": n, "dim": dim, "k": k, "classes": classes,
                           "exact_max_class_auto": EXACT_MAX_CLASS, "sizes": []}  # fmt: skip
    # Sizes from n/16 up to n: where IVF starts to pay off (the crossover) and how it scales.
    sizes = sorted({max(2 * classes + 2, n // f) for f in (16, 4, 2, 1)})
    _compile_join(x, y, k=k, classes=classes)
    for size in sizes:
        xs, ys = x[:size], y[:size]
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(size, size=min(approx_sample, size), replace=False))
        kk = min(k, int(np.bincount(ys, minlength=classes).max()) - 1)
        # Reference lists of the sampled rows (for recall), by per-row exact search.
        exact_ids, _ = exact_rows_topk(xs, ys, rows, k=kk, classes=classes, threads=threads)
        measured = data.get("exact_seconds")
        if measured is not None and tuple(measured[:4]) == (size, dim, k, classes):
            exact_s, how = measured[4], "measured (selfjoin benchmark)"
        else:
            # The baseline is the exact join that `--mining exact` runs (symmetric, blocked),
            # timed here: an estimate from per-row searches would flatter the speed-up.
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                class_topk(embeddings=xs, labels=ys, k=k, n_classes=classes, normalized=True,
                           method="exact", progress=progress)  # fmt: skip
            exact_s, how = time.perf_counter() - t0, "measured (the exact join, this run)"
        entry: dict[str, Any] = {"n": size, "exact_seconds": round(exact_s, 6), "exact_how": how,
                                 "recall_rows": len(rows), "runs": []}  # fmt: skip
        runs = (("ivf", {}), ("ivf", {"nprobe_scale": 2}), ("projected", {}), ("ivf-faiss", {}),
                ("hnsw", {}))  # fmt: skip
        for kind, extra in runs:
            if kind in ("hnsw", "ivf-faiss") and size > HNSW_MAX_N:
                continue  # per-query FAISS searches take many minutes at this size
            rec: dict[str, Any] = {"method": kind}
            nprobe = None
            if extra:
                largest = int(np.bincount(ys, minlength=classes).max())
                nprobe = min(ivf_nlist(largest), 2 * default_nprobe(ivf_nlist(largest)))
                rec["nprobe"] = nprobe
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with stage(rec):
                    nb = class_topk(embeddings=xs, labels=ys, k=k, n_classes=classes,
                                    normalized=True, method=kind, nprobe=nprobe, seed=seed,
                                    progress=progress)  # fmt: skip
            rec["recall"] = round(list_recall(nb.indices[rows][:, :, :kk], exact_ids), 4)
            # From the figures as reported: at tiny sizes exact_s's rounding moved it by 2 %.
            rec["speedup"] = round(entry["exact_seconds"] / max(rec["wall_s"], 1e-3), 2)
            rec["params"] = (
                {"dims": nb.info["projected_dims"], "energy": nb.info["projected_energy"]}
                if kind == "projected"
                else {str(c): v for c, v in (nb.info.get("approx") or {}).items()}
            )
            entry["runs"].append(rec)
        out["sizes"].append(entry)
    out["goal"] = "speedup >= 10 at recall >= 0.95 at large N"
    return out


# --------------------------------------------------------------------------- training
_SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """Run ``count`` processes that each keep one core busy, and stop them afterwards.

    Yields
    ------
    list of int
        Their process ids.
    """

    procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL)
             for _ in range(count)]  # fmt: skip
    try:
        time.sleep(0.5)  # let them reach the scheduler's run queue before measuring
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _train_once(cat: Any, cfg: Any, *, progress: bool) -> dict[str, Any]:
    from moodshift.training.train import train  # pulls in torch: load on use

    rec: dict[str, Any] = {"load_avg_before": load_avg()}
    with stage(rec):
        model = train(cat, config=cfg, progress=progress)
    speeds = [float(e["samples_per_s"]) for e in model.log]
    # The first epoch includes one-off warm-up (allocator, kernels); report both.
    rec["samples_per_s_per_epoch"] = [round(v) for v in speeds]
    rec["samples_per_s"] = round(float(np.median(speeds[1:] or speeds)))
    meta = model.config.get("training", {})
    # Training re-decides its threads every epoch (the load may change), so the count
    # chosen at the start need not be the one the timed epochs ran with.
    per_epoch = [int(e["threads"]) for e in model.log]
    rec["threads_per_epoch"] = per_epoch
    timed = per_epoch[1:] or per_epoch
    rec["threads"] = max(set(timed), key=timed.count)
    rec["self_join_seconds"] = meta.get("self_join_seconds")
    rec["device"] = meta.get("device")
    rec["params"] = sum(p.numel() for p in model.net.parameters())
    return rec


def _bench_train(*, dim: int, seed: int, train_n: int, train_epochs: int, progress: bool,
                 **_: Any) -> dict[str, Any]:  # fmt: skip
    """Training speed measured twice in one run: quiet, then beside one busy process per core.

    "Quiet" is whatever the machine's other users leave (``load_avg_before``); the contended
    run adds one spinning process per available core, started and stopped here. Both runs
    use the thread policy (:mod:`moodshift.threads`) exactly as ``moodshift train`` does.
    """
    from moodshift.training.train import TrainConfig  # pulls in torch: load on use

    cat = make_catalog(n=train_n, dim=dim, seed=seed)
    cfg = TrainConfig(epochs=train_epochs, val_max_seeds=200, seed=seed, choose_strength=False)
    cores = available_cores()
    quiet = _train_once(cat, cfg, progress=progress)
    arch = cfg.architecture.sized(dim=dim, n_classes=int(cat.labels["mood"].nunique()))
    ceiling = matmul_ceiling(arch=arch, batch=cfg.batch_size, threads=int(quiet["threads"] or 1))
    with busy_processes(cores):
        contended = _train_once(cat, cfg, progress=progress)
    rec: dict[str, Any] = {"n_tracks": train_n, "dim": dim, "epochs": train_epochs,
                           "batch_size": cfg.batch_size, "busy_processes": cores}  # fmt: skip
    rec.update({key: quiet[key] for key in STAGE_KEYS_TRAIN})
    rec["samples_per_s_contended"] = contended["samples_per_s"]
    rec["contended_ratio"] = round(contended["samples_per_s"] / max(quiet["samples_per_s"], 1), 3)
    rec["quiet"] = quiet
    rec["contended"] = contended
    rec["matmul_ceiling"] = ceiling
    rec["share_of_ceiling"] = round(quiet["samples_per_s"] / ceiling["samples_per_s"], 3)
    rec["goal"] = "samples_per_s >= 20000 on 2 CPU cores; contended_ratio >= 0.3"
    return rec


def matmul_ceiling(*, arch: Any, batch: int, threads: int, reps: int = 10) -> dict[str, Any]:
    """The samples/s a training step would reach if it were nothing but its matrix products.

    Each linear layer of the network does one product forward and two backward (the
    gradients of its weight and of its input; the first layers' inputs need none), at
    the training batch size and thread count, on this CPU, timed best of three.
    Training can approach this figure, not pass it: when it is below a goal, the goal
    needs other hardware (or a smaller network), not other code.

    Parameters
    ----------
    arch : Architecture
        The network (``TrainConfig.architecture``).
    batch : int
        Training batch size.
    threads : int
        torch threads, as training used.
    reps : int
        Steps per timing.

    Returns
    -------
    dict
        ``flops_per_sample`` (forward and backward), ``matmul_gflops`` (the rate of these
        products here), ``samples_per_s`` (the ceiling) and ``threads``.
    """
    import torch  # heavy (seconds to import): only the benchmarks that need it
    from torch import nn  # torch is heavy: load on use

    from moodshift.model.network import MoodTransformer  # pulls in torch: load on use

    net = MoodTransformer(arch)
    inputs = {id(net.embedding_branch[0]), id(net.class_branch[0])}
    gen = torch.Generator().manual_seed(0)
    ops = []
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach()
            a = torch.randn(batch, w.shape[1], generator=gen)
            g = torch.randn(batch, w.shape[0], generator=gen)
            ops.append((a, w, g, id(layer) not in inputs))
    flops = sum(2.0 * batch * w.numel() * (3 if grad_in else 2) for _, w, _, grad_in in ops)

    def step() -> None:
        for a, w, g, grad_in in ops:
            torch.mm(a, w.T)
            torch.mm(g.T, a)
            if grad_in:
                torch.mm(g, w)

    best = math.inf
    with torch_threads(threads), torch.no_grad():
        step()
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            best = min(best, (time.perf_counter() - t0) / reps)
    return {"flops_per_sample": round(flops / batch), "matmul_gflops": round(flops / best / 1e9, 2),
            "samples_per_s": round(batch / best), "threads": threads}  # fmt: skip


#: Figures of the quiet run copied to the top level of ``bench train``'s record.
STAGE_KEYS_TRAIN = ("wall_s", "cpu_s", "rss_start_mb", "peak_rss_mb", "peak_rss_scope",
                    "samples_per_s", "samples_per_s_per_epoch", "threads", "self_join_seconds",
                    "device", "params")  # fmt: skip


# --------------------------------------------------------------------------- embedding
def _bench_embed(*, seed: int, embed_seconds: float, progress: bool, files: int = 4,
                 render: bool = False, audio_dir: str | None = None,
                 embedders: Sequence[str] = ("features", "musicnn"), workers: int | None = None,
                 **_: Any) -> dict[str, Any]:  # fmt: skip
    # A library of compressed files through `embed --audio-dir` (moodshift.bench.embed): by
    # default four files of synthetic chords, which `moodshift bench embed` makes real music.
    from moodshift.bench.embed import (  # here: bench.embed takes stage() from this module
        bench_embed,  # here: bench.embed takes stage() from this module
    )

    return bench_embed(audio_dir=audio_dir, n_files=files, clip_seconds=embed_seconds,
                       embedders=list(embedders), workers=workers, seed=seed, render=render,
                       progress=progress)  # fmt: skip


# --------------------------------------------------------------------------- query latency
def _ivf_index(x: np.ndarray, *, seed: int) -> Any:
    """An IVF index over ``x`` with bounded training (a sample, 10 k-means rounds).

    ``moodshift.retrieval.index.build_index(kind="ivf")`` trains on up to 256 points per list
    with 25 rounds: about 10^14 flops at 10^6 x 512, too slow for a bounded benchmark
    on 2 cores. The search path measured is still ``moodshift.retrieval.index.FaissIndex``'s.
    """

    faiss = require_faiss()
    n, d = x.shape
    nlist = int(max(1, min(n // 39, round(4 * math.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False))
    index.train(x[rows])
    for s in range(0, n, 100_000):
        index.add(x[s : s + 100_000])
    wrapped = FaissIndex(index, kind="ivf", meta={"params": {"nlist": nlist}})
    wrapped.params = {"nlist": nlist}
    return wrapped


def _recall_at_10(index: Any, queries: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of the index's top 10 with the exact top 10, per query."""
    got, _ = index.search(queries, k=10)
    return float(np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(got, exact, strict=True)]))


def _bench_query(
    *,
    dim: int,
    classes: int,
    seed: int,
    data: dict[str, Any],
    query_sizes: Sequence[int],
    query_kind: str = "auto",
    progress: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """Single-query latency through the index a catalogue of each size gets.

    ``query_kind="auto"`` builds what ``moodshift index`` builds (exact up to
    :data:`moodshift.retrieval.index.EXACT_MAX_ROWS` tracks, HNSW above); ``"ivf"``
    an IVF index with bounded training (:func:`_ivf_index`). The search parameter
    (efSearch / nprobe) is the smallest whose recall@10 on 200 of the benchmark's
    queries reaches 0.95; the other 800 are timed one at a time with one thread.
    """
    from moodshift.retrieval.search import topk_cosine  # pulls in torch: load on use

    if query_kind not in KINDS:
        raise InputError(f"unknown index kind {query_kind!r}; use one of {', '.join(KINDS)}.")
    out: dict[str, Any] = {"dim": dim, "k": 10, "kind": query_kind, "sizes": []}
    for size in query_sizes:
        data.clear()
        rec: dict[str, Any] = {"n": int(size)}
        with stage(rec):
            x, _ = synthetic_vectors(n=int(size), dim=dim, classes=classes, seed=seed)
            t0 = time.perf_counter()
            if query_kind == "ivf":
                index = _ivf_index(x, seed=seed)
            else:
                index = build_index(x, kind=query_kind, seed=seed, progress=progress,
                                    recall_sample=200)  # fmt: skip
            rec["build_seconds"] = round(time.perf_counter() - t0, 2)
            rng = np.random.default_rng(seed + 1)
            n_q = 1000
            q = x[rng.choice(size, size=n_q)] + 0.05 * rng.standard_normal((n_q, dim)).astype(
                np.float32)  # fmt: skip
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            exact, _ = topk_cosine(q[:200], x, k=10)

            # Tune on the benchmark's own query sample (noisy copies of stored rows).
            if index.kind != "flat":
                key, values = tuning_grid(index)
                for v in values:
                    index.params[key] = v
                    if _recall_at_10(index, q[:200], exact) >= 0.95:
                        break
                rec[key] = int(index.params[key])
            rec["recall_at_10"] = round(_recall_at_10(index, q[:200], exact), 4)
            rec["index"] = index.kind
            lat = []
            # Timed as a server answers: one thread per process (the thread policy's
            # "serve" role), so the figure does not depend on idle cores.
            with faiss_threads(1):
                for i in range(200, n_q):
                    t1 = time.perf_counter()
                    index.search(q[i : i + 1], k=10)
                    lat.append(time.perf_counter() - t1)
            rec["search_threads"] = 1
            lat_ms = np.array(lat) * 1e3
            rec["queries"] = len(lat)
            rec["p50_ms"] = round(float(np.percentile(lat_ms, 50)), 3)
            rec["p99_ms"] = round(float(np.percentile(lat_ms, 99)), 3)
            del x, index
        out["sizes"].append(rec)
    out["goal"] = "p99 < 5 ms at 10^6 tracks on CPU"
    return out


# --------------------------------------------------------------------------- serving
def _bench_serve(*, n: int, dim: int, seed: int, query_kind: str, progress: bool,
                 clients: Sequence[int] | None = None, requests: int = 3000,
                 duration_s: float | None = None, filter_fraction: float = 0.2,
                 load_client: str = "raw", workers: int | None = None,
                 workdir: str | None = None, **_: Any) -> dict[str, Any]:  # fmt: skip
    rec: dict[str, Any] = {}
    with stage(rec):
        figures = run_serve_bench(
            n=n, dim=dim, seed=seed, workers=workers or 1, workdir=workdir,
            clients=clients or (1, 8, 32), requests=requests, duration_s=duration_s or 15.0,
            kind=query_kind, client=load_client, filter_fraction=filter_fraction,
            progress=progress,
        )  # fmt: skip
    return figures | rec


def _bench_request(*, n: int, dim: int, seed: int, query_kind: str, progress: bool,
                   filter_fraction: float = 0.2, workdir: str | None = None,
                   **_: Any) -> dict[str, Any]:  # fmt: skip
    return run_request_bench(n=n, dim=dim, seed=seed, kind=query_kind, workdir=workdir,
                             filter_fraction=filter_fraction, progress=progress)  # fmt: skip


def _bench_soak(*, n: int, dim: int, seed: int, clients: Sequence[int] | None = None,
                duration_s: float | None = None, workdir: str | None = None,
                progress: bool, **_: Any) -> dict[str, Any]:  # fmt: skip

    counts = list(clients or (32,))
    if len(counts) != 1:
        raise InputError(f"bench soak runs one client count; got --clients {counts}")
    return run_soak(n=n, dim=dim, clients=counts[0], duration_s=duration_s or 60.0, seed=seed,
                    workdir=workdir, progress=progress)  # fmt: skip


# --------------------------------------------------------------------------- mining effect
def _bench_mining(*, dim: int, seed: int, train_n: int, mining_epochs: int, progress: bool,
                  **_: Any) -> dict[str, Any]:  # fmt: skip
    """Train with exact and with approximate (IVF) proxy mining; compare test metrics."""
    from moodshift.evaluation.evaluate import evaluate_catalog  # pulls in torch: load on use
    from moodshift.training.train import (  # pulls in torch: load on use
        TrainConfig,
        train,
    )

    cat = make_catalog(n=train_n, dim=dim, seed=seed, interaction=True)
    out: dict[str, Any] = {"n_tracks": train_n, "dim": dim, "epochs": mining_epochs, "runs": {}}
    for mining in ("exact", "ivf"):
        cfg = TrainConfig(epochs=mining_epochs, seed=seed, mining=mining, val_max_seeds=1000)
        rec: dict[str, Any] = {}
        with stage(rec):
            model = train(cat, config=cfg, progress=progress)
        report = evaluate_catalog(cat, model=model, part="test", seed=seed, max_seeds=2000)
        rec["self_join_seconds"] = model.config["training"]["self_join_seconds"]
        rec["best_epoch"] = model.config["training"].get("best_epoch")
        rec["test"] = {key: round(float(v), 4) for key, v in report.methods["model"].items()
                       if key.endswith("@1")}  # fmt: skip
        out["runs"][mining] = rec
    a, b = out["runs"]["exact"]["test"], out["runs"]["ivf"]["test"]
    out["delta"] = {key: round(b[key] - a[key], 4) for key in a if key in b}
    out["goal"] = "|delta mood_p@1| <= 0.01 and |delta genre_p@1| <= 0.01"
    return out


# --------------------------------------------------------------------------- mood transfer
def _bench_transfer(*, n: int, seed: int, progress: bool, workdir: str | None = None,
                    workers: int | None = None, n_cross: int = 240,
                    transfer_epochs: int | None = None, floor_model: str | None = None,
                    **_: Any) -> dict[str, Any]:  # fmt: skip
    """Train on one part of the built-in corpus, measure on parts it never saw."""
    return run_transfer_bench(workdir=workdir or "bench_out/transfer", n_train=n,
                              n_cross=n_cross, seed=seed, workers=workers,
                              epochs=transfer_epochs, floor_model=floor_model,
                              progress=progress)  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of ``moodshift bench``: the CLI's list and ``all`` read these.

    Attributes
    ----------
    run : callable
        Keyword options (:func:`run_bench`'s) -> JSON-ready figures; it reads the
        options it needs and ignores the rest.
    about : str
        One line for ``moodshift bench --help``.
    in_all : bool
        Whether ``moodshift bench all`` runs it.
    defaults : mapping
        ``n`` and ``dim`` when none are given (else 200,000 and 512).
    report : callable, optional
        Figures -> the text the CLI prints instead of the JSON.
    """

    run: Callable[..., dict[str, Any]]
    about: str
    in_all: bool = True
    defaults: Mapping[str, int] = field(default_factory=dict)
    report: Callable[[dict[str, Any]], str] | None = None


#: Every benchmark, by the name ``moodshift bench NAME`` takes.
BENCHMARKS: dict[str, Benchmark] = {
    "selfjoin": Benchmark(_bench_selfjoin, "the exact self-join against the sgemm peak"),
    "approx": Benchmark(_bench_approx, "approximate mining: speed-up and top-K recall"),
    "train": Benchmark(_bench_train, "training speed and the network's matmul ceiling"),
    "embed": Benchmark(_bench_embed, "embedding a library of compressed files"),
    "query": Benchmark(_bench_query, "query latency of the index at 10^5 and 10^6 tracks"),
    "serve": Benchmark(_bench_serve, "POST /query latency and throughput of a real server",
                       defaults={"n": 100_000, "dim": 256}),
    "request": Benchmark(_bench_request, "moodshift query's answer time against the server's",
                         in_all=False, defaults={"n": 100_000, "dim": 256}),
    "mining": Benchmark(_bench_mining, "exact vs approximate proxy mining, trained to the end",
                        in_all=False),
    "soak": Benchmark(_bench_soak, "a mixed load against a real server for a while",
                      in_all=False, defaults={"n": 5000, "dim": 64}, report=format_soak),
    "transfer": Benchmark(_bench_transfer, "mood accuracy and P@1 on a held-out soundfont, "
                          "genres, tunes and arranger (renders and trains: run it alone)",
                          in_all=False, defaults={"n": 320}, report=transfer_markdown),
}  # fmt: skip
#: The names ``run_bench`` takes: every benchmark, and ``all``.
WHATS = (*BENCHMARKS, "all")
#: What ``all`` runs (``mining`` trains two models to convergence: run it alone).
ALL = tuple(name for name, b in BENCHMARKS.items() if b.in_all)
