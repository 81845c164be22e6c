"""Per-class top-K cosine neighbours: the self-join behind the proxy targets.

For every track and every class, the K most cosine-similar tracks of that
class (the track itself excluded). Computed exactly by blocked matrix products
so memory stays bounded: a block of ``block`` queries against one class never
needs more than ``block * n_c`` similarities at once, and N = 10^6 never needs
an N x N matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from moodshift.errors import InputError


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
    """

    indices: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[2])


def _torch_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def class_topk(
    *,
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 100,
    n_classes: int | None = None,
    block: int | None = None,
    normalized: bool = False,
    device: str | None = None,
    progress: bool = False,
    memory_mb: float = 256.0,
) -> ClassNeighbors:
    """Exact per-class top-K cosine self-join.

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d)
    labels : np.ndarray, shape (n,), int
        Class index per row, in ``[0, n_classes)``.
    k : int
        List length; clamped (with a warning) to the largest class size minus one.
    block : int, optional
        Queries per block; by default chosen so a block's similarity matrix fits
        in ``memory_mb``.
    normalized : bool
        Set when rows are already unit-norm.
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"auto"``/None (CUDA when available).

    Returns
    -------
    ClassNeighbors
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(f"embeddings (n, d) and labels (n,) expected, got {x.shape}, {y.shape}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    m = int(n_classes if n_classes is not None else y.max() + 1)
    n = x.shape[0]
    counts_per_class = np.bincount(y, minlength=m)
    k_max = int(counts_per_class.max())
    if k > k_max - 1:
        warnings.warn(
            f"K={k} is larger than the largest class ({k_max} tracks); using K={k_max - 1}",
            stacklevel=2,
        )
        k = max(1, k_max - 1)
    small = [c for c in range(m) if 0 < counts_per_class[c] <= k]
    if small:
        warnings.warn(
            f"classes {small} have <= K={k} tracks: their lists hold every other track of the "
            f"class (K clamped per class)",
            stacklevel=2,
        )
    dev = _torch_device(device)
    xt = torch.from_numpy(x).to(dev)
    if not normalized:
        xt = torch.nn.functional.normalize(xt, dim=1)
    out_idx = np.full((n, m, k), -1, dtype=np.int64)
    out_sc = np.full((n, m, k), -np.inf, dtype=np.float32)
    out_cnt = np.zeros((n, m), dtype=np.int64)
    steps = []
    for c in range(m):
        members = np.flatnonzero(y == c)
        if members.size == 0:
            continue
        b = block or max(64, min(8192, int(memory_mb * 2**20 / 4 / max(members.size, 1))))
        steps.append((c, members, b))
    total = sum(math.ceil(n / b) for _, _, b in steps)
    bar = tqdm(total=total, desc="self-join", unit="block", disable=not progress, leave=False)
    with torch.inference_mode():
        for c, members, b in steps:
            cand = xt[torch.from_numpy(members).to(dev)]
            members_t = torch.from_numpy(members).to(dev)
            kc = min(k, members.size)
            for start in range(0, n, b):
                stop = min(n, start + b)
                sims = xt[start:stop] @ cand.T
                # Exclude self: a query that belongs to class c sits at its own position.
                rows = torch.arange(start, stop, device=dev)
                in_c = torch.from_numpy(y[start:stop] == c).to(dev)
                if bool(in_c.any()):
                    pos = torch.searchsorted(members_t, rows[in_c])
                    sims[torch.nonzero(in_c).squeeze(1), pos] = -torch.inf
                kk = min(kc, members.size)
                top = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
                idx = members_t[top.indices].cpu().numpy()
                sc = top.values.float().cpu().numpy()
                valid = np.isfinite(sc)
                idx[~valid] = -1
                out_idx[start:stop, c, :kk] = idx
                out_sc[start:stop, c, :kk] = sc
                out_cnt[start:stop, c] = valid.sum(axis=1)
                bar.update(1)
    bar.close()
    return ClassNeighbors(indices=out_idx, scores=out_sc, counts=out_cnt)


def brute_force_class_topk(
    *, embeddings: np.ndarray, labels: np.ndarray, k: int
) -> list[list[set[int]]]:
    """Reference implementation (full matrix, sets per list) used by tests on tiny data."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    m = int(labels.max()) + 1
    result = []
    for i in range(x.shape[0]):
        row = []
        for c in range(m):
            members = np.flatnonzero(labels == c)
            members = members[members != i]
            order = members[np.argsort(-sims[i, members], kind="stable")][:k]
            row.append(set(order.tolist()))
        result.append(row)
    return result
