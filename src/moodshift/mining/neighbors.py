"""Per-class top-K cosine neighbours: the self-join behind the proxy targets.

For every track and every class, the K most cosine-similar tracks of that
class (the track itself excluded). Four ways to get them, one result type:

``exact`` on CPU (numba available)
    Blocked matrix products (torch, MKL) in square tiles; the join is symmetric,
    so each tile of class a's rows x class b's rows is multiplied once and
    scanned twice (as is, into a's lists of class b; transposed, into b's lists
    of class a) by a streaming top-K kernel (:mod:`moodshift.mining._topk`) that
    only does work for the few scores above the row's running K-th best. Tiles
    run on ``threads`` Python threads, each with a single-threaded matrix
    product, so selection runs in parallel with (not after) the products.
``exact`` on GPU, or on CPU without numba
    Blocked ``torch.mm`` + ``torch.topk`` with a running merge over column
    chunks. On CUDA, ``precision="tf32"|"bf16"|"fp16"`` finds a candidate
    pool with a low-precision product and re-ranks it in float32; rows where
    the pool provably might miss a true neighbour are redone in float32, so
    the result stays exact.
``ivf``
    IVF-Flat per class (spherical k-means lists; each query probes its
    ``nprobe`` nearest lists), computed list by list as blocked products into
    the same streaming top-K buffers, so it runs at matrix-product speed.
``ivf-faiss`` / ``hnsw``
    FAISS ``IndexIVFFlat`` / ``IndexHNSWFlat`` searched per query (for
    comparison; slower than ``ivf`` for a self-join on a few cores).
``projected``
    The exact join on the rows projected onto their :data:`PROJECTED_DIMS` main
    directions (an uncentred PCA of a sample): the products shrink by ``d / 64``,
    the top-K scan of every score stays. Its scores are the projected similarities,
    close to the cosines but not equal.
``auto``
    Per class: exact up to ``exact_max_class`` tracks, ``ivf`` above.

Recall and speed of each: ``moodshift bench approx``.

Memory stays bounded: no step needs more than two tiles of similarities per
worker, so N = 10^6 never needs an N x N matrix. What grows with N is the
result, ``(n, m, K)`` indices and scores, and the exact CPU join's top-K
buffers of one class pair at a time (``2 n_c (2 K + 16)`` entries).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from moodshift._deps import require_faiss, torch_device
from moodshift.errors import DependencyError, InputError
from moodshift.threads import decide_threads, faiss_threads, torch_threads
from moodshift.values import l2_normalize

METHODS = ("exact", "ivf", "ivf-faiss", "hnsw", "projected", "auto")
#: ``method="projected"`` joins in this many principal directions of the unit rows.
#: Measured (200k x 512, 4 classes, K = 100, the benchmark's data): 155 s at top-K recall
#: 0.953, against 426 s for the exact join in an earlier run on the same data (2.76x);
#: 32 directions lost too much (recall 0.88 at 60k).
PROJECTED_DIMS = 64
#: Rows sampled to find those directions.
PROJECTED_SAMPLE = 20_000
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
#: ``method="auto"`` joins classes of up to this many tracks exactly on CPU and uses IVF above.
#: Measured against the symmetric exact join in the same run (``moodshift bench approx``,
#: 512-d, K=100, 2 cores): IVF at its default nprobe reached top-K recall 0.93 / 0.955 at
#: 1.4x / 1.6x the exact join's speed for classes of 25k / 50k tracks, 1.2x at 0.90 for
#: 12.5k; below ~50k it is not worth its recall loss.
EXACT_MAX_CLASS = 50_000
#: On CUDA the exact join is fast enough that ``auto`` stays exact up to this class size.
EXACT_MAX_CLASS_CUDA = 2_000_000
#: Below this many similarities in total the CPU join uses torch.topk: numba's one-off
#: compile (about a second, cached on disk afterwards) would cost more than it saves.
NUMBA_MIN_WORK = 50_000_000
# Worst-case error of a low-precision similarity of two unit vectors, relative to float32:
# inputs rounded to ``u`` (product error <= 2u), plus output rounding for 16-bit outputs; the
# caller adds the float32 accumulation term. Doubled for safety.
_LP_UNIT_ERROR = {"tf32": 2 * 2 * 2.0**-11, "bf16": 2 * 3 * 2.0**-8, "fp16": 2 * 3 * 2.0**-11}


@dataclass
class ClassNeighbors:
    """Top-K lists per class.

    Attributes
    ----------
    indices : np.ndarray, shape (n, m, K), int64
        ``indices[i, c, j]`` is the row (in the joined matrix) of the ``j``-th
        nearest track of class ``c`` to track ``i``, best first; ``-1`` pads lists
        shorter than K.
    scores : np.ndarray, shape (n, m, K), float32
        Cosine similarities matching ``indices`` (``-inf`` for padding).
    counts : np.ndarray, shape (n, m), int64
        Valid entries per list (K, or fewer for a small class).
    info : dict
        How the lists were made: ``method`` per class, ``seconds``, ``backend``.
    """

    indices: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.indices.shape[2])


def numba_available() -> bool:
    """Whether the streaming CPU kernel can be used (numba importable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Unit rows grouped by class (classes contiguous, shuffled inside each class).

    ``xs[r]`` is original row ``ids[r]``; class ``c`` occupies ``xs[starts[c]:starts[c+1]]``.
    Shuffling inside a class keeps the streaming kernel's heap work at its random-order
    expectation (about ``K ln(n/K)`` insertions per row) even when a catalogue is stored sorted
    by artist or album, where similar tracks would otherwise arrive in rising order.
    """

    xs: np.ndarray
    ids: np.ndarray
    starts: np.ndarray
    ks: np.ndarray

    def members(self, c: int) -> tuple[int, int]:
        return int(self.starts[c]), int(self.starts[c + 1])


def make_layout(
    x: np.ndarray, y: np.ndarray, *, m: int, k: int, normalized: bool, seed: int
) -> Layout:
    perm = np.random.default_rng(seed).permutation(y.shape[0])
    ids = perm[np.argsort(y[perm], kind="stable")]
    xs = x[ids]
    if not normalized:
        norms = np.linalg.norm(xs, axis=1, keepdims=True)
        np.maximum(norms, np.float32(1e-12), out=norms)
        xs /= norms
    counts = np.bincount(y, minlength=m)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    ks = np.minimum(k, counts).astype(np.int64)
    return Layout(xs=np.ascontiguousarray(xs, dtype=np.float32), ids=ids, starts=starts, ks=ks)


class TopKOutput:
    """The (n, m, K) result, written one (query block, class) at a time."""

    def __init__(self, n: int, m: int, k: int) -> None:
        self.indices = np.full((n, m, k), -1, dtype=np.int64)
        self.scores = np.full((n, m, k), -np.inf, dtype=np.float32)
        self.counts = np.zeros((n, m), dtype=np.int64)

    def write(self, rows: np.ndarray, c: int, ids: np.ndarray, scores: np.ndarray) -> None:
        """``ids`` (b, kc): original row ids best first, ``-1`` padded; ``rows``: original rows."""
        kc = ids.shape[1]
        valid = ids >= 0
        self.indices[rows, c, :kc] = ids
        self.scores[rows, c, :kc] = np.where(valid, scores, -np.inf)
        self.counts[rows, c] = valid.sum(axis=1)


def _self_positions(r0: int, r1: int, s: int, e: int) -> np.ndarray:
    """Position inside the class slice [s, e) of each query row r0..r1 (-1: not a member)."""
    rows = np.arange(r0, r1, dtype=np.int64)
    return np.where((rows >= s) & (rows < e), rows - s, -1)


# --------------------------------------------------------------------------- public entry
def check_join_inputs(
    *,
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int,
    n_classes: int | None = None,
    stacklevel: int = 2,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate self-join inputs and clamp K (warning when a class is too small).

    Returns
    -------
    x : np.ndarray, shape (n, d), float32, contiguous
    y : np.ndarray, shape (n,), int64
    m : int
        Number of classes.
    k : int
        K, clamped to the largest class size minus one.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(f"embeddings (n, d) and labels (n,) expected, got {x.shape}, {y.shape}")
    if x.shape[0] < 2:
        raise InputError("the self-join needs at least two tracks")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    m = int(n_classes if n_classes is not None else y.max() + 1)
    if y.min() < 0 or y.max() >= m:
        raise InputError(f"labels must lie in [0, {m}); got [{y.min()}, {y.max()}]")
    counts_per_class = np.bincount(y, minlength=m)
    k_max = int(counts_per_class.max())
    if k > k_max - 1:
        warnings.warn(
            f"K={k} is larger than the largest class ({k_max} tracks); using K={k_max - 1}",
            stacklevel=stacklevel,
        )
        k = max(1, k_max - 1)
    small = [c for c in range(m) if 0 < counts_per_class[c] <= k]
    if small:
        warnings.warn(
            f"classes {small} have <= K={k} tracks: their lists hold every other track of the "
            f"class (K clamped per class)",
            stacklevel=stacklevel,
        )
    return x, y, m, k


def class_topk(
    *,
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 100,
    n_classes: int | None = None,
    method: str = "exact",
    block: int | None = None,
    chunk: int | None = None,
    normalized: bool = False,
    device: str | None = None,
    threads: int | None = None,
    precision: str = "auto",
    backend: str = "auto",
    exact_max_class: int | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    seed: int = 0,
    progress: bool = False,
    memory_mb: float = 256.0,
) -> ClassNeighbors:
    """Per-class top-K cosine self-join (exact, or approximate with FAISS).

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d)
    labels : np.ndarray, shape (n,), int
        Class index per row, in ``[0, n_classes)``.
    k : int
        List length; clamped (with a warning) to the largest class size minus one.
    n_classes : int, optional
        Number of classes ``m`` (default ``labels.max() + 1``).
    method : {"exact", "ivf", "ivf-faiss", "hnsw", "projected", "auto"}
        ``auto`` is exact for classes of up to ``exact_max_class`` tracks, ``ivf`` above.
        ``projected`` joins all classes in :data:`PROJECTED_DIMS` dimensions (its scores
        are the projected similarities).
    block, chunk : int, optional
        Tile shape of the exact join: queries per block and candidates per column chunk.
        By default chosen so every worker's tile fits in ``memory_mb / threads``.
    normalized : bool
        Set when rows are already unit-norm (skips one normalisation pass).
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"auto"``/None (CUDA when available).
    threads : int, optional
        CPU worker threads (default: the thread policy, :mod:`moodshift.threads`: free
        cores, or ``MOODSHIFT_THREADS``).
    precision : {"auto", "fp32", "tf32", "bf16", "fp16"}
        Product precision for the candidate pool of the torch (GPU) path; results are
        re-ranked in float32 and stay exact. ``auto``: tf32 on CUDA, fp32 on CPU.
    backend : {"auto", "numba", "torch"}
        CPU exact kernel: streaming numba kernel, or ``torch.topk``. ``auto`` uses numba
        for large joins when it is installed.
    exact_max_class : int, optional
        Largest class joined exactly under ``method="auto"`` (default
        :data:`EXACT_MAX_CLASS` on CPU, :data:`EXACT_MAX_CLASS_CUDA` on CUDA).
    nprobe : int, optional
        IVF lists visited per query (default: enough for top-K recall >= 0.95 on the
        benchmark's clustered data, see :func:`default_nprobe`).
    ef_search : int, optional
        HNSW search breadth (default ``max(2 K, 128)``).
    seed : int
        Seeds the in-class shuffle and the IVF training sample.
    progress : bool
        Show a tqdm bar.
    memory_mb : float
        Budget for similarity tiles (all workers together).

    Returns
    -------
    ClassNeighbors
        Row indices refer to ``embeddings``; ``info`` records the method used per class.

    Raises
    ------
    InputError
        Bad shapes, labels, ``k``, ``method``, ``precision`` or ``backend``.
    DependencyError
        ``ivf``/``hnsw`` without faiss, or ``backend="numba"`` without numba.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if backend not in ("auto", "numba", "torch"):
        raise InputError(f"unknown backend {backend!r}; use auto, numba or torch")
    x, y, m, k = check_join_inputs(embeddings=embeddings, labels=labels, k=k, n_classes=n_classes,
                                   stacklevel=3)  # fmt: skip
    if method == "projected":
        return _projected(x, y, m=m, k=k, normalized=normalized, seed=seed, t0=t0,
                          options=dict(block=block, chunk=chunk, device=device, threads=threads,
                                       backend=backend, progress=progress,
                                       memory_mb=memory_mb))  # fmt: skip
    n = x.shape[0]
    counts_per_class = np.bincount(y, minlength=m)
    dev = torch_device(device)
    if precision == "auto":
        precision = "tf32" if dev.type == "cuda" else "fp32"
    threads = max(1, int(threads or decide_threads(role="mine").threads))
    if exact_max_class is None:
        exact_max_class = EXACT_MAX_CLASS_CUDA if dev.type == "cuda" else EXACT_MAX_CLASS
    per_class = []
    for c in range(m):
        nc = int(counts_per_class[c])
        if method == "auto":
            per_class.append("exact" if nc <= exact_max_class else "ivf")
        else:
            per_class.append(method)

    lay = make_layout(x, y, m=m, k=k, normalized=normalized, seed=seed)
    out = TopKOutput(n, m, k)
    exact = [c for c in range(m) if per_class[c] == "exact" and counts_per_class[c] > 0]
    approx = [c for c in range(m) if per_class[c] != "exact" and counts_per_class[c] > 0]
    info: dict[str, Any] = {"method": method, "per_class": per_class, "k": k}
    if exact:
        work = n * int(counts_per_class[exact].sum())
        use_numba = dev.type == "cpu" and (
            backend == "numba" or (backend == "auto" and work >= NUMBA_MIN_WORK)
        )
        if use_numba and not numba_available():
            if backend == "numba":
                raise DependencyError("backend='numba' needs numba: pip install numba")
            use_numba = False
        if use_numba:
            info["backend"] = "numba"
            _exact_cpu(lay, exact, out, block=block, chunk=chunk, threads=threads,
                       memory_mb=memory_mb, progress=progress)  # fmt: skip
        else:
            info["backend"] = f"torch-{dev.type}"
            info["precision"] = precision
            info["fp32_redone_rows"] = _exact_torch(
                lay, exact, out, dev=dev, block=block, chunk=chunk, memory_mb=memory_mb,
                precision=precision, progress=progress,
            )  # fmt: skip
    for c in approx:
        if per_class[c] == "ivf":
            detail = _ivf_gemm_class(lay, c, out, nprobe=nprobe, threads=threads, seed=seed,
                                     progress=progress)  # fmt: skip
        else:
            detail = _approx_class(
                lay, c, out, kind=per_class[c].removesuffix("-faiss"), nprobe=nprobe,
                ef_search=ef_search, threads=threads, seed=seed, progress=progress,
            )  # fmt: skip
        info.setdefault("approx", {})[c] = detail
    info["seconds"] = time.perf_counter() - t0
    return ClassNeighbors(indices=out.indices, scores=out.scores, counts=out.counts, info=info)


def _projected(x: np.ndarray, y: np.ndarray, *, m: int, k: int, normalized: bool, seed: int,
               t0: float, options: dict[str, Any]) -> ClassNeighbors:  # fmt: skip
    """``method="projected"``: the exact join on the rows' main directions."""
    if not normalized:
        x = l2_normalize(x)
    dims = min(PROJECTED_DIMS, x.shape[1])
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(x.shape[0], min(x.shape[0], PROJECTED_SAMPLE), replace=False))]
    # Uncentred: the mean direction is kept as one of the directions, so the projected dot
    # product approximates the cosine itself, not the cosine minus a per-pair offset.
    _, sv, vt = np.linalg.svd(sample.astype(np.float64), full_matrices=False)
    basis = np.ascontiguousarray(vt[:dims].T, dtype=np.float32)
    nb = class_topk(embeddings=x @ basis, labels=y, k=k, n_classes=m, method="exact",
                    normalized=True, seed=seed, **options)  # fmt: skip
    energy = float((sv[:dims] ** 2).sum() / max((sv**2).sum(), 1e-30))
    info = {**nb.info, "method": "projected", "per_class": ["projected"] * m,
            "projected_dims": dims, "projected_energy": round(energy, 4),
            "scores": "similarities in the projected space",
            "seconds": time.perf_counter() - t0}  # fmt: skip
    return ClassNeighbors(indices=nb.indices, scores=nb.scores, counts=nb.counts, info=info)


# --------------------------------------------------------------------------- exact, CPU
def _tile_shape(
    n: int, largest: int, *, block: int | None, chunk: int | None, threads: int, memory_mb: float
) -> tuple[int, int]:
    # 2048 x 2048 tiles (16 MiB) measured best on 2 cores at d = 512: 147 GFLOP per CPU
    # second for the products alone, 130 with selection (1024 x 4096: 139 / 121; 256 x 2048:
    # 102 / 95). Smaller tiles lose sgemm efficiency faster than they gain cache hits.
    budget = max(1.0, memory_mb * 2**20 / 4 / threads)
    b = block or 2048
    w = chunk or 2048
    w = max(1, min(w, largest))
    b = max(1, min(b, n, int(budget // w) or 1))
    return b, w


#: Candidate buffer per row, in multiples of K: a cut every (factor - 1) K appends.
_BUFFER_FACTOR = 2


def _numba_topk(
    q: torch.Tensor,
    cand: torch.Tensor,
    cand_ids: np.ndarray,
    kc: int,
    self_pos: np.ndarray,
    chunk: int,
    buf: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kc`` of ``q @ cand.T`` by tiles of ``chunk`` columns through the numba kernel.

    ``buf`` holds at least ``len(q) * chunk`` floats. Returns ids (from ``cand_ids``) and
    scores, (b, kc), best first, ``-1``/``-inf`` padded.
    """
    from moodshift.mining import _topk  # pulls in numba: load on use

    nb = q.shape[0]
    nc = cand.shape[0]
    cap = _BUFFER_FACTOR * kc + 16
    bv = np.empty((nb, cap), dtype=np.float32)
    bi = np.empty((nb, cap), dtype=np.int64)
    bn = np.zeros(nb, dtype=np.int64)
    thr = np.full(nb, -np.inf, dtype=np.float32)
    for c0 in range(0, nc, chunk):
        c1 = min(nc, c0 + chunk)
        tile = buf[: nb * (c1 - c0)].view(nb, c1 - c0)
        torch.mm(q, cand[c0:c1].T, out=tile)
        _topk.buffer_update(tile.numpy(), cand_ids[c0:c1], self_pos - c0, kc, bv, bi, bn, thr)
    out_v = np.empty((nb, kc), dtype=np.float32)
    out_i = np.empty((nb, kc), dtype=np.int64)
    _topk.buffer_finish(kc, bv, bi, bn, out_v, out_i)
    return out_i, out_v


def topk_against(
    *,
    queries: np.ndarray,
    candidates: np.ndarray,
    candidate_ids: np.ndarray | None = None,
    k: int,
    self_pos: np.ndarray | None = None,
    chunk: int = 4096,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-K of one query block against one candidate set (single-threaded unit).

    The building block of :func:`class_topk` and of the Ray self-join
    (:mod:`moodshift.mining.ray_engine`): partial lists against disjoint candidate shards
    merge exactly with :func:`merge_partial_topk`.

    Parameters
    ----------
    queries : np.ndarray, shape (b, d), float32, unit rows
    candidates : np.ndarray, shape (n_c, d), float32, unit rows
    candidate_ids : np.ndarray, shape (n_c,), int64, optional
        Ids reported for the candidates (default ``0 .. n_c - 1``); ties go to the lower id.
    k : int
        Clamped to ``n_c``.
    self_pos : np.ndarray, shape (b,), int64, optional
        Position in ``candidates`` of each query itself, excluded; ``-1`` for none.
    chunk : int
        Candidates per tile.
    backend : {"auto", "numba", "torch"}

    Returns
    -------
    ids : np.ndarray, shape (b, min(k, n_c)), int64
        Best first, ``-1`` padded.
    scores : np.ndarray, shape (b, min(k, n_c)), float32
        ``-inf`` padded.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    c = np.ascontiguousarray(candidates, dtype=np.float32)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise InputError(f"queries {q.shape} and candidates {c.shape} must be (b, d) and (n, d)")
    nc = c.shape[0]
    ids = (np.arange(nc, dtype=np.int64) if candidate_ids is None
           else np.ascontiguousarray(candidate_ids, dtype=np.int64))  # fmt: skip
    if ids.shape != (nc,):
        raise InputError(f"candidate_ids must have shape ({nc},), got {ids.shape}")
    sp = (np.full(q.shape[0], -1, dtype=np.int64) if self_pos is None
          else np.ascontiguousarray(self_pos, dtype=np.int64))  # fmt: skip
    kc = min(int(k), nc)
    if kc < 1:
        raise InputError("no candidates: the candidate set is empty")
    use_numba = backend == "numba" or (backend == "auto" and numba_available())
    if backend == "numba" and not numba_available():
        raise DependencyError("backend='numba' needs numba: pip install numba")
    chunk = max(1, min(chunk, nc))
    qt, ct = torch.from_numpy(q), torch.from_numpy(c)
    if use_numba:
        return _numba_topk(qt, ct, ids, kc, sp, chunk, torch.empty(q.shape[0] * chunk))
    with torch.inference_mode():
        vals, pos = _topk_fp32(qt, ct, kc, torch.from_numpy(sp), chunk)
    valid = torch.isfinite(vals).numpy()
    return np.where(valid, ids[pos.clamp(min=0).numpy()], -1), vals.numpy()


class _ClassBuffers:
    """Streaming top-K buffers of every row of one class, for its lists of another class."""

    def __init__(self, rows: int, kc: int, blocks: int) -> None:
        cap = _BUFFER_FACTOR * kc + 16
        self.kc = kc
        self.bv = np.empty((rows, cap), dtype=np.float32)
        self.bi = np.empty((rows, cap), dtype=np.int64)
        self.bn = np.zeros(rows, dtype=np.int64)
        self.thr = np.full(rows, -np.inf, dtype=np.float32)
        # One lock per row block: two tiles may feed the same rows at once (a tile and a
        # transposed one); a scan holds only its own block's lock, so no deadlock.
        self.locks = [threading.Lock() for _ in range(blocks)]

    def scan(self, blk: int, r0: int, r1: int, sims: np.ndarray, col_ids: np.ndarray,
             self_pos: np.ndarray) -> None:  # fmt: skip
        from moodshift.mining import _topk  # pulls in numba: load on use

        with self.locks[blk]:
            _topk.buffer_update(sims, col_ids, self_pos, self.kc, self.bv[r0:r1],
                                self.bi[r0:r1], self.bn[r0:r1], self.thr[r0:r1])  # fmt: skip

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        from moodshift.mining import _topk  # pulls in numba: load on use

        out_v = np.empty((self.bv.shape[0], self.kc), dtype=np.float32)
        out_i = np.empty((self.bv.shape[0], self.kc), dtype=np.int64)
        _topk.buffer_finish(self.kc, self.bv, self.bi, self.bn, out_v, out_i)
        return out_i, out_v


def _exact_cpu(
    lay: Layout,
    classes: Sequence[int],
    out: TopKOutput,
    *,
    block: int | None,
    chunk: int | None,
    threads: int,
    memory_mb: float,
    progress: bool,
) -> None:
    """Exact join on CPU that computes each similarity once: the join is symmetric.

    ``sim(i, j)`` serves track i's list of class(j) and track j's list of class(i). So for
    every pair of classes ``a <= b`` the tiles of rows(a) x rows(b) are multiplied once
    (for ``a == b`` only the tiles on and above the diagonal), each tile is scanned into
    the rows of ``a`` and, transposed, into the rows of ``b``. That halves the matrix
    products; the scans (about a quarter of the time at d = 512) stay as they were. Query
    rows of classes that are not joined here (``auto`` sends large classes to IVF) still
    need their lists of the joined classes, so pairs with them are computed too.

    Memory: the buffers of one class pair, ``2 n_c (2 K + 16)`` entries of 12 bytes, plus
    one tile and its transpose per worker.
    """
    m = lay.starts.shape[0] - 1
    joined = set(classes)
    sizes = [lay.members(c)[1] - lay.members(c)[0] for c in range(m)]
    largest = max(sizes[c] for c in classes)
    t, _ = _tile_shape(lay.xs.shape[0], largest, block=block, chunk=chunk, threads=threads,
                       memory_mb=memory_mb / 2)  # fmt: skip
    t = max(1, min(t, chunk or t))  # square tiles: the transpose of a tile is a tile
    xt = torch.from_numpy(lay.xs)
    local = threading.local()
    # Pairs (a, b), a <= b, where at least one side's lists are wanted.
    pairs = [(a, b) for a in range(m) for b in range(a, m)
             if sizes[a] and sizes[b] and (a in joined or b in joined)]  # fmt: skip
    total = sum(_pair_tiles(sizes[a], sizes[b], t, a == b) for a, b in pairs)
    bar = tqdm(total=total, desc="self-join", unit="tile", disable=not progress, leave=False)

    def bufs() -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(local, "buf", None) is None:
            local.buf = (torch.empty(t * t), torch.empty(t * t))
        return local.buf

    try:
        for a, b in pairs:
            sa, ea = lay.members(a)
            sb, eb = lay.members(b)
            na, nbb = ea - sa, eb - sb
            blocks_a, blocks_b = math.ceil(na / t), math.ceil(nbb / t)
            # buf_a: rows of a, their lists of class b; buf_b: rows of b, lists of class a.
            buf_a = _ClassBuffers(na, int(lay.ks[b]), blocks_a) if b in joined else None
            if a == b:
                buf_b = buf_a
            else:
                buf_b = _ClassBuffers(nbb, int(lay.ks[a]), blocks_b) if a in joined else None

            def tile(i: int, j: int, same: bool = a == b, sa: int = sa, ea: int = ea, sb: int = sb,
                     eb: int = eb, buf_a: _ClassBuffers | None = buf_a,
                     buf_b: _ClassBuffers | None = buf_b) -> None:  # fmt: skip
                r0, r1 = sa + i * t, min(ea, sa + (i + 1) * t)
                c0, c1 = sb + j * t, min(eb, sb + (j + 1) * t)
                h, w = r1 - r0, c1 - c0
                b1, b2 = bufs()
                sims = b1[: h * w].view(h, w)
                torch.mm(xt[r0:r1], xt[c0:c1].T, out=sims)
                diag = same and i == j
                if buf_a is not None:
                    # On a diagonal tile row p's own column is p.
                    sp = np.arange(h, dtype=np.int64) if diag else np.full(h, -1, np.int64)
                    buf_a.scan(i, r0 - sa, r1 - sa, sims.numpy(), lay.ids[c0:c1], sp)
                if buf_b is not None and not diag:
                    simt = b2[: h * w].view(w, h)
                    simt.copy_(sims.T)
                    buf_b.scan(j, c0 - sb, c1 - sb, simt.numpy(), lay.ids[r0:r1],
                               np.full(w, -1, np.int64))  # fmt: skip

            jobs = [(i, j) for i in range(blocks_a) for j in range(blocks_b)
                    if a != b or j >= i]  # fmt: skip
            if threads == 1:
                for i, j in jobs:
                    tile(i, j)
                    bar.update(1)
            else:
                with torch_threads(1), ThreadPoolExecutor(threads) as pool:
                    for fut in as_completed([pool.submit(tile, i, j) for i, j in jobs]):
                        fut.result()
                        bar.update(1)
            for buf, s, e, c in ((buf_a, sa, ea, b), (buf_b, sb, eb, a)):
                if buf is not None:
                    ids, vals = buf.finish()
                    out.write(lay.ids[s:e], c, ids, vals)
                if a == b:
                    break
    finally:
        bar.close()


def _pair_tiles(na: int, nb: int, t: int, same: bool) -> int:
    ba, bb = math.ceil(na / t), math.ceil(nb / t)
    return ba * (ba + 1) // 2 if same else ba * bb


# --------------------------------------------------------------------------- exact, torch
@contextlib.contextmanager
def _matmul_precision(dev: torch.device, precision: str) -> Iterator[None]:
    if dev.type != "cuda" or precision != "tf32":
        yield
        return
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 has fp32_precision; older versions only allow_tf32.
    attr = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, attr)
    setattr(matmul, attr, "tf32" if attr == "fp32_precision" else True)
    try:
        yield
    finally:
        setattr(matmul, attr, before)


def _merge_topk(
    best: tuple[torch.Tensor, torch.Tensor] | None, vals: torch.Tensor, idx: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if best is not None:
        vals = torch.cat([best[0], vals], dim=1)
        idx = torch.cat([best[1], idx], dim=1)
    if vals.shape[1] > k:
        top = torch.topk(vals, k, dim=1, largest=True, sorted=True)
        return top.values, torch.gather(idx, 1, top.indices)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    return torch.gather(vals, 1, order), torch.gather(idx, 1, order)


def _topk_fp32(
    q: torch.Tensor, cand: torch.Tensor, kc: int, self_pos: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``kc`` of ``q @ cand.T`` (self excluded), column chunks merged as they come."""
    best = None
    rows = torch.arange(q.shape[0], device=q.device)
    for c0 in range(0, cand.shape[0], chunk):
        c1 = min(cand.shape[0], c0 + chunk)
        sims = q @ cand[c0:c1].T
        hit = (self_pos >= c0) & (self_pos < c1)
        if bool(hit.any()):
            sims[rows[hit], self_pos[hit] - c0] = -torch.inf
        kk = min(kc, c1 - c0)
        top = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
        best = _merge_topk(best, top.values, top.indices + c0, kc)
    assert best is not None
    return best


def _topk_lowp(
    q: torch.Tensor,
    cand: torch.Tensor,
    cand_lp: torch.Tensor | None,
    kc: int,
    self_pos: torch.Tensor,
    chunk: int,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Candidate pool from a low-precision product, re-ranked in float32; exact by check.

    Any candidate left out of the pool has a low-precision score <= the pool's worst one,
    hence a float32 score <= that + ``err``. Where the re-ranked K-th score is above this
    bound the pool holds the true top-K; other rows are redone in float32.
    """
    nb, d = q.shape
    nc = cand.shape[0]
    pool = min(nc, 2 * kc + 16)
    q_lp = q if cand_lp is None else q.to(cand_lp.dtype)
    cand_lp = cand if cand_lp is None else cand_lp
    rows = torch.arange(nb, device=q.device)
    best = None
    with _matmul_precision(q.device, precision):
        for c0 in range(0, nc, chunk):
            c1 = min(nc, c0 + chunk)
            sims = (q_lp @ cand_lp[c0:c1].T).float()
            hit = (self_pos >= c0) & (self_pos < c1)
            if bool(hit.any()):
                sims[rows[hit], self_pos[hit] - c0] = -torch.inf
            top = torch.topk(sims, min(pool, c1 - c0), dim=1, largest=True, sorted=True)
            best = _merge_topk(best, top.values, top.indices + c0, pool)
    assert best is not None
    lp_vals, pos = best
    # Gathered candidate vectors are (rows, pool, d): re-score in slices of ~64 MiB.
    step = max(1, (16 * 2**20) // max(1, pool * d))
    exact = torch.cat([
        torch.bmm(cand[pos[i : i + step]], q[i : i + step].unsqueeze(2)).squeeze(2)
        for i in range(0, nb, step)
    ])  # fmt: skip
    exact = torch.where(torch.isfinite(lp_vals), exact, torch.full_like(exact, -torch.inf))
    top = torch.topk(exact, min(kc, exact.shape[1]), dim=1, largest=True, sorted=True)
    vals, idx = top.values, torch.gather(pos, 1, top.indices)
    err = _LP_UNIT_ERROR[precision] + 4 * d * 2.0**-24
    # A pool that already holds every other member cannot miss anything.
    complete = pos.shape[1] >= nc - (self_pos >= 0).long()
    safe = complete | (vals[:, -1] > lp_vals[:, -1] + err)
    redo = torch.nonzero(~safe).squeeze(1)
    if redo.numel():
        v2, i2 = _topk_fp32(q[redo], cand, kc, self_pos[redo], chunk)
        vals = vals.clone()
        idx = idx.clone()
        vals[redo] = v2
        idx[redo] = i2
    return vals, idx, int(redo.numel())


def _exact_torch(
    lay: Layout,
    classes: Sequence[int],
    out: TopKOutput,
    *,
    dev: torch.device,
    block: int | None,
    chunk: int | None,
    memory_mb: float,
    precision: str,
    progress: bool,
) -> int:
    n = lay.xs.shape[0]
    largest = max(lay.members(c)[1] - lay.members(c)[0] for c in classes)
    w = max(1, min(chunk or 16384, largest))
    b = block or max(64, min(8192, int(memory_mb * 2**20 / 4 / w)))
    xt = torch.from_numpy(lay.xs).to(dev)
    ids_t = torch.from_numpy(lay.ids).to(dev)
    lowp = precision in ("bf16", "fp16") or (precision == "tf32" and dev.type == "cuda")
    xt_lp = None
    if precision in ("bf16", "fp16"):
        xt_lp = xt.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    redone = 0
    total = math.ceil(n / b) * len(classes)
    bar = tqdm(total=total, desc="self-join", unit="block", disable=not progress, leave=False)
    with torch.inference_mode():
        for r0 in range(0, n, b):
            r1 = min(n, r0 + b)
            q = xt[r0:r1]
            rows = lay.ids[r0:r1]
            for c in classes:
                s, e = lay.members(c)
                kc = int(lay.ks[c])
                self_pos = torch.from_numpy(_self_positions(r0, r1, s, e)).to(dev)
                cand = xt[s:e]
                if lowp and e - s > 2 * kc + 16:
                    cand_lp = None if xt_lp is None else xt_lp[s:e]
                    vals, pos, nre = _topk_lowp(q, cand, cand_lp, kc, self_pos, w, precision)
                    redone += nre
                else:
                    vals, pos = _topk_fp32(q, cand, kc, self_pos, w)
                valid = torch.isfinite(vals)
                ids = torch.where(valid, ids_t[s + pos.clamp(min=0)], -1)
                out.write(rows, c, ids.cpu().numpy(), vals.float().cpu().numpy())
                bar.update(1)
    bar.close()
    return redone


# --------------------------------------------------------------------------- approximate
def default_nprobe(nlist: int) -> int:
    """IVF lists probed per query by default: a tenth of the lists, at least 8.

    On the benchmark's synthetic catalogues (``moodshift bench approx``) a thirty-second of
    the lists gave top-100 recall 0.76 and a fourteenth 0.92 (200k x 64-d, 448 lists).
    """
    return int(min(nlist, max(8, math.ceil(nlist / 10))))


def ivf_nlist(nc: int) -> int:
    """IVF lists for a class of ``nc`` tracks (shared by mining and ``bench approx``)."""
    # ~2 sqrt(n) lists balance coarse and fine cost; at least 40 training points each.
    # (A served index uses ~4 sqrt(n): see build_index in retrieval/index.py.)
    return int(max(1, min(round(2 * math.sqrt(nc)), nc // 40)))


def _spherical_kmeans(
    x: np.ndarray, nlist: int, *, seed: int, iters: int = 10, per_list: int = 48
) -> np.ndarray:
    """``nlist`` unit centroids of unit rows ``x``: Lloyd's rounds on a sample, in torch.

    ``per_list`` sample points per centroid are plenty to partition for IVF. FAISS's
    k-means took a quarter of the IVF join's time here on a busy 2-core machine (its
    OpenMP threads wait on cores other processes hold); this runs in the caller's thread
    as a few matrix products.
    """
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    pick = np.sort(rng.choice(n, size=min(n, per_list * nlist), replace=False))
    sample = torch.from_numpy(np.ascontiguousarray(x[pick]))
    cent = sample[torch.from_numpy(rng.choice(sample.shape[0], size=nlist, replace=False))]
    with torch.inference_mode():
        for _ in range(iters):
            assign = (sample @ cent.T).argmax(dim=1)
            sums = torch.zeros_like(cent).index_add_(0, assign, sample)
            counts = torch.bincount(assign, minlength=nlist)
            empty = torch.nonzero(counts == 0).squeeze(1)
            if empty.numel():  # reseed empty lists on random sample points
                sums[empty] = sample[torch.from_numpy(rng.choice(sample.shape[0], empty.numel()))]
            cent = torch.nn.functional.normalize(sums, dim=1)
    return np.ascontiguousarray(cent.numpy(), dtype=np.float32)


def _top_lists(x: np.ndarray, centroids: np.ndarray, n: int, *, block: int = 16384) -> np.ndarray:
    """Indices of the ``n`` most similar centroids per row, best first: (len(x), n) int64."""
    ct = torch.from_numpy(centroids)
    out = np.empty((x.shape[0], n), dtype=np.int64)
    with torch.inference_mode():
        for s in range(0, x.shape[0], block):
            sims = torch.from_numpy(x[s : s + block]) @ ct.T
            out[s : s + block] = torch.topk(sims, n, dim=1).indices.numpy()
    return out


def _ivf_gemm_class(
    lay: Layout,
    c: int,
    out: TopKOutput,
    *,
    nprobe: int | None,
    threads: int,
    seed: int,
    progress: bool,
    block: int = 16384,
) -> dict[str, Any]:
    """Approximate top-K of every row within class ``c``: IVF-Flat probing as matrix products.

    The class is split into ``nlist`` k-means lists; every query probes its ``nprobe``
    nearest lists, exactly as IVF-Flat does. The work is organised by list instead of by
    query: each list is joined against all the queries that probe it in one blocked product,
    and the scores stream into per-query top-K buffers (the exact join's kernel). So it runs
    at matrix-product speed instead of one vector at a time (FAISS's IVF search scanned about
    3.5 GFLOP/s on 2 busy cores here; the products run at ~130).
    """
    from moodshift.mining import _topk  # pulls in numba: load on use

    t0 = time.perf_counter()
    s, e = lay.members(c)
    nc = e - s
    kc = int(lay.ks[c])
    n = lay.xs.shape[0]
    cand = lay.xs[s:e]
    nlist = ivf_nlist(nc)
    # Enough probes that a query sees comfortably more than K candidates.
    probes = int(min(nlist, nprobe or default_nprobe(nlist)))
    probes = min(nlist, max(probes, math.ceil(2 * (kc + 1) * nlist / nc)))
    centroids = _spherical_kmeans(cand, nlist, seed=seed)
    home = _top_lists(cand, centroids, 1)[:, 0]
    order = np.argsort(home, kind="stable")
    sorted_vecs = torch.from_numpy(np.ascontiguousarray(cand[order]))
    sorted_ids = np.ascontiguousarray(lay.ids[s:e][order])
    list_start = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(home, minlength=nlist), out=list_start[1:])
    # Sorted position of each member query (for self-exclusion), -1 for other classes.
    self_sorted = np.full(n, -1, dtype=np.int64)
    self_sorted[s:e] = np.empty(nc, dtype=np.int64)
    self_sorted[s:e][order] = np.arange(nc)
    build_s = time.perf_counter() - t0
    qlists = _top_lists(lay.xs, centroids, probes)
    # Inverted lists of queries: which queries probe list L, split by worker so that no two
    # workers ever touch the same query's buffer.
    flat_l = qlists.ravel()
    flat_q = np.repeat(np.arange(n, dtype=np.int64), probes)
    by_list = np.argsort(flat_l, kind="stable")
    q_sorted = flat_q[by_list]
    q_start = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat_l, minlength=nlist), out=q_start[1:])
    del flat_l, flat_q, by_list
    cap = kc + max(32, kc // 2)
    bv = np.empty((n, cap), dtype=np.float32)
    bi = np.empty((n, cap), dtype=np.int64)
    bn = np.zeros(n, dtype=np.int64)
    thr = np.full(n, -np.inf, dtype=np.float32)
    xt = torch.from_numpy(lay.xs)

    def run(worker: int) -> None:
        for li in range(nlist):
            a, b = int(list_start[li]), int(list_start[li + 1])
            if b == a:
                continue
            qs = q_sorted[q_start[li] : q_start[li + 1]]
            qs = qs[qs % threads == worker]
            cvec = sorted_vecs[a:b]
            ids = sorted_ids[a:b]
            for q0 in range(0, qs.size, block):
                rows = qs[q0 : q0 + block]
                sims = (xt[torch.from_numpy(rows)] @ cvec.T).numpy()
                sp = self_sorted[rows]
                sp = np.where((sp >= a) & (sp < b), sp - a, -1)
                _topk.buffer_update_rows(sims, ids, sp, kc, rows, bv, bi, bn, thr)
            if worker == 0:
                bar.update(1)

    bar = tqdm(total=nlist, desc=f"ivf class {c}", unit="list", disable=not progress,
               leave=False)  # fmt: skip
    with torch_threads(1), ThreadPoolExecutor(threads) as pool:
        for fut in [pool.submit(run, w) for w in range(threads)]:
            fut.result()
    bar.close()
    out_v = np.empty((min(n, 65536), kc), dtype=np.float32)
    out_i = np.empty((min(n, 65536), kc), dtype=np.int64)
    for r0 in range(0, n, out_v.shape[0]):
        r1 = min(n, r0 + out_v.shape[0])
        _topk.buffer_finish(kc, bv[r0:r1], bi[r0:r1], bn[r0:r1], out_v[: r1 - r0],
                            out_i[: r1 - r0])  # fmt: skip
        out.write(lay.ids[r0:r1], c, out_i[: r1 - r0], out_v[: r1 - r0])
    scanned = float(np.diff(list_start) @ np.diff(q_start)) / (n * nc)
    return {"kind": "ivf", "nlist": nlist, "nprobe": probes, "build_seconds": build_s,
            "scanned_fraction": scanned}  # fmt: skip


def build_class_index(
    vectors: np.ndarray, *, kind: str, seed: int = 0, nprobe: int | None = None,
    ef_search: int | None = None, k: int = 100,
) -> Any:  # fmt: skip
    """A FAISS inner-product index over one class's unit vectors.

    Parameters
    ----------
    vectors : np.ndarray, shape (n_c, d), float32, unit rows
    kind : {"ivf", "hnsw"}
    nprobe, ef_search : int, optional
        Search breadth (see :func:`class_topk`).
    k : int
        The list length it will be searched for (sets HNSW's default breadth).

    Returns
    -------
    faiss.Index
    """
    faiss = require_faiss()
    nc, d = vectors.shape
    if kind == "ivf":
        nlist = ivf_nlist(nc)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # silences faiss's stderr warning on small samples
        sample = vectors
        if nc > 64 * nlist:
            pick = np.random.default_rng(seed).choice(nc, 64 * nlist, replace=False)
            sample = vectors[np.sort(pick)]
        index.train(sample)
        index.add(vectors)
        index.nprobe = int(nprobe or default_nprobe(nlist))
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(vectors)
        index.hnsw.efSearch = int(ef_search or max(2 * k, 128))
        return index
    raise InputError(f"unknown approximate index kind {kind!r}; use ivf or hnsw")


def _approx_class(
    lay: Layout,
    c: int,
    out: TopKOutput,
    *,
    kind: str,
    nprobe: int | None,
    ef_search: int | None,
    threads: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    s, e = lay.members(c)
    nc = e - s
    kc = int(lay.ks[c])
    n = lay.xs.shape[0]
    with faiss_threads(threads):
        t0 = time.perf_counter()
        index = build_class_index(lay.xs[s:e], kind=kind, seed=seed, nprobe=nprobe,
                                  ef_search=ef_search, k=kc + 1)  # fmt: skip
        build_s = time.perf_counter() - t0
        kq = min(kc + 1, nc)
        qb = 16384
        bar = tqdm(total=n, desc=f"{kind} class {c}", unit="track", disable=not progress,
                   leave=False)  # fmt: skip
        for r0 in range(0, n, qb):
            r1 = min(n, r0 + qb)
            dist, pos = index.search(lay.xs[r0:r1], kq)
            self_pos = _self_positions(r0, r1, s, e)
            valid = (pos >= 0) & (pos != self_pos[:, None])
            # Drop self (wherever it ranked) and keep the first kc valid entries, in order.
            keep = np.argsort(~valid, axis=1, kind="stable")[:, :kc]
            pos = np.take_along_axis(pos, keep, axis=1)
            dist = np.take_along_axis(dist, keep, axis=1)
            ok = np.take_along_axis(valid, keep, axis=1)
            ids = np.where(ok, lay.ids[s + np.clip(pos, 0, None)], -1)
            out.write(lay.ids[r0:r1], c, ids, dist.astype(np.float32))
            bar.update(r1 - r0)
        bar.close()
    extra = {"nprobe": int(index.nprobe)} if kind == "ivf" else {"ef_search": int(
        index.hnsw.efSearch)}  # fmt: skip
    if kind == "ivf":
        extra["nlist"] = int(index.nlist)
    return {"kind": kind, "build_seconds": build_s, **extra}


# --------------------------------------------------------------------------- helpers
def merge_partial_topk(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], *, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge top-K lists computed against disjoint candidate shards.

    Parameters
    ----------
    parts : sequence of (ids, scores)
        Each ``ids`` (b, k_i) int64 (``-1`` padded) and ``scores`` (b, k_i) float32, for the
        same ``b`` queries.
    k : int

    Returns
    -------
    ids : np.ndarray, shape (b, k)
        Best first; ties go to the lower id; ``-1`` padded.
    scores : np.ndarray, shape (b, k)
    """
    ids = np.concatenate([p[0] for p in parts], axis=1)
    sc = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32)
    sc = np.where(ids >= 0, sc, -np.inf)
    # Sort by (score desc, id asc): id as the secondary key of a stable two-pass sort.
    order = np.argsort(np.where(ids >= 0, ids, np.iinfo(np.int64).max), axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    sc = np.take_along_axis(sc, order, axis=1)
    order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    sc = np.take_along_axis(sc, order, axis=1)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        sc = np.pad(sc, ((0, 0), (0, pad)), constant_values=-np.inf)
    return np.where(np.isfinite(sc), ids, -1), sc


def topk_recall(approx: ClassNeighbors, exact: ClassNeighbors, *, rows: np.ndarray | None = None
                ) -> float:  # fmt: skip
    """Mean overlap |approx ∩ exact| / |exact| of the top-K sets over rows and classes.

    Parameters
    ----------
    approx, exact : ClassNeighbors
        Same ``n``, ``m`` and ``K``.
    rows : np.ndarray, optional
        Evaluate only these rows (a sample).

    Returns
    -------
    float
    """
    rows = np.arange(exact.indices.shape[0]) if rows is None else np.asarray(rows)
    return list_recall(approx.indices[rows], exact.indices[rows])


def list_recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean overlap |approx ∩ exact| / |exact| of id lists (``-1`` padding ignored).

    Parameters
    ----------
    approx_ids : np.ndarray, shape (..., K_a), int
    exact_ids : np.ndarray, shape (..., K_e), int
        The same leading shape (e.g. rows x classes); ids unique within each list.

    Returns
    -------
    float
        Summed hits over summed exact list lengths (1.0 when every exact list is empty).
    """
    a = np.asarray(approx_ids).reshape(-1, np.shape(approx_ids)[-1])
    b = np.asarray(exact_ids).reshape(-1, np.shape(exact_ids)[-1])
    if a.shape[0] != b.shape[0]:
        raise InputError(f"recall needs lists of the same rows, got {a.shape} and {b.shape}")
    # Row-wise intersection sizes without Python loops over rows: sort and search.
    bs = np.sort(b, axis=1)
    hit = 0
    for j in range(a.shape[1]):
        col = a[:, j : j + 1]
        pos = np.clip((bs < col).sum(axis=1, keepdims=True), 0, bs.shape[1] - 1)
        hit += int(((np.take_along_axis(bs, pos, axis=1) == col) & (col >= 0)).sum())
    total = int((b >= 0).sum())
    return hit / total if total else 1.0
