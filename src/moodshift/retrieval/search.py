"""Exact cosine retrieval and the query API ("like this track, but <mood>").

:func:`topk_cosine` is the blocked brute-force search used by evaluation and by
small catalogues; :class:`Searcher` answers user queries against a catalogue
with a model through the request layer (:mod:`moodshift.retrieval.request`),
optionally through an approximate FAISS index (:mod:`moodshift.retrieval.index`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.errors import InputError, NonFiniteQueryError
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.engine import top_k
from moodshift.retrieval.playlist import describe_journey, mood_journey
from moodshift.retrieval.request import Artifacts, QueryRequest, Retriever, open_artifacts
from moodshift.values import parse_values


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
class Answer:
    """The answer to one query: its results, the seed's source mood and what served it.

    Attributes
    ----------
    results : list of Result
        Best first, at most ``k``; each says where its mood came from.
    query : np.ndarray, shape (d,)
        The query vector that scored labelled tracks.
    source_mood : str
        The seed's mood the query moved away from.
    source_mood_source : {"given", "label", "predicted"}
        Where it came from: the caller, the seed's label, the model's tagger.
    target_mood : str
    strength : float
        The label-scored query's strength (the given one, else the chosen default).
    index : str
        The index that served the search: ``flat``, ``hnsw``, ``ivf`` (from
        ``moodshift index``) or ``exact`` (no index: every track scored).
    """

    results: list[Result]
    query: np.ndarray
    source_mood: str
    source_mood_source: str
    target_mood: str
    strength: float
    index: str


class Searcher:
    """Answers "like this, but <mood>" against a catalogue, through the request layer.

    Parameters
    ----------
    catalog : Catalog
        The tracks to retrieve from (all of them: serving uses the whole catalogue).
    model : MoodshiftModel
    index : VectorIndex, optional
        Default: every track scored exactly; :meth:`open` takes the catalogue's index
        (``moodshift index``) as the server does.
    proba : np.ndarray, shape (n, m), optional
        The tagger's p(mood | track) for the catalogue; default: the index's stored one
        (``moodshift index --model``) when this model's tagger made it, else computed.

    Raises
    ------
    DimensionMismatchError
        If the model was trained on another embedder than the catalogue's.
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        model: MoodshiftModel,
        index: VectorIndex | None = None,
        proba: np.ndarray | None = None,
    ) -> None:
        self.catalog = catalog
        self.model = model
        #: What :meth:`open` opened (which model served, :class:`Artifacts`); None otherwise.
        self.artifacts: Artifacts | None = None
        self.retriever = Retriever(catalog=catalog, model=model, index=index, proba=proba)
        self.engine = self.retriever.engine
        columns = [
            *catalog.label_columns(),
            *(c for c in ("title", "artist", "group", "audio_path") if c in catalog.labels),
        ]
        # Plain arrays: a pandas row lookup per result cost more than the search itself.
        self._columns = {c: catalog.labels[c].to_numpy(dtype=object) for c in columns}
        self._track_ids = catalog.labels["track_id"].astype(str).to_numpy(dtype=object)

    @classmethod
    def open(
        cls,
        *,
        catalog: Catalog | str | os.PathLike[str],
        model: MoodshiftModel | str | os.PathLike[str] | None = None,
        index: str | os.PathLike[str] | None = None,
    ) -> Searcher:
        """A searcher over a saved catalogue and model, through the catalogue's index.

        As ``moodshift serve`` starts: :func:`moodshift.retrieval.request.open_artifacts`
        (the checks, the default model when none is given, the index from ``moodshift
        index`` with its stored p(mood | track)); :attr:`artifacts` keeps what it opened.
        """
        art = open_artifacts(catalog=catalog, model=model, index=index)
        searcher = cls(catalog=art.catalog, model=art.model, index=art.index)
        searcher.artifacts = art
        return searcher

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
    ) -> Answer:
        """Tracks like the seed, but in ``target_mood``, best first (the seed excluded).

        The parameters are :class:`moodshift.retrieval.request.QueryRequest`'s.

        Returns
        -------
        Answer

        Raises
        ------
        InputError, UnknownLabelError, UnknownTrackError
            On a bad argument, an unknown mood, filter column or value, an unknown track.
        """
        request = QueryRequest(
            target_mood=target_mood, track_id=track_id, embedding=embedding,
            source_mood=source_mood, k=k, strength=strength, filters=filters,
            evidence=evidence, max_per_artist=max_per_artist,
        )  # fmt: skip
        p = self.retriever.prepare(request)
        (found,) = self.retriever.search([p])
        if isinstance(found, NonFiniteQueryError):
            raise found
        rows, scores, qvec = found
        keep = rows >= 0
        idx, sc = rows[keep], scores[keep]
        moods = self.engine.evidence.describe(idx, classes=self.model.classes, mode=p.evidence)
        results = []
        for rank, (i, s, m) in enumerate(zip(idx.tolist(), sc.tolist(), moods, strict=True), 1):
            labels = {c: _label_value(c, values[i]) for c, values in self._columns.items()}
            results.append(Result(self._track_ids[i], s, labels, rank, **m))
        return Answer(
            results=results, query=qvec, source_mood=self.model.classes[p.source],
            source_mood_source=p.source_kind, target_mood=self.model.classes[p.target],
            strength=p.reported_strength, index=self.retriever.index_kind,
        )  # fmt: skip

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
