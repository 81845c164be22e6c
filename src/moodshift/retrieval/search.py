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
from moodshift.errors import (
    DimensionMismatchError,
    InputError,
    NonFiniteQueryError,
    UnknownLabelError,
)
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.engine import (
    QueryEngine,
    artist_codes,
    catalog_evidence,
    stored_proba,
    top_k,
)


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
        out_i[s : s + block], out_s[s : s + block] = top_k(sims, k)
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
    """One retrieved track.

    ``mood_source`` says where ``labels[attribute]`` came from: ``"label"`` (the
    catalogue's), or ``"predicted"`` (the model's tagger, with ``mood_probability``).
    """

    track_id: str
    score: float
    labels: dict[str, Any]
    rank: int
    mood: str | None = None
    mood_source: str | None = None
    mood_probability: float | None = None


@dataclass
class Searcher:
    """Answers "like this, but <mood>" against a catalogue, through the query engine.

    Parameters
    ----------
    catalog : Catalog
        The tracks to retrieve from (all of them: serving uses the whole catalogue).
    model : MoodshiftModel
    index : VectorIndex, optional
        Defaults to exact search; see :func:`moodshift.retrieval.index.build_index`.
    proba : np.ndarray, shape (n, m), optional
        The tagger's p(mood | track) for the catalogue (stored by ``moodshift index
        --model``); computed when absent.

    Raises
    ------
    DimensionMismatchError
        If the model was trained on another embedder than the catalogue's.
    """

    catalog: Catalog
    model: MoodshiftModel
    index: VectorIndex | None = None
    proba: np.ndarray | None = None
    _label_cache: dict[str, list[frozenset[str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.catalog.check_compatible(self.model.embedder, what="model")
        if self.index is None:
            self.index = ExactIndex(self.catalog.normalized)
        proba = self.proba if self.proba is not None else stored_proba(self.index, self.model)
        self.engine = QueryEngine(
            model=self.model,
            vectors=self.catalog.normalized,
            evidence=catalog_evidence(self.catalog, self.model, proba=proba),
            index=self.index,
            artists=artist_codes(self.catalog),
        )

    def seed(
        self,
        *,
        track_id: str | None = None,
        embedding: np.ndarray | None = None,
        source_mood: str | None = None,
    ) -> tuple[np.ndarray, int, int, bool]:
        """The seed's unit vector (d,), row (-1 for an embedding), source class, predicted?

        The source mood is, in order: ``source_mood`` when given, the seed's
        label, the tagger's prediction.

        Raises
        ------
        InputError
            If neither or both of ``track_id`` and ``embedding`` are given, or an
            embedding comes without a source mood and the model has no tagger.
        UnknownTrackError
            If ``track_id`` is not in the catalogue.
        """
        if (track_id is None) == (embedding is None):
            raise InputError("give exactly one of track_id or embedding")
        if track_id is not None:
            row = self.catalog.index_of(track_id)
            vec = self.catalog.normalized[row]
        else:
            row = -1
            vec = l2_normalize(np.asarray(embedding, dtype=np.float32).reshape(1, -1))[0]
            if vec.shape[0] != self.model.dim:
                raise DimensionMismatchError(
                    f"dimension mismatch: the model takes {self.model.dim}-d embeddings, got "
                    f"{vec.shape[0]}-d; embed with the catalogue's embedder."
                )
        given = None if source_mood is None else self.model.class_index(source_mood)
        src, kind = self.engine.seed_source(row=row, seed=vec, given=given)
        return vec, row, src, kind == "predicted"

    def transform(
        self,
        *,
        track_id: str | None = None,
        embedding: np.ndarray | None = None,
        source_mood: str | None = None,
        target_mood: str,
        strength: float | None = None,
    ) -> tuple[np.ndarray, int]:
        """The transformed query vector (unit-norm, shape (d,)) and the seed's row (or -1)."""
        target = self.model.class_index(target_mood)
        vec, row, src, _ = self.seed(track_id=track_id, embedding=embedding,
                                     source_mood=source_mood)  # fmt: skip
        s = self.model.default_strength if strength is None else strength
        return self.engine.transform(vec, source=src, target=target, strength=s), row

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
        evidence: str = "auto",
        max_per_artist: int | None = None,
    ) -> tuple[list[Result], np.ndarray]:
        """Tracks like the seed, but in ``target_mood``, best first (the seed excluded).

        Parameters
        ----------
        target_mood : str
            One of the model's classes.
        track_id : str, optional
            A catalogue track as the seed (or give ``embedding``).
        embedding : np.ndarray, shape (d,), optional
            An outside seed (needs ``source_mood`` unless the model has a tagger).
        source_mood : str, optional
            Overrides the seed's label or predicted mood.
        k : int
            Results wanted.
        strength : float in [0, 1], optional
            Overrides the validation-chosen strengths.
        filters : mapping, optional
            Label column -> value(s): only tracks holding one of the values.
        evidence : {"auto", "labels", "probe", "none"}
            Mood evidence used in ranking (see :mod:`moodshift.retrieval.engine`).
        max_per_artist : int, optional
            At most this many results per artist.

        Returns
        -------
        results : list of Result
            At most ``k``; each says where its mood came from.
        query : np.ndarray, shape (d,)
            The query vector that scored labelled tracks.

        Raises
        ------
        InputError, UnknownLabelError, UnknownTrackError
            On a bad argument, an unknown mood or filter column, an unknown track.
        """
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        target = self.model.class_index(target_mood)
        self.engine.evidence.require(evidence)
        vec, row, src, _ = self.seed(track_id=track_id, embedding=embedding,
                                     source_mood=source_mood)  # fmt: skip
        allowed = self.allowed_mask(filters)
        rows, scores, qvec = self.engine.search(
            vec[None, :], source=np.array([src]), target=np.array([target]), k=k,
            evidence=evidence, strength=strength, exclude=np.array([row]), allowed=allowed,
            max_per_artist=max_per_artist,
        )  # fmt: skip
        if not np.isfinite(qvec).all():
            raise NonFiniteQueryError()
        keep = rows[0] >= 0
        idx, sc = rows[0][keep], scores[0][keep]
        moods = self.engine.evidence.describe(idx, classes=self.model.classes, mode=evidence)
        cols = [
            *self.catalog.label_columns(),
            *(c for c in ("title", "artist", "group", "audio_path") if c in self.catalog.labels),
        ]
        results = []
        for rank, (i, s, m) in enumerate(zip(idx, sc, moods, strict=True), start=1):
            rec = self.catalog.labels.iloc[int(i)]
            labels = {c: _label_value(c, rec[c]) for c in cols}
            results.append(Result(str(rec["track_id"]), float(s), labels, rank, **m))
        return results, qvec[0]

    def playlist(
        self,
        *,
        track_id: str,
        to: str,
        length: int = 12,
        via: str | None = None,
        max_per_artist: int | None = 1,
    ) -> list[dict[str, Any]]:
        """A mood-journey playlist from ``track_id``'s mood to ``to``.

        See :func:`moodshift.retrieval.playlist.mood_journey` for the rules.

        Returns
        -------
        list of dict
            ``track_id, artist, title, mood, mood_source, mood_probability,
            strength, p_target, audio_path`` (the real path, or None when the track has no
            audio file inside the catalogue's audio root) and ``audio_left_out`` (True when
            it has an ``audio_path`` that is outside the root or not a file) per item.
        """
        from moodshift.retrieval.playlist import describe_journey, mood_journey

        target = self.model.class_index(to)
        via_i = None if via is None else self.model.class_index(via)
        items = mood_journey(self.engine, seed_row=self.catalog.index_of(track_id),
                             target=target, length=length, via=via_i,
                             max_per_artist=max_per_artist)  # fmt: skip
        labels = self.catalog.labels
        out = []
        for it, entry in zip(items, describe_journey(self.engine, items), strict=True):
            rec = labels.iloc[it.row]
            audio = self.catalog.audio_file(it.row)  # None outside the audio root
            out.append({
                "track_id": str(rec["track_id"]),
                "artist": str(rec["artist"]) if "artist" in labels else None,
                "title": str(rec["title"]) if "title" in labels else None,
                **entry,
                "audio_path": None if audio is None else str(audio),
                "audio_left_out": audio is None and self.catalog.audio_path(it.row) is not None,
            })  # fmt: skip
        return out


def _label_value(column: str, value: Any) -> Any:
    if column in ("genre", "instruments"):
        return sorted(parse_values(value))
    return "" if value is None else str(value)
