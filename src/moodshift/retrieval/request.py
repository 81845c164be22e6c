"""One request -> answer path, shared by the library, the CLI and the server.

A query is a :class:`QueryRequest`. A :class:`Retriever` (one per catalogue and
model) checks it (:meth:`Retriever.prepare`: exactly one of track id or embedding, the
moods, the strength, the evidence, the filters), searches prepared queries together
(:meth:`Retriever.search`) and says which index served them. The front ends only
format the answer: :meth:`moodshift.retrieval.search.Searcher.query` (the library and
``moodshift query``) as :class:`~moodshift.retrieval.search.Result` objects, and
:meth:`moodshift.serving.state.ServingState.query_batch` as JSON.

:func:`open_artifacts` loads what both front ends start from: the catalogue, the model
(the one shipped with moodshift when none is given) and the index ``moodshift index``
built for the catalogue, with its stored p(mood | track).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.errors import InputError, NonFiniteQueryError, UnknownLabelError
from moodshift.model.default import describe_default, load_default_model
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.engine import (
    EVIDENCE_MODES,
    EXACT_LIMIT,
    QueryEngine,
    UnitRows,
    artist_codes,
    catalog_evidence,
    stored_proba,
)
from moodshift.retrieval.index import LabelPostings, catalog_postings, load_catalog_index
from moodshift.values import l2_normalize

#: What a search says served it when no index was given: every track scored exactly.
EXACT = "exact"


class BodyFieldError(InputError):
    """One field of a request is invalid (the server answers 422 naming the field)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg


class UnknownMoodError(UnknownLabelError):
    """A mood the model does not know, in the request field ``field``."""

    def __init__(self, *, field: str, value: str, known: list[str]) -> None:
        super().__init__(f"unknown {field.replace('_', ' ')} {value!r}; known: {', '.join(known)}")
        self.field = field
        self.known = known


class UnknownFilterError(BodyFieldError, UnknownLabelError):
    """A filter column or value the catalogue does not have (request field ``filters``)."""

    def __init__(self, msg: str) -> None:
        super().__init__("filters", msg)


@dataclass(frozen=True)
class QueryRequest:
    """ "Tracks like this seed, but in ``target_mood``": one query, before any check.

    Parameters
    ----------
    target_mood : str
        One of the model's classes.
    track_id : str, optional
        A catalogue track as the seed (give exactly one of it and ``embedding``).
    embedding : array-like, shape (d,), optional
        An outside seed (needs ``source_mood`` unless the model has a tagger).
    source_mood : str, optional
        Overrides the seed's label or predicted mood.
    k : int
        Results wanted.
    strength : float in [0, 1], optional
        Overrides the validation-chosen strengths.
    filters : mapping, optional
        Label column -> value or values: only tracks holding one of the values.
    evidence : {"auto", "labels", "probe", "none"}
        Mood evidence used in ranking (:mod:`moodshift.retrieval.engine`).
    max_per_artist : int, optional
        At most this many results per artist.
    """

    target_mood: str
    track_id: str | None = None
    embedding: Any = None
    source_mood: str | None = None
    k: int = 10
    strength: float | None = None
    filters: Mapping[str, str | Sequence[str]] | None = None
    evidence: str = "auto"
    max_per_artist: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> QueryRequest:
        """The request of a ``POST /query`` body (absent or null fields keep their defaults)."""
        given = {f.name: body[f.name] for f in fields(cls) if body.get(f.name) is not None}
        return cls(**given)


@dataclass
class PreparedQuery:
    """A checked query, ready to be searched alone or with others (:meth:`Retriever.search`)."""

    seed: np.ndarray
    row: int
    source: int
    target: int
    k: int
    strength: float | None
    #: The label-scored query's strength (the given one, else the chosen default).
    reported_strength: float
    evidence: str
    allowed: np.ndarray | None
    cap: int | None
    filters: dict[str, Any]
    #: Where the source mood came from: ``given``, ``label`` or ``predicted``.
    source_kind: str
    #: p(source mood | seed) when the source was predicted, else None.
    source_probability: float | None = None


@dataclass
class Artifacts:
    """A catalogue, a model and the catalogue's index (None when it has none)."""

    catalog: Catalog
    model: MoodshiftModel
    index: Any | None
    #: Which model serves: its folder, "given" (an object), or the default model's
    #: description (:func:`moodshift.model.default.describe_default`).
    model_source: str = "given"
    #: Whether no model was given, so the one shipped with moodshift serves.
    default_model: bool = False


def open_artifacts(
    *,
    catalog: Catalog | str | os.PathLike[str],
    model: MoodshiftModel | str | os.PathLike[str] | None = None,
    index: str | os.PathLike[str] | None = None,
) -> Artifacts:
    """Load and check what a query needs, as ``moodshift query`` and ``moodshift serve`` do.

    Parameters
    ----------
    catalog : Catalog or folder
        A folder is memory-mapped; its ``index/`` (from ``moodshift index``) is used.
    model : MoodshiftModel or folder, optional
        Default: the model shipped with moodshift (:mod:`moodshift.model.default`);
        :attr:`Artifacts.model_source` says which served.
    index : folder, optional
        An explicit index folder (must exist).

    Raises
    ------
    EmbedderMismatchError, DimensionMismatchError
        If the model was trained on another embedder than the catalogue's.
    StaleArtifactError
        If the index was built from another catalogue or embedder.
    DependencyError
        If no model is given and the shipped one is missing.
    """
    cat = catalog if isinstance(catalog, Catalog) else Catalog.load(catalog, mmap=True)
    if model is None:
        mdl, source = load_default_model(catalog=cat), describe_default()
    elif isinstance(model, MoodshiftModel):
        mdl, source = model, "given"
    else:
        mdl, source = MoodshiftModel.load(model), str(model)
    cat.check_compatible(mdl.embedder, what="model")
    catalog_path = None if isinstance(catalog, Catalog) else catalog
    idx = load_catalog_index(cat, catalog_path=catalog_path, path=index)
    return Artifacts(catalog=cat, model=mdl, index=idx, model_source=source,
                     default_model=model is None)  # fmt: skip


class Retriever:
    """Checks queries and searches them: the one request path of every front end.

    Parameters
    ----------
    catalog : Catalog
        The tracks retrieved from (all of them).
    model : MoodshiftModel
    index : FaissIndex or VectorIndex, optional
        Without one, every track is scored exactly. Its label postings serve the
        filters, and its stored p(mood | track) the evidence, when the model's tagger
        made them.
    proba : np.ndarray, shape (n, m), optional
        The tagger's p(mood | track), overriding the index's; computed when neither.

    Raises
    ------
    DimensionMismatchError, EmbedderMismatchError
        If the model was trained on another embedder than the catalogue's.
    InputError
        If the model cannot serve the catalogue (:meth:`MoodshiftModel.check_servable`,
        :meth:`MoodshiftModel.check_catalog`).
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        model: MoodshiftModel,
        index: Any | None = None,
        proba: np.ndarray | None = None,
    ) -> None:
        catalog.check_compatible(model.embedder, what="model")
        model.check_servable()
        model.check_catalog(catalog)
        self.catalog = catalog
        self.model = model
        self.n = len(catalog)
        self.dim = catalog.dim
        self.moods = list(model.classes)
        self._mood_index = {m: i for i, m in enumerate(self.moods)}
        self.index = index
        #: Which index served the searches: its kind (``flat``, ``hnsw``, ``ivf``) or "exact".
        self.index_kind = EXACT if index is None else getattr(index, "kind", type(index).__name__)
        postings = getattr(index, "postings", None)
        self.postings: LabelPostings = postings or catalog_postings(catalog)
        if proba is None:
            proba = stored_proba(index, model)
        self.evidence = catalog_evidence(catalog, model, proba=proba)
        # The exact path multiplies by the whole matrix; through an index only the rows it
        # returns are re-ranked, so a large catalogue needs no normalised copy.
        exact = index is None or self.n <= EXACT_LIMIT
        vectors = catalog.normalized if exact else UnitRows(catalog.embeddings)
        self.engine = QueryEngine(model=model, vectors=vectors, evidence=self.evidence,
                                  index=index, artists=artist_codes(catalog))  # fmt: skip

    def relabelled(self) -> None:
        """Serve the catalogue's current mood labels, e.g. after the user labelled tracks.

        The one place that rebuilds what depends on them: p(mood | track) refitted
        on the labels (the model's fused evidence learns from them), the engine's
        evidence and the label postings filters use. The catalogue's labels must
        already hold them (:func:`moodshift.retrieval.labelling.set_label`).
        """
        evidence = catalog_evidence(self.catalog, self.model)
        self.postings = catalog_postings(self.catalog)
        self.engine.set_evidence(evidence)
        self.evidence = evidence

    # ------------------------------------------------------------------ checks
    def mood_code(self, mood: str, *, field: str) -> int:
        """The class index of ``mood``.

        Raises
        ------
        UnknownMoodError
            Naming the request field and the known moods.
        """
        code = self._mood_index.get(mood)
        if code is None:
            raise UnknownMoodError(field=field, value=mood, known=self.moods)
        return code

    def allowed(self, filters: Mapping[str, str | Sequence[str]] | None) -> np.ndarray | None:
        """Rows holding, in every filtered column, one of its values (None: no filter).

        Raises
        ------
        UnknownLabelError
            For a column or value the catalogue does not have, naming the known ones.
        """
        return self.postings.mask(filters) if filters else None

    def seed_vector(self, embedding: Any) -> np.ndarray:
        """An outside seed's unit vector, shape (d,).

        Raises
        ------
        BodyFieldError
            ``embedding``: of another dimension, not finite, or all zeros.
        """
        # float64 until scaled: any finite JSON number is accepted, even above float32's range.
        vec = np.asarray(embedding, dtype=np.float64)
        if vec.ndim != 1 or vec.size != self.dim:
            raise BodyFieldError(
                "embedding",
                f"dimension mismatch: the catalogue's embeddings are {self.dim}-d but the "
                f"embedding has {vec.size} values; embed with the catalogue's embedder "
                f"({self.catalog.provenance.get('name')})",
            )
        if not np.isfinite(vec).all():
            raise BodyFieldError(
                "embedding", "embedding contains NaN or infinity; send finite numbers"
            )
        peak = float(np.max(np.abs(vec)))
        if peak == 0.0:
            raise BodyFieldError(
                "embedding", "embedding is all zeros; cosine similarity is undefined"
            )
        # Only the direction counts: scale by the largest entry first, so that the
        # norm neither overflows float32 (entries near 1e30) nor underflows (1e-40).
        return l2_normalize((vec / peak).astype(np.float32)[None, :])[0]

    def unit_row(self, row: int) -> np.ndarray:
        """A catalogue track's unit vector, shape (d,), read from the (mapped) matrix."""
        x = np.asarray(self.catalog.embeddings[row], dtype=np.float32)
        return x / max(math.sqrt(float(x @ x)), 1e-12)

    def prepare(self, request: QueryRequest) -> PreparedQuery:
        """Check one request and resolve its seed, moods, strength and filters.

        Raises
        ------
        BodyFieldError
            Naming the request field at fault; :class:`UnknownMoodError` and
            :class:`UnknownFilterError` (both :class:`UnknownLabelError`) for a mood,
            filter column or filter value the model or catalogue does not know.
        UnknownTrackError
            If ``track_id`` is not in the catalogue.
        """
        target = self.mood_code(request.target_mood, field="target_mood")
        if request.k is None or int(request.k) < 1:
            raise BodyFieldError("k", f"k must be >= 1, got {request.k}")
        evidence = request.evidence or "auto"
        if evidence not in EVIDENCE_MODES:
            raise BodyFieldError("evidence", f"evidence must be one of {', '.join(EVIDENCE_MODES)}")
        try:
            self.evidence.require(evidence)
        except InputError as exc:
            raise BodyFieldError("evidence", str(exc)) from None
        raw = request.strength
        try:  # here, so that a bad strength fails its own request, not its whole batch
            reported, _ = self.engine.strengths(evidence=evidence, strength=raw)
        except (InputError, TypeError, ValueError) as exc:
            raise BodyFieldError("strength", str(exc)) from None
        if (request.track_id is None) == (request.embedding is None):
            raise BodyFieldError("body", "give exactly one of track_id or embedding")
        if request.track_id is not None:
            row = self.catalog.index_of(request.track_id)
            seed = self.unit_row(row)
        else:
            row = -1
            seed = self.seed_vector(request.embedding)
        src = request.source_mood
        given = None if src is None else self.mood_code(src, field="source_mood")
        try:
            source, source_kind = self.engine.seed_source(row=row, seed=seed, given=given)
        except InputError as exc:
            raise BodyFieldError("source_mood", str(exc)) from None
        source_p = None
        if source_kind == "predicted":
            proba = self.evidence.proba
            p = (proba[row] if row >= 0 and proba is not None
                 else self.model.tagger.predict_proba(seed[None, :])[0])  # fmt: skip
            source_p = round(float(p[source]), 4)
        filters = dict(request.filters or {})
        try:
            allowed = self.allowed(filters)
        except UnknownLabelError as exc:
            raise UnknownFilterError(str(exc)) from None
        cap = request.max_per_artist
        return PreparedQuery(
            seed=seed, row=row, source=source, target=target, k=int(request.k),
            strength=None if raw is None else float(raw), reported_strength=float(reported),
            evidence=evidence, allowed=allowed, cap=None if cap is None else int(cap),
            filters=filters, source_kind=source_kind, source_probability=source_p,
        )  # fmt: skip

    # ------------------------------------------------------------------ search
    def search(
        self, prepared: Sequence[PreparedQuery]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | NonFiniteQueryError]:
        """Ranked rows of prepared queries; compatible ones share one engine search.

        Queries with the same evidence and artist cap are searched together, each with
        its own strength and filter: one batched transform and one batched search.

        Returns
        -------
        list
            Per query: ``rows`` (k,) int64 (``-1`` pads a list a filter leaves short),
            ``scores`` (k,) float32 and the label-scored query vector (d,); or, for a
            query whose vector became NaN or infinity (finite weights whose output
            overflowed float32 for this seed), the :class:`NonFiniteQueryError` to raise
            for that query alone (a 422, exit 2), never an answer built on NaN.
        """
        out: list[Any] = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault((p.evidence, p.strength is None, p.cap), []).append(i)
        for (evidence, default_strength, cap), members in groups.items():
            ps = [prepared[i] for i in members]
            strength = None if default_strength else np.array([p.strength for p in ps])
            rows, scores, qvecs = self.engine.search(
                np.stack([p.seed for p in ps]), source=np.array([p.source for p in ps]),
                target=np.array([p.target for p in ps]), k=max(p.k for p in ps),
                evidence=evidence, strength=strength, exclude=np.array([p.row for p in ps]),
                allowed=[p.allowed for p in ps], max_per_artist=cap,
            )  # fmt: skip
            for j, p in enumerate(ps):
                if not np.isfinite(qvecs[j]).all():
                    out[members[j]] = NonFiniteQueryError()
                    continue
                out[members[j]] = (rows[j][: p.k], scores[j][: p.k], qvecs[j])
        return out
