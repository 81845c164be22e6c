"""Exact cosine retrieval and the query API ("like this track, but <mood>").

:func:`topk_cosine` is the blocked brute-force search used by evaluation and by
small catalogues; :class:`Searcher` answers user queries against a catalogue
with a model, optionally through an approximate FAISS index
(:mod:`moodshift.retrieval.index`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from moodshift.data.catalog import Catalog, l2_normalize, parse_values
from moodshift.errors import InputError, UnknownLabelError
from moodshift.training.model import MoodshiftModel


def topk_cosine(
    queries: np.ndarray,
    pool: np.ndarray,
    *,
    k: int,
    exclude: np.ndarray | None = None,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``pool`` by inner product with each query (best first).

    Parameters
    ----------
    queries : np.ndarray, shape (q, d), unit-norm
    pool : np.ndarray, shape (n, d), unit-norm
    k : int
        Clamped to the pool size (minus one when ``exclude`` is given).
    exclude : np.ndarray, shape (q,), int, optional
        A pool row to leave out per query (the seed itself); ``-1`` for none.

    Returns
    -------
    indices : np.ndarray, shape (q, k), int64
    scores : np.ndarray, shape (q, k), float32
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    p = np.ascontiguousarray(pool, dtype=np.float32)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise InputError(f"queries {q.shape} and pool {p.shape} must be (q, d) and (n, d)")
    n = p.shape[0]
    excluding = exclude is not None and bool((np.asarray(exclude) >= 0).any())
    k = min(k, n - (1 if excluding else 0))
    if k < 1:
        raise InputError("the pool is too small to return any result")
    out_i = np.empty((q.shape[0], k), dtype=np.int64)
    out_s = np.empty((q.shape[0], k), dtype=np.float32)
    for s in range(0, q.shape[0], block):
        sims = q[s : s + block] @ p.T
        if exclude is not None:
            ex = np.asarray(exclude[s : s + block])
            rows = np.flatnonzero(ex >= 0)
            sims[rows, ex[rows]] = -np.inf
        if k < n:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), sims.shape).copy()
        ps = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        out_i[s : s + block] = np.take_along_axis(part, order, axis=1)
        out_s[s : s + block] = np.take_along_axis(ps, order, axis=1)
    return out_i, out_s


class VectorIndex(Protocol):
    """What :class:`Searcher` needs from an index (exact or FAISS)."""

    def search(
        self, queries: np.ndarray, *, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ExactIndex:
    """Brute-force inner-product search over unit-norm rows, with row filtering."""

    vectors: np.ndarray

    def search(
        self, queries: np.ndarray, *, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            return topk_cosine(queries, self.vectors, k=k)
        rows = np.flatnonzero(allowed)
        if rows.size == 0:
            return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)
        idx, sc = topk_cosine(queries, self.vectors[rows], k=min(k, rows.size))
        return rows[idx], sc


@dataclass
class Result:
    """One retrieved track."""

    track_id: str
    score: float
    labels: dict[str, Any]
    rank: int


@dataclass
class Searcher:
    """Answers "like this, but <mood>" against a catalogue.

    Parameters
    ----------
    catalog : Catalog
        The tracks to retrieve from (all of them: serving uses the whole catalogue).
    model : MoodshiftModel
    index : VectorIndex, optional
        Defaults to exact search; see :func:`moodshift.retrieval.index.build_index`.
    """

    catalog: Catalog
    model: MoodshiftModel
    index: VectorIndex | None = None
    _label_cache: dict[str, list[frozenset[str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.catalog.check_compatible(self.model.embedder, what="model")
        if self.index is None:
            self.index = ExactIndex(self.catalog.normalized)

    def transform(
        self,
        *,
        track_id: str | None = None,
        embedding: np.ndarray | None = None,
        source_mood: str | None = None,
        target_mood: str,
        strength: float | None = None,
    ) -> tuple[np.ndarray, int]:
        """The query vector (unit-norm, shape (d,)) and the seed's row (or -1)."""
        if (track_id is None) == (embedding is None):
            raise InputError("give exactly one of track_id or embedding")
        self.model.class_index(target_mood)
        if track_id is not None:
            row = self.catalog.index_of(track_id)
            vec = self.catalog.normalized[row]
            src = str(self.catalog.labels[self.model.attribute].iat[row])
        else:
            row = -1
            vec = l2_normalize(np.asarray(embedding, dtype=np.float32).reshape(1, -1))[0]
            if source_mood is None:
                raise InputError(
                    f"with an embedding, give its source {self.model.attribute} "
                    f"(one of {', '.join(self.model.classes)})."
                )
            src = source_mood
        return self.model.transform(vec, source=src, target=target_mood, strength=strength), row

    def allowed_mask(self, filters: Mapping[str, str | list[str]] | None) -> np.ndarray | None:
        """Rows whose labels contain every requested value (None: no filter)."""
        if not filters:
            return None
        mask = np.ones(len(self.catalog), dtype=bool)
        for col, wanted in filters.items():
            if col not in self.catalog.labels.columns:
                raise UnknownLabelError(
                    f"unknown filter column {col!r}; columns: {self.catalog.label_columns()}."
                )
            if col not in self._label_cache:
                self._label_cache[col] = self.catalog.value_sets(col)
            values = {wanted} if isinstance(wanted, str) else set(wanted)
            sets = self._label_cache[col]
            mask &= np.fromiter((bool(values & s) for s in sets), dtype=bool, count=len(sets))
        return mask

    def query(
        self,
        *,
        target_mood: str,
        track_id: str | None = None,
        embedding: np.ndarray | None = None,
        source_mood: str | None = None,
        k: int = 10,
        strength: float | None = None,
        filters: Mapping[str, str | list[str]] | None = None,
    ) -> tuple[list[Result], np.ndarray]:
        """Ranked results (the seed itself excluded) and the query vector."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        vec, row = self.transform(
            track_id=track_id, embedding=embedding, source_mood=source_mood,
            target_mood=target_mood, strength=strength,
        )  # fmt: skip
        allowed = self.allowed_mask(filters)
        if row >= 0:
            allowed = np.ones(len(self.catalog), dtype=bool) if allowed is None else allowed.copy()
            allowed[row] = False
        assert self.index is not None
        idx, sc = self.index.search(vec[None, :], k=k, allowed=allowed)
        results = []
        cols = [
            *self.catalog.label_columns(),
            *(c for c in ("title", "artist", "group") if c in self.catalog.labels.columns),
        ]
        for rank, (i, s) in enumerate(zip(idx[0], sc[0], strict=True)):
            if i < 0:
                continue
            rec = self.catalog.labels.iloc[int(i)]
            labels = {c: _label_value(c, rec[c]) for c in cols}
            results.append(Result(str(rec["track_id"]), float(s), labels, rank + 1))
        return results, vec


def _label_value(column: str, value: Any) -> Any:
    if column in ("genre", "instruments"):
        return sorted(parse_values(value))
    return "" if value is None else str(value)
