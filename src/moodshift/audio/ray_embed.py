"""Embedding extraction as Ray Data batch inference (``--engine ray``).

:func:`ray_embed_files` builds a dataset of file paths and runs ``map_batches`` over a
pool of actors that each hold one embedder (loaded once per actor); results are
gathered in input order. Same output as :func:`moodshift.audio.embedders.embed_files`,
including standardisation. Sessions: :func:`moodshift._ray.ray_session`.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from moodshift._ray import ray_session
from moodshift.audio.embedders import (
    Embedder,
    EmbeddingRun,
    embed_files,
    fit_standardizer,
    get_embedder,
)
from moodshift.errors import InputError
from moodshift.threads import set_threads


class _EmbedBatch:
    """Ray Data actor: one embedder per actor, a batch of paths per call."""

    def __init__(self, blob: bytes, cache_dir: str | None, max_duration_s: float | None) -> None:

        set_threads(1)  # one CPU per actor; the pool's size is the parallelism
        self.embedder = pickle.loads(blob)
        self.cache_dir = cache_dir
        self.max_duration_s = max_duration_s

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:

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

    if isinstance(paths, str | bytes | os.PathLike):
        raise InputError("paths must be a list of files, not a single path; wrap it in a list")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise InputError(f"batch_size and workers must be >= 1, got {batch_size}, {workers}")
    emb = embedder if isinstance(embedder, Embedder) else get_embedder(embedder)
    str_paths = [os.fspath(p) for p in paths]
    n = len(str_paths)
    if n:
        emb.warm_up()  # as embed_files does: actors on this machine then read the compiled cache
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
