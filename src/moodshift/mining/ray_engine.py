"""The exact per-class self-join as Ray tasks (``--engine ray``).

:func:`ray_class_topk` runs one task per (query block, catalogue shard of one class),
each computing a partial top-K with :func:`moodshift.mining.neighbors.topk_against`;
the driver merges the partial lists (:func:`moodshift.mining.neighbors.merge_partial_topk`).
The unit-norm matrix is put in Ray's object store once and read zero-copy by every
task. Sessions: :func:`moodshift._ray.ray_session`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from moodshift._ray import ray_session
from moodshift.errors import InputError
from moodshift.threads import set_threads


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
    from moodshift.mining.neighbors import topk_against  # pulls in torch: load on use

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

    from moodshift.mining.neighbors import (  # pulls in torch: load on use
        ClassNeighbors,
        TopKOutput,
        check_join_inputs,
        make_layout,
        merge_partial_topk,
    )

    if block < 1 or shard < 1:
        raise InputError(f"block and shard must be >= 1, got {block}, {shard}")
    t0 = time.perf_counter()
    x, y, m, k = check_join_inputs(embeddings=embeddings, labels=labels, k=k,
                                   n_classes=n_classes, stacklevel=3)  # fmt: skip
    lay = make_layout(x, y, m=m, k=k, normalized=normalized, seed=seed)
    n = lay.xs.shape[0]
    out = TopKOutput(n, m, k)
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
