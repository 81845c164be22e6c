"""Ray engine (``--engine ray``): embedding extraction and the self-join on a Ray cluster.

* :func:`ray_embed_files` runs embedding extraction as Ray Data batch inference:
  a dataset of file paths, ``map_batches`` over a pool of actors that each hold
  one embedder (loaded once per actor), results gathered in input order. Same
  output as :func:`moodshift.audio.embedders.embed_files`, including standardisation.
* :func:`ray_class_topk` runs the exact per-class self-join as Ray tasks: one task
  per (query block, catalogue shard of one class), each computing a partial top-K
  with :func:`moodshift.mining.neighbors.topk_against`; the driver merges the partial
  lists (:func:`moodshift.mining.neighbors.merge_partial_topk`). The unit-norm matrix
  is put in Ray's object store once and read zero-copy by every task.

By default a local Ray is started with ``ray.init(num_cpus=2)`` and shut down
afterwards; pass ``address`` (``"auto"`` or ``"ray://host:10001"``) to use an
existing cluster, which is left running. Ray is an optional dependency:
``pip install 'moodshift[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from moodshift.errors import DependencyError, InputError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
#: Workers of the local Ray started when no address is given.
DEFAULT_LOCAL_CPUS = 2


def _ray() -> Any:
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
    ray = _ray()
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


# --------------------------------------------------------------------------- self-join
def _join_task(
    xs: np.ndarray,
    ids: np.ndarray,
    r0: int,
    r1: int,
    a: int,
    b: int,
    class_start: int,
    class_stop: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Partial top-k of queries ``xs[r0:r1]`` against candidates ``xs[a:b]`` (one class)."""
    from moodshift.mining.neighbors import topk_against
    from moodshift.threads import set_threads

    set_threads(1)  # Ray gives each task one CPU (num_cpus=1)
    rows = np.arange(r0, r1, dtype=np.int64)
    member = (rows >= class_start) & (rows < class_stop)
    self_pos = np.where(member & (rows >= a) & (rows < b), rows - a, -1)
    return topk_against(queries=xs[r0:r1], candidates=xs[a:b], candidate_ids=ids[a:b], k=k,
                        self_pos=self_pos)  # fmt: skip


def ray_class_topk(
    *,
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 100,
    n_classes: int | None = None,
    normalized: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    block: int = 2048,
    shard: int = 65_536,
    seed: int = 0,
    progress: bool = False,
) -> Any:
    """Exact per-class top-K self-join on Ray (same result as ``class_topk(method="exact")``).

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d)
    labels : np.ndarray, shape (n,), int
    k, n_classes, normalized, seed
        As in :func:`moodshift.mining.neighbors.class_topk`.
    address, num_cpus
        See :func:`ray_session`.
    block : int
        Queries per task.
    shard : int
        Candidates per task: a class larger than this is split into shards whose partial
        lists are merged exactly.
    progress : bool
        Show a tqdm bar over tasks.

    Returns
    -------
    ClassNeighbors
    """
    import time

    from tqdm.auto import tqdm

    from moodshift.mining.neighbors import (
        ClassNeighbors,
        _make_layout,
        _Output,
        check_join_inputs,
        merge_partial_topk,
    )

    if block < 1 or shard < 1:
        raise InputError(f"block and shard must be >= 1, got {block}, {shard}")
    t0 = time.perf_counter()
    x, y, m, k = check_join_inputs(embeddings=embeddings, labels=labels, k=k,
                                   n_classes=n_classes, stacklevel=3)  # fmt: skip
    lay = _make_layout(x, y, m=m, k=k, normalized=normalized, seed=seed)
    n = lay.xs.shape[0]
    out = _Output(n, m, k)
    with ray_session(address=address, num_cpus=num_cpus) as ray:
        task = ray.remote(num_cpus=1)(_join_task)
        xs_ref, ids_ref = ray.put(lay.xs), ray.put(lay.ids)
        pending: dict[Any, tuple[int, int, int]] = {}
        parts: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        expected: dict[tuple[int, int], int] = {}
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            for c in range(m):
                s, e = lay.members(c)
                if e == s:
                    continue
                kc = int(lay.ks[c])
                shards = [(a, min(e, a + shard)) for a in range(s, e, shard)]
                expected[(r0, c)] = len(shards)
                for a, b in shards:
                    ref = task.remote(xs_ref, ids_ref, r0, r1, a, b, s, e, kc)
                    pending[ref] = (r0, r1, c)
        bar = tqdm(total=len(pending), desc="self-join (ray)", unit="task", disable=not progress,
                   leave=False)  # fmt: skip
        waiting = list(pending)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=min(len(waiting), 16))
            for ref in done:
                r0, r1, c = pending.pop(ref)
                key = (r0, c)
                parts.setdefault(key, []).append(ray.get(ref))
                if len(parts[key]) == expected[key]:
                    ids, scores = merge_partial_topk(parts.pop(key), k=int(lay.ks[c]))
                    out.write(lay.ids[r0:r1], c, ids, scores)
                bar.update(1)
        bar.close()
    info = {"method": "exact", "backend": "ray", "k": k, "seconds": time.perf_counter() - t0}
    return ClassNeighbors(indices=out.indices, scores=out.scores, counts=out.counts, info=info)


# --------------------------------------------------------------------------- embedding
class _EmbedBatch:
    """Ray Data actor: one embedder per actor, a batch of paths per call."""

    def __init__(self, blob: bytes, cache_dir: str | None, max_duration_s: float | None) -> None:
        from moodshift.threads import set_threads

        set_threads(1)  # one CPU per actor; the pool's size is the parallelism
        self.embedder = pickle.loads(blob)
        self.cache_dir = cache_dir
        self.max_duration_s = max_duration_s

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from moodshift.audio.embedders import embed_files

        paths = [str(p) for p in batch["path"]]
        run = embed_files(paths, embedder=self.embedder, cache_dir=self.cache_dir,
                          max_duration_s=self.max_duration_s, progress=False,
                          standardize=False)  # fmt: skip
        dim = int(self.embedder.dim)
        vec = np.zeros((len(paths), dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        vec[run.ok_indices] = run.embeddings
        ok[run.ok_indices] = True
        reasons = np.array([""] * len(paths), dtype=object)
        by_path = dict(run.failures)
        for j, p in enumerate(paths):
            if not ok[j]:
                reasons[j] = by_path.get(p, "unknown error")
        # The batch's cache-hit count on its first row: sums right however Ray re-chunks rows.
        cached = np.zeros(len(paths), dtype=np.int64)
        cached[:1] = run.n_cached
        return {"i": np.asarray(batch["i"], dtype=np.int64), "vec": vec, "ok": ok,
                "reason": reasons, "cached": cached}  # fmt: skip


def ray_embed_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    embedder: Any,
    cache_dir: str | os.PathLike[str] | None = None,
    max_duration_s: float = 1200.0,
    standardize: bool = True,
    standardizer: Any = None,
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> Any:
    """Embed audio files with Ray Data batch inference (same result as ``embed_files``).

    Parameters
    ----------
    paths : sequence of str or PathLike
    embedder : Embedder or str
        An embedder or a registered name. It is resolved here and shipped to the
        workers pickled, so embedders registered only in this process work too.
    cache_dir, max_duration_s, standardize, standardizer
        As in :func:`moodshift.audio.embedders.embed_files`.
    address, num_cpus
        See :func:`ray_session`.
    workers : int, optional
        Embedding actors (default: the cluster's CPUs).
    batch_size : int
        Files per batch handed to one actor call.
    progress : bool
        Ray Data's progress bars.

    Returns
    -------
    EmbeddingRun
        ``embeddings`` in input order of the files that worked, ``ok_indices``,
        ``failures`` (path, reason), ``provenance``.
    """
    from moodshift.audio.embedders import Embedder, EmbeddingRun, fit_standardizer, get_embedder

    if isinstance(paths, str | bytes | os.PathLike):
        raise InputError("paths must be a list of files, not a single path; wrap it in a list")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise InputError(f"batch_size and workers must be >= 1, got {batch_size}, {workers}")
    emb = embedder if isinstance(embedder, Embedder) else get_embedder(embedder)
    str_paths = [os.fspath(p) for p in paths]
    n = len(str_paths)
    try:
        # cloudpickle (shipped with Ray) also sends classes defined in a script by value.
        from ray import cloudpickle

        blob = cloudpickle.dumps(emb)
    except Exception as exc:
        raise InputError(
            f"embedder {emb.name!r} cannot be pickled ({exc}), so it cannot be sent to Ray "
            "workers; use --engine local"
        ) from exc
    vectors = np.zeros((n, emb.dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    n_cached = 0
    if n:
        with ray_session(address=address, num_cpus=num_cpus) as ray:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = bool(progress)
            size = int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
            ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(str_paths)])
            ds = ds.map_batches(
                _EmbedBatch,
                fn_constructor_kwargs={"blob": blob, "max_duration_s": max_duration_s,
                                       "cache_dir": None if cache_dir is None
                                       else os.fspath(cache_dir)},
                batch_size=batch_size, batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=min(size, max(1, n))),
            )  # fmt: skip
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                idx = batch["i"]
                vectors[idx] = batch["vec"]
                ok[idx] = batch["ok"]
                for j, good, why in zip(idx, batch["ok"], batch["reason"], strict=True):
                    if not good:
                        reasons[int(j)] = str(why) or "unknown error"
                n_cached += int(batch["cached"].sum())
    good = np.flatnonzero(ok)
    x = vectors[good]
    provenance = dict(emb.provenance())
    if emb.needs_standardization:
        provenance["standardizer"] = None
    if emb.needs_standardization and standardize:
        if standardizer is None and good.size >= 2:
            standardizer = fit_standardizer(x)
        if standardizer is not None:
            x = standardizer.apply(x)
            provenance["standardizer"] = standardizer.to_dict()
        elif good.size:
            warnings.warn("only one file embedded: cannot fit a standardizer, returning raw "
                          "features", RuntimeWarning, stacklevel=2)  # fmt: skip
    return EmbeddingRun(
        embeddings=x.astype(np.float32),
        ok_indices=good.astype(np.int64),
        failures=[(str_paths[i], reasons[i]) for i in sorted(reasons)],
        provenance=provenance,
        n_cached=n_cached,
        n_total=n,
    )
