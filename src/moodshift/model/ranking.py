"""Ranking spaces: where "like this, but <mood>" compares a query with the tracks.

The query engine ranks the target mood's candidates by the cosine between the
query and each track *after both pass through the same map*::

    project(x) = normalise(x @ matrix + offset)

The identity map is the paper's retrieval. A mood eraser removes what an embedding
says about its mood, so the candidates' own mood components stop pulling the
ranking toward tracks that sound like the seed's mood; a learned space
(:mod:`moodshift.training.metric`) goes further. Which space a model uses is
chosen on the validation split and stored with it (``ranking.safetensors``).

Erasers have the form (row vectors)::

    erase(x) = x - (1 - keep) * ((x - center) @ B) @ A.T

``A`` and ``B`` are (d, r) and ``A @ B.T`` is a projection of rank ``r`` (oblique
for LEACE). ``keep`` in [0, 1] is the strength knob: 0 removes the whole mood
component, 1 leaves the embedding as it is. Two ways to find the subspace, both
fitted on the training split only:

* ``centroid``: the span of the differences between the class centroids (m - 1
  directions), an orthogonal projection. The simplest concept eraser; INLP
  (Ravfogel et al., ACL 2020) removes such directions iteratively.
* ``leace``: LEACE, least-squares concept erasure (Belrose et al., NeurIPS 2023):
  with ``W`` the whitening of the covariance and ``Q`` an orthonormal basis of
  ``W @ cov(x, z)`` (z the one-hot mood), ``erase(x) = x - W^+ Q Q^T W (x - mean)``.
  After it no linear classifier predicts the mood better than a constant (the
  class-conditional means coincide), with the least mean squared change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from moodshift._finite import require_finite
from moodshift.errors import DataError, FileFormatError, InputError, one_line
from moodshift.values import l2_normalize

KINDS = ("centroid", "leace")
#: Eigenvalues below this share of the largest count as zero (a rank-deficient covariance:
#: dead ReLU units of an embedder, or fewer tracks than dimensions).
EIG_RTOL = 1e-6
#: Cross-mood pairs returned at most by :func:`cross_mood_pairs` (a seeded sample beyond it).
MAX_PAIRS = 200_000
#: Training tracks per class searched at most for mutual nearest neighbours.
MAX_PAIR_ROWS = 5_000


@dataclass(frozen=True)
class RankingSpace:
    """An affine map applied to the query and to every track before the cosine.

    Parameters
    ----------
    matrix : np.ndarray, shape (d, e), float32
    offset : np.ndarray, shape (e,), float32
    info : dict
        JSON-able description (``kind`` and its parameters), stored in ``config.json``.
    """

    matrix: np.ndarray
    offset: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    def fingerprint(self) -> str:
        """A hash of the map (an index built in this space records it)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.matrix, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.offset, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def project(self, x: np.ndarray) -> np.ndarray:
        """Unit vectors in the space, shape (n, e), for rows ``x`` of shape (n, d)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if x.shape[1] != self.dim:
            raise InputError(f"vectors of dimension {x.shape[1]}; this space takes {self.dim}.")
        return l2_normalize(x @ self.matrix + self.offset)

    def pullback(self, v: np.ndarray) -> np.ndarray:
        """Vectors ``u`` (q, d) with ``u @ x == v @ (x @ matrix + offset) + const``.

        An index over the raw embeddings searched with ``u`` ranks tracks as ``v``
        does in the space, up to each track's norm there (an exact re-rank follows).
        """
        return np.asarray(v, dtype=np.float32) @ self.matrix.T

    def save(self, path: str | Path) -> None:
        """Write ``matrix`` and ``offset`` to a safetensors file (the caller makes it atomic)."""

        save_file({"matrix": np.ascontiguousarray(self.matrix, dtype=np.float32),
                   "offset": np.ascontiguousarray(self.offset, dtype=np.float32)},
                  str(path))  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, *, dim: int, info: dict[str, Any]) -> RankingSpace:
        """Read a space written by :meth:`save`, checked against the model's dimension.

        Raises
        ------
        FileFormatError
            If the file is unreadable, misshapen or holds NaN or infinite values.
        """

        fix = "retrain the model with `moodshift train`, or delete the file to rank by plain cosine"
        try:
            arrays = load_file(str(path))
            matrix, offset = arrays["matrix"], arrays["offset"]
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise FileFormatError(
                f"{path} is not a readable ranking space ({one_line(exc)}); {fix}."
            ) from exc
        if matrix.ndim != 2 or matrix.shape[0] != dim or offset.shape != (matrix.shape[1],):
            raise FileFormatError(
                f"{path} holds a ranking space of shape {matrix.shape} for a {dim}-d model; {fix}."
            )
        require_finite(matrix, path=path, fix=fix, what="matrix")
        require_finite(offset, path=path, fix=fix, what="offset")
        return cls(matrix=matrix.astype(np.float32), offset=offset.astype(np.float32),
                   info=dict(info))  # fmt: skip


@dataclass(frozen=True)
class MoodEraser:
    """A fitted linear eraser (see the module docstring for the formula).

    Parameters
    ----------
    kind : {"centroid", "leace"}
    a, b : np.ndarray, shape (d, r), float32
    center : np.ndarray, shape (d,), float32
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    center: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])

    def space(self, *, keep: float = 0.0) -> RankingSpace:
        """The eraser at one strength as a :class:`RankingSpace`.

        Parameters
        ----------
        keep : float in [0, 1]
            Fraction of the mood component kept (0: full erasure, 1: the identity).
        """
        _check_keep(keep)
        d = self.a.shape[0]
        drop = np.float32(1.0 - keep)
        matrix = np.eye(d, dtype=np.float32) - drop * (self.b @ self.a.T)
        offset = drop * ((self.center @ self.b) @ self.a.T)
        info = {"kind": self.kind, "rank": self.rank, "keep": float(keep)}
        return RankingSpace(matrix=matrix, offset=offset.astype(np.float32), info=info)


def _check_keep(keep: float) -> None:
    if not 0.0 <= float(keep) <= 1.0:
        raise InputError(f"keep must lie in [0, 1], got {keep}.")


def _orthonormal(m: np.ndarray, *, rtol: float = EIG_RTOL) -> np.ndarray:
    """An orthonormal basis (d, r) of the columns of ``m`` (d, c), numerically rank-revealing."""
    if m.size == 0:
        return np.zeros((m.shape[0], 0), dtype=np.float64)
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    keep = s > (s.max() if s.size else 0.0) * np.sqrt(rtol)
    return u[:, keep]


def _checked(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(
            f"need x of shape (n, d) and labels of shape (n,); got {x.shape}, {y.shape}."
        )
    known = y >= 0
    classes = np.unique(y[known])
    if classes.size < 2:
        raise DataError(
            "fitting a mood eraser needs labelled tracks of at least two moods in the training "
            "split; label more tracks, or evaluate without the erasure rows."
        )
    return x[known], y[known], classes


def fit_centroid(x: np.ndarray, y: np.ndarray) -> MoodEraser:
    """Centroid-difference erasure: the span of ``c_k - c_0`` over the classes.

    Parameters
    ----------
    x : np.ndarray, shape (n, d)
        Unit-norm training embeddings.
    y : np.ndarray, shape (n,), int
        Class index per row (``-1``: unlabelled, ignored).
    """
    x, y, classes = _checked(x, y)
    cents = np.stack([x[y == c].mean(axis=0) for c in classes])
    u = _orthonormal((cents[1:] - cents[0]).T).astype(np.float32)
    return MoodEraser(kind="centroid", a=u, b=u.copy(), center=np.zeros(x.shape[1], np.float32))


def fit_leace(x: np.ndarray, y: np.ndarray) -> MoodEraser:
    """LEACE (Belrose et al., NeurIPS 2023), the closed form for a one-hot concept.

    Parameters
    ----------
    x : np.ndarray, shape (n, d)
    y : np.ndarray, shape (n,), int
        Class index per row (``-1``: unlabelled, ignored).
    """
    x, y, classes = _checked(x, y)
    mean = x.mean(axis=0)
    xc = x - mean
    z = (y[:, None] == classes[None, :]).astype(np.float64)
    cov = xc.T @ xc / x.shape[0]
    cross = xc.T @ (z - z.mean(axis=0)) / x.shape[0]  # (d, m)
    lam, vec = np.linalg.eigh(cov)
    ok = lam > lam.max() * EIG_RTOL
    lam, vec = lam[ok], vec[:, ok]
    w = (vec / np.sqrt(lam)) @ vec.T  # whitening on the covariance's support
    w_pinv = (vec * np.sqrt(lam)) @ vec.T
    q = _orthonormal(w @ cross)
    return MoodEraser(kind="leace", a=(w_pinv @ q).astype(np.float32),
                      b=(w @ q).astype(np.float32), center=mean.astype(np.float32))  # fmt: skip


def cross_mood_pairs(
    x: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Pairs of rows that should match across moods.

    With ``groups`` (a counterfactual group per row, ``""`` for none), every two
    rows of one group with different moods. Otherwise, for every two moods, the
    mutual nearest neighbours by cosine (each is the other's nearest track of
    the other mood).

    Parameters
    ----------
    x : np.ndarray, shape (n, d), unit-norm
    y : np.ndarray, shape (n,), int (``-1``: unlabelled, never paired)
    groups : np.ndarray of str, shape (n,), optional
    seed : int
        Seeds the row sample of large classes.

    Returns
    -------
    pairs : np.ndarray, shape (p, 2), int64
    source : {"groups", "mutual_nn"}
        Where they came from.
    """
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pairs: list[np.ndarray] = []
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        keep = (y >= 0) & (groups != "")
        order = np.flatnonzero(keep)
        by: dict[str, list[int]] = {}
        for i in order.tolist():
            by.setdefault(groups[i], []).append(i)
        within = [(a, b) for members in by.values() for j, a in enumerate(members)
                  for b in members[j + 1 :] if y[a] != y[b]]  # fmt: skip
        if within:
            pairs.append(np.array(within, dtype=np.int64))
    source = "groups" if pairs else "mutual_nn"
    if not pairs:
        classes = np.unique(y[y >= 0])
        rows = {}
        for c in classes.tolist():
            r = np.flatnonzero(y == c)
            if r.size > MAX_PAIR_ROWS:
                r = np.sort(rng.choice(r, MAX_PAIR_ROWS, replace=False))
            rows[c] = r
        for i, a in enumerate(classes.tolist()):
            for b in classes[i + 1 :].tolist():
                ra, rb = rows[a], rows[b]
                sims = np.asarray(x[ra], dtype=np.float32) @ np.asarray(x[rb], dtype=np.float32).T
                ab, ba = sims.argmax(axis=1), sims.argmax(axis=0)
                mutual = np.flatnonzero(ba[ab] == np.arange(ra.size))
                pairs.append(np.stack([ra[mutual], rb[ab[mutual]]], axis=1))
    out = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    if out.shape[0] > MAX_PAIRS:
        out = out[np.sort(rng.choice(out.shape[0], MAX_PAIRS, replace=False))]
    return out.astype(np.int64), source


def fit_eraser(kind: str, x: np.ndarray, y: np.ndarray) -> MoodEraser:
    """Fit an eraser of ``kind`` (:data:`KINDS`) on unit-norm training rows and their classes."""
    if kind == "centroid":
        return fit_centroid(x, y)
    if kind == "leace":
        return fit_leace(x, y)
    raise InputError(f"unknown eraser {kind!r}; use one of {', '.join(KINDS)}.")
