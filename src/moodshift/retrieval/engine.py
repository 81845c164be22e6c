"""The query engine: one path from a seed and a target mood to ranked tracks.

Every consumer goes through :class:`QueryEngine`: ``moodshift query`` and
:class:`moodshift.retrieval.search.Searcher`, the HTTP API and the page, the
evaluation's ``query_default`` row and the sweep. It holds

* the model's numpy transform (:class:`moodshift.model.fast.NumpyTransform`);
* :class:`MoodEvidence`: what is known of each track's mood: its label where
  the catalogue (or the evaluation's visible fraction) has one, and the model's
  tagger probability p(mood | track) for every track;
* the evidence-aware ranking (docs/method.md, "Mood evidence").

Ranking, for a target mood t and the chosen evidence:

1. *Candidates* are the tracks whose evidence names t: labelled t, or (without a
   label) the tagger's most probable mood is t. They rank before every other
   track; the others only fill a list that the candidates cannot.
2. A labelled track scores ``cos(q_label, x)``; a track judged by the tagger
   scores ``cos(q_probe, x) + w log p(t | x)``, where ``q_label`` and
   ``q_probe`` are the transformed query at two strengths. The two strengths
   and the weight ``w`` are chosen on the validation split when training
   (``config.json`` -> ``evidence``).

``evidence`` selects the sources: ``auto`` (labels where known, the tagger
elsewhere), ``labels`` (labels only; unlabelled tracks are not candidates),
``probe`` (the tagger on every track; labels ignored), ``none`` (similarity to
the transformed query alone, as the paper retrieves: plain cosine, whatever the
model's ranking space).

The evidence modes compare the query and the tracks in the model's *ranking
space* (:mod:`moodshift.model.ranking`, chosen on validation): both pass through
the same map before the cosine, so a mood eraser or a learned space keeps the
candidates' own mood from steering the ranking.

How a batch is searched: up to :data:`EXACT_LIMIT` tracks, every track is
scored exactly (one matrix product per block of queries). Above it, queries are
grouped by target; a target whose candidates fit :data:`PARTITION_MAX_VALUES`
scores them exactly as one contiguous block (one product for the group), and
the others search the index per tier (an oversampled unfiltered search when the
tier is a good share of the catalogue, else the index's filtered search) and
re-rank the union exactly. Each query of a batch keeps its own strength, label
filter and seed exclusion, so a batch returns what its queries would alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from moodshift.errors import InputError
from moodshift.model.fast import EvidenceSettings, NumpyTransform
from moodshift.model.ranking import RankingSpace
from moodshift.values import l2_normalize

if TYPE_CHECKING:
    from moodshift.model.network import MoodshiftModel

log = logging.getLogger(__name__)

EVIDENCE_MODES = ("auto", "labels", "probe", "none")
#: Below this many tracks a query scores every track exactly; above, it goes
#: through the index and re-ranks the index's candidates.
EXACT_LIMIT = 50_000
#: Index candidates re-ranked per query and tier on large catalogues.
RERANK_DEPTH = 50
#: A mask with at least this share of the catalogue is searched by oversampling an
#: unfiltered index search (``OVERSAMPLE`` times the expected depth, at most
#: ``OVERSAMPLE_MAX`` rows); narrower masks use the index's filtered search.
OVERSAMPLE_MIN_FRACTION = 0.05
OVERSAMPLE = 2.0
OVERSAMPLE_MAX = 2048
#: A target's candidates (the tracks whose evidence names it) are kept as one
#: contiguous matrix and scored exactly, a batch of queries in one matrix product,
#: when the block holds at most this many values (rows x dimensions). A lone
#: query reads the whole block from memory, so the cap keeps that read (8 MB of
#: float32, ~0.5 ms) near the cost of an index search; larger blocks go through
#: the index.
PARTITION_MAX_VALUES = 1 << 21
#: All blocks together stay within this many bytes (they are copies, one set per
#: server process, unlike the memory-mapped catalogue and index).
PARTITION_BUDGET_BYTES = 256 << 20
#: Floor of p(t | x) in the log, so a zero probability is a large finite penalty.
MIN_PROBA = 1e-6
#: Queries scored together in the exact path (bounds the (q, n) score block).
QUERY_BLOCK = 512
#: One evidence mode's view of the tracks (:meth:`MoodEvidence.tiers`): candidate
#: class, log-probabilities (or None) and whether the label scores the track.
Tiers = tuple[np.ndarray, np.ndarray | None, np.ndarray]


def top_k(score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's ``k`` largest entries, best first.

    Ties keep column order (a stable sort), so the same scores always give the
    same ranking. ``-inf`` entries sort last; callers treat them as missing.

    Parameters
    ----------
    score : np.ndarray, shape (q, n)
    k : int
        At most ``n``.

    Returns
    -------
    cols : np.ndarray, shape (q, k), int64
    values : np.ndarray, shape (q, k)
    """
    n = score.shape[1]
    if k < n:
        cols = np.argpartition(-score, k - 1, axis=1)[:, :k]
    else:
        cols = np.broadcast_to(np.arange(n), score.shape).copy()
    values = np.take_along_axis(score, cols, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(values, order, axis=1)


# ---------------------------------------------------------------------- evidence
@dataclass
class MoodEvidence:
    """What is known of each track's mood.

    Parameters
    ----------
    labels : np.ndarray, shape (n,), int64
        Visible label as a model class index, ``-1`` where a track has none (or
        the label is hidden, as in ``evaluate --label-fraction``).
    proba : np.ndarray, shape (n, m), float32, optional
        The tagger's p(mood | track); without it only labels are evidence.
    """

    labels: np.ndarray
    proba: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self._cache: dict[str, Tiers] = {}
        self.predicted = None if self.proba is None else self.proba.argmax(axis=1)

    def __len__(self) -> int:
        return int(self.labels.size)

    def require(self, mode: str) -> None:
        if mode not in EVIDENCE_MODES:
            raise InputError(f"unknown evidence {mode!r}; use one of {', '.join(EVIDENCE_MODES)}.")
        if mode == "probe" and self.proba is None:
            raise InputError(
                "evidence 'probe' needs the model's mood tagger, and this model has none; "
                "retrain it with `moodshift train`, or use --evidence labels."
            )

    def tiers(self, mode: str) -> Tiers:
        """For one mode: candidate classes, log-probabilities and label use, per track.

        Returns
        -------
        candidate : np.ndarray, shape (n,), int64
            The class a track is a candidate for (``-1``: none).
        logp : np.ndarray, shape (n, m), float32, or None
            ``log p(class | track)`` for tracks judged by the tagger (0 elsewhere).
        by_label : np.ndarray, shape (n,), bool
            Whether the track is judged by its label (scored with ``q_label``).
        """
        self.require(mode)
        if mode in self._cache:
            return self._cache[mode]
        n = len(self)
        labelled = self.labels >= 0
        if mode == "labels" or (mode == "auto" and self.proba is None):
            by_label = labelled
            candidate = np.where(labelled, self.labels, -1)
            logp = None
        elif mode == "probe":
            assert self.predicted is not None and self.proba is not None
            by_label = np.zeros(n, dtype=bool)
            candidate = self.predicted.astype(np.int64)
            logp = np.log(np.maximum(self.proba, MIN_PROBA)).astype(np.float32)
        elif mode == "auto":
            assert self.predicted is not None and self.proba is not None
            by_label = labelled
            candidate = np.where(labelled, self.labels, self.predicted).astype(np.int64)
            logp = np.log(np.maximum(self.proba, MIN_PROBA)).astype(np.float32)
            logp[labelled] = 0.0
        else:  # none
            by_label = np.ones(n, dtype=bool)
            candidate = np.full(n, -1, dtype=np.int64)
            logp = None
        self._cache[mode] = (candidate, logp, by_label)
        return self._cache[mode]

    def describe(
        self, rows: np.ndarray, *, classes: list[str], mode: str = "auto"
    ) -> list[dict[str, Any]]:
        """Each track's mood and where it came from, for results.

        With ``mode="probe"`` the tagger's prediction is reported even where a
        label exists (it is what ranked the track); otherwise the label wins.

        Returns
        -------
        list of dict
            ``{"mood", "mood_source": "label" | "predicted" | None, "mood_probability"}``.
        """
        out = []
        for r in np.asarray(rows).tolist():
            lab = int(self.labels[r]) if mode != "probe" else -1
            p = None if self.proba is None else self.proba[r]
            if lab >= 0:
                out.append({"mood": classes[lab], "mood_source": "label",
                            "mood_probability": None})  # fmt: skip
            elif p is not None:
                c = int(p.argmax())
                out.append({"mood": classes[c], "mood_source": "predicted",
                            "mood_probability": round(float(p[c]), 4)})  # fmt: skip
            else:
                out.append({"mood": None, "mood_source": None, "mood_probability": None})
        return out


@dataclass(frozen=True)
class _Batch:
    """A batch of transformed queries and what ranking them needs (see :meth:`QueryEngine.search`).

    ``q_probe`` is None when one query vector scores every track (equal strengths).
    """

    q_label: np.ndarray  # (q, d)
    q_probe: np.ndarray | None  # (q, d)
    target: np.ndarray  # (q,) int64
    tiers: Tiers  # MoodEvidence.tiers(mode)
    w: float  # weight of log p(target | track)
    exclude: np.ndarray  # (q,) int64, -1 for none
    masks: list[np.ndarray | None] | None  # per query, None: no filter at all
    space: RankingSpace | None = None  # the space q_label / q_probe and the tracks rank in

    def __len__(self) -> int:
        return int(self.q_label.shape[0])

    def probe(self, i: int | np.ndarray) -> np.ndarray:
        """The tagger-scored query vector(s) of ``i``."""
        return (self.q_label if self.q_probe is None else self.q_probe)[i]

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks[i]

    def take(self, rows: np.ndarray) -> _Batch:
        """The queries ``rows`` of this batch, as a batch."""
        return _Batch(
            q_label=self.q_label[rows],
            q_probe=None if self.q_probe is None else self.q_probe[rows],
            target=self.target[rows], tiers=self.tiers, w=self.w, exclude=self.exclude[rows],
            masks=None if self.masks is None else [self.masks[i] for i in rows.tolist()],
            space=self.space,
        )  # fmt: skip


@dataclass
class _Partition:
    """One target's candidate tracks as a contiguous block (rows ascending)."""

    rows: np.ndarray  # (r,) int64, catalogue rows
    vectors: np.ndarray  # (r, d) float32, unit rows
    by_label: np.ndarray  # (r,) bool: scored with the label query
    logp: np.ndarray | None  # (r,) float32: log p(target | track), 0 where labelled


class UnitRows:
    """Unit-norm rows of a (memory-mapped) matrix, normalised on access.

    Large catalogues are searched through the index, and only the rows the
    index returns are re-ranked: this avoids a normalised copy of the whole matrix.
    """

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = embeddings
        self.shape = embeddings.shape

    def __getitem__(self, rows: Any) -> np.ndarray:
        return l2_normalize(np.asarray(self.embeddings[rows], dtype=np.float32))


# ---------------------------------------------------------------------- engine
class QueryEngine:
    """Answers "like this, but <mood>" for batches of seeds.

    Parameters
    ----------
    model : MoodshiftModel
    vectors : np.ndarray, shape (n, d), unit-norm
        The tracks retrieved from (may be a memory map).
    evidence : MoodEvidence
        One entry per row of ``vectors``.
    index : object, optional
        A :class:`moodshift.retrieval.search.VectorIndex` (FAISS or exact) used
        above :data:`EXACT_LIMIT` tracks; below it every track is scored exactly.
    settings : EvidenceSettings, optional
        Default: the model's (:meth:`EvidenceSettings.of`).
    artists : np.ndarray, shape (n,), int64, optional
        Artist code per track (``-1``: unknown, each such track its own artist),
        for ``max_per_artist``.
    ranking : RankingSpace or None or "model"
        The space queries and tracks are compared in (:mod:`moodshift.model.ranking`):
        ``"model"`` (default) the one chosen on validation and saved with the model,
        None the plain cosine of the raw embeddings.
    """

    def __init__(
        self,
        *,
        model: MoodshiftModel,
        vectors: np.ndarray,
        evidence: MoodEvidence,
        index: Any | None = None,
        settings: EvidenceSettings | None = None,
        exact_limit: int = EXACT_LIMIT,
        artists: np.ndarray | None = None,
        ranking: RankingSpace | str | None = "model",
    ) -> None:
        if len(evidence) != vectors.shape[0]:
            raise InputError(
                f"evidence for {len(evidence)} tracks but {vectors.shape[0]} vectors; "
                f"give one entry per track."
            )
        self.model = model
        self.classes = list(model.classes)
        self.vectors = vectors
        self.evidence = evidence
        self.index = index
        self.settings = settings or EvidenceSettings.of(model)
        self.exact = index is None or vectors.shape[0] <= exact_limit
        self.transform = NumpyTransform.build(model)
        self.artists = None if artists is None else np.asarray(artists, dtype=np.int64)
        if isinstance(ranking, str):
            if ranking != "model":
                raise InputError(f"ranking: a RankingSpace, None or 'model', not {ranking!r}.")
            ranking = model.ranking
        self.ranking: RankingSpace | None = ranking
        # An index built with the model (`moodshift index --model`) holds the tracks in its
        # ranking space; any other index holds raw embeddings, searched through the pullback.
        built_in = None if index is None else getattr(index, "meta", {}).get("ranking_space")
        self.index_space = (
            ranking if ranking is not None and built_in == ranking.fingerprint() else None
        )
        if index is not None and ranking is not None and self.index_space is None:
            log.info(
                "the index holds raw embeddings, not the model's ranking space: results are "
                "re-ranked exactly; rebuild it with `moodshift index --model` to search the space"
            )
        self._projected: np.ndarray | None = None
        self._mask_cache: dict[tuple, list[list[tuple[bool, np.ndarray, float]]]] = {}
        self._partitions: dict[tuple[int, int, int], _Partition | None] = {}
        self._partition_bytes = 0

    def set_evidence(self, evidence: MoodEvidence) -> None:
        """Rank with new evidence (after the user labelled tracks): the caches built on the
        old one are dropped, the tracks' vectors kept.

        Raises
        ------
        InputError
            If ``evidence`` is not one entry per track.
        """
        if len(evidence) != self.n:
            raise InputError(f"evidence for {len(evidence)} tracks but {self.n} vectors; "
                             f"give one entry per track.")  # fmt: skip
        # New dicts, not cleared ones: a search running in another thread keeps its own.
        self._mask_cache, self._partitions, self._partition_bytes = {}, {}, 0
        self.evidence = evidence

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    def _index_query(self, space: RankingSpace | None, vec: np.ndarray) -> np.ndarray:
        """The vector the index is searched with for query ``vec`` (given in ``space``).

        An index in the same space takes it as it is; an index of raw embeddings takes its
        pullback (same ranking up to each track's norm in the space, corrected by the
        exact re-rank). A plain-cosine query against an index in the model's space is
        approximate too (``evidence none`` on a large catalogue): the re-rank is exact.
        """
        if space is None or space is self.index_space:
            return vec
        return space.pullback(vec[None, :])[0]

    def _all_in(self, space: RankingSpace | None) -> np.ndarray:
        """Every track in ``space`` (the model's, or None): the exact path's matrix, made once."""
        if space is None:
            return self.vectors
        assert space is self.ranking
        if self._projected is None:
            self._projected = np.concatenate(
                [self.ranking.project(self.vectors[s : s + 65536]) for s in range(0, self.n, 65536)]
            ) if self.n else np.zeros((0, self.ranking.matrix.shape[1]), np.float32)  # fmt: skip
        return self._projected

    # ------------------------------------------------------------------ seeds
    def source_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source class of seed rows: the visible label, else the tagger's prediction.

        Returns
        -------
        source : np.ndarray, shape (q,), int64
        predicted : np.ndarray, shape (q,), bool
            True where the source came from the tagger.

        Raises
        ------
        InputError
            If a seed has no label and the model has no tagger.
        """
        rows = np.asarray(rows, dtype=np.int64)
        lab = self.evidence.labels[rows]
        missing = lab < 0
        if missing.any():
            if self.evidence.predicted is None:
                raise InputError(
                    "the seed has no mood label and the model has no tagger to predict one; "
                    "give the source mood, or retrain the model with `moodshift train`."
                )
            lab = np.where(missing, self.evidence.predicted[rows], lab)
        return lab.astype(np.int64), missing

    def seed_source(
        self, *, row: int, seed: np.ndarray, given: int | None = None
    ) -> tuple[int, str]:
        """One seed's source class and where it came from (``given``, ``label``, ``predicted``).

        In order: ``given`` (the caller's source mood), the row's visible label,
        the tagger's prediction for the row (or, for an outside seed with
        ``row = -1``, for ``seed`` itself).

        Raises
        ------
        InputError
            If neither a label nor a tagger can say it.
        """
        if given is not None:
            return int(given), "given"
        if row >= 0:
            src, predicted = self.source_of(np.array([row]))
            return int(src[0]), "predicted" if predicted[0] else "label"
        if self.model.tagger is None:
            raise InputError(
                f"with an embedding, give its source {self.model.attribute} "
                f"(one of {', '.join(self.classes)})."
            )
        return int(self.model.tagger.predict_proba(seed[None, :])[0].argmax()), "predicted"

    def strengths(self, *, evidence: str, strength: Any) -> tuple[Any, Any]:
        """The strengths of the label-scored and the tagger-scored queries.

        ``strength`` (a float, or one per query as an array of shape (q,))
        overrides both; ``evidence="none"`` uses the model's default strength
        (the paper's retrieval); otherwise the validation-chosen settings.

        Raises
        ------
        InputError
            If ``strength`` lies outside [0, 1].
        """
        if strength is not None and np.ndim(strength):
            arr = np.asarray(strength, dtype=np.float32)
            bad = arr[~((arr >= 0.0) & (arr <= 1.0))]
            if bad.size:
                raise InputError(f"strength must lie in [0, 1], got {float(bad[0])}.")
            return arr, arr
        if strength is not None:
            if not 0.0 <= float(strength) <= 1.0:
                raise InputError(f"strength must lie in [0, 1], got {strength}.")
            return float(strength), float(strength)
        if evidence == "none":
            return self.model.default_strength, self.model.default_strength
        return self.settings.strength_label, self.settings.strength_probe

    def queries(
        self,
        seeds: np.ndarray,
        *,
        source: np.ndarray,
        target: np.ndarray,
        evidence: str = "auto",
        strength: float | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The two query vectors (label-scored, tagger-scored), each shape (q, d).

        With ``strength`` given (one, or one per query), both use it;
        ``evidence="none"`` uses the model's default strength (the paper's retrieval).
        """
        s_label, s_probe = self.strengths(evidence=evidence, strength=strength)
        q_label = self.transform(seeds, source=source, target=target, strength=s_label)
        # The same object (not merely equal values) tells the search one query suffices.
        if s_probe is s_label or (np.ndim(s_label) == 0 and s_probe == s_label):
            return q_label, q_label
        return q_label, self.transform(seeds, source=source, target=target, strength=s_probe)

    # ------------------------------------------------------------------ search
    def search(
        self,
        seeds: np.ndarray,
        *,
        source: np.ndarray,
        target: np.ndarray,
        k: int,
        evidence: str = "auto",
        strength: float | np.ndarray | None = None,
        weight: float | None = None,
        exclude: np.ndarray | None = None,
        allowed: np.ndarray | Sequence[np.ndarray | None] | None = None,
        max_per_artist: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ranked rows for a batch of seeds.

        Parameters
        ----------
        seeds : np.ndarray, shape (q, d), unit-norm
        source, target : np.ndarray, shape (q,), int64
        k : int
        evidence : {"auto", "labels", "probe", "none"}
        strength : float or np.ndarray of shape (q,), optional
            Overrides both chosen strengths (one for all queries, or one each).
        weight : float, optional
            Overrides the chosen tagger weight.
        exclude : np.ndarray, shape (q,), int64, optional
            A row to leave out per query (the seed itself); ``-1`` for none.
        allowed : np.ndarray of shape (n,) or (q, n), bool, or a list of q such masks, optional
            Rows that may be returned (label filters), for all queries or per
            query (a ``None`` entry: no filter for that query).
        max_per_artist : int, optional
            At most this many results per artist (needs ``artists``); the list
            is filled from further down the ranking.

        Returns
        -------
        rows : np.ndarray, shape (q, k), int64
            ``-1`` pads a list that ``allowed`` leaves short.
        scores : np.ndarray, shape (q, k), float32
            The ranking score (cosine, plus ``w log p`` for tagger-judged tracks).
        query : np.ndarray, shape (q, d)
            The label-scored query vectors (in the embedding space, before the
            ranking space's map).
        """
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        seeds = np.atleast_2d(np.asarray(seeds, dtype=np.float32))
        q = seeds.shape[0]
        source = np.broadcast_to(np.asarray(source, dtype=np.int64), (q,))
        target = np.broadcast_to(np.asarray(target, dtype=np.int64), (q,))
        w = self.settings.weight if weight is None else float(weight)
        q_label, q_probe = self.queries(seeds, source=source, target=target, evidence=evidence,
                                        strength=strength)  # fmt: skip
        space = None if evidence == "none" else self.ranking
        r_label = _in_space(space, q_label)
        r_probe = None if q_probe is q_label else _in_space(space, q_probe)
        batch = _Batch(
            q_label=r_label, q_probe=r_probe, target=target,
            tiers=self.evidence.tiers(evidence), w=w,
            exclude=np.full(q, -1, dtype=np.int64) if exclude is None else (
                np.asarray(exclude, np.int64)),
            masks=self._masks(allowed, q), space=space,
        )  # fmt: skip
        run = self._exact if self.exact else self._indexed
        if max_per_artist is None or self.artists is None:
            rows, scores = run(batch, k)
            return rows, scores, q_label
        if max_per_artist < 1:
            raise InputError(f"max_per_artist must be >= 1, got {max_per_artist}.")
        # Fetch deeper until the capped list is full or the catalogue is exhausted.
        depth = k * 4
        while True:
            rows, scores = run(batch, min(depth, self.n))
            rows, scores, short = self._cap(rows, scores, k, max_per_artist)
            if not short or depth >= self.n:
                return rows, scores, q_label
            depth *= 4

    def _masks(self, allowed: Any, q: int) -> list[np.ndarray | None] | None:
        """``allowed`` as one (n,) mask or None per query; None when nothing is filtered."""
        if allowed is None:
            return None
        if isinstance(allowed, np.ndarray) and allowed.ndim == 1:
            allowed = [allowed] * q
        masks = [None if m is None else np.asarray(m, dtype=bool) for m in allowed]
        if len(masks) != q:
            raise InputError(f"{len(masks)} allowed masks for {q} queries; give one per query.")
        for m in masks:
            if m is not None and m.shape != (self.n,):
                raise InputError(
                    f"allowed mask has shape {m.shape}; expected ({self.n},), one per track."
                )
        return None if all(m is None for m in masks) else masks

    def warm(self, evidence: str = "auto") -> None:
        """Build the candidate partitions of ``evidence`` now rather than at the first query."""
        if self.exact or evidence == "none":
            return
        tiers = self.evidence.tiers(evidence)
        for t in range(len(self.classes)):
            self._partition(tiers, t, self.ranking)

    def _partition(
        self, tiers: Tiers, target: int, space: RankingSpace | None
    ) -> _Partition | None:
        """The candidates of ``target`` as one contiguous block, or None (too large, or none).

        Scoring a block is one matrix product for a whole batch of queries and is
        exact, where the index costs a search per query and a re-rank. Memory is
        bounded by :data:`PARTITION_MAX_VALUES` and :data:`PARTITION_BUDGET_BYTES`.
        """
        key = (id(tiers[0]), target, id(space))
        if key in self._partitions:
            return self._partitions[key]
        candidate, logp, by_label = tiers
        rows = np.flatnonzero(candidate == target)
        nbytes = rows.size * self.vectors.shape[1] * 4
        part = None
        if 0 < rows.size * self.vectors.shape[1] <= PARTITION_MAX_VALUES and (
            self._partition_bytes + nbytes <= PARTITION_BUDGET_BYTES
        ):
            part = _Partition(
                rows=rows,
                vectors=np.ascontiguousarray(_in_space(space, self.vectors[rows]), np.float32),
                by_label=by_label[rows],
                logp=None if logp is None else np.ascontiguousarray(logp[rows, target]),
            )
            self._partition_bytes += nbytes
        self._partitions[key] = part
        return part

    def _indexed(self, b: _Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Large catalogues: candidates scored exactly by partition, the rest by the index.

        Queries are grouped by target; each group scores its target's partition
        in one matrix product. A query whose candidates cannot fill ``k`` (or
        whose target has no partition) continues with :meth:`_by_index`.
        """
        out_r = np.full((len(b), k), -1, dtype=np.int64)
        out_s = np.zeros((len(b), k), dtype=np.float32)
        first: dict[int, np.ndarray] = {}
        rest: list[int] = []
        for t in np.unique(b.target).tolist():
            members = np.flatnonzero(b.target == t)
            part = self._partition(b.tiers, int(t), b.space)
            if part is None:
                rest.extend(members.tolist())
                continue
            for s in range(0, members.size, QUERY_BLOCK):
                g = members[s : s + QUERY_BLOCK]
                rows, scores = self._score_partition(part, b.take(g), k)
                out_r[g], out_s[g] = rows, scores
                for j in np.flatnonzero(rows[:, -1] < 0).tolist():
                    got = rows[j] >= 0
                    first[int(g[j])] = np.stack([rows[j][got], scores[j][got]])
        rest.extend(first)
        if rest:
            sub = np.asarray(sorted(rest), dtype=np.int64)
            r, sc = self._by_index(
                b.take(sub), k,
                first={j: first[i] for j, i in enumerate(sub.tolist()) if i in first},
            )  # fmt: skip
            out_r[sub], out_s[sub] = r, sc
        return out_r, out_s

    @staticmethod
    def _score_partition(part: _Partition, b: _Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of one partition for a group of queries, (g, k) rows and scores."""
        score = b.q_label @ part.vectors.T
        if b.q_probe is not None:
            score = np.where(part.by_label[None, :], score, b.q_probe @ part.vectors.T)
        if part.logp is not None and b.w != 0.0:
            score += b.w * part.logp[None, :]
        r = part.rows.size
        pos = np.minimum(np.searchsorted(part.rows, b.exclude), r - 1)
        hit = np.flatnonzero(part.rows[pos] == b.exclude)
        score[hit, pos[hit]] = -np.inf
        if b.masks is not None:
            _block_out(score, b.masks, cols=part.rows)
        k_eff = min(k, r)
        top, best = top_k(score, k_eff)
        valid = np.isfinite(best)
        rows = np.full((score.shape[0], k), -1, dtype=np.int64)
        scores = np.zeros((score.shape[0], k), dtype=np.float32)
        rows[:, :k_eff] = np.where(valid, part.rows[top], -1)
        scores[:, :k_eff] = np.where(valid, best, 0.0)
        return rows, scores

    def _cap(
        self, rows: np.ndarray, scores: np.ndarray, k: int, cap: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Keep at most ``cap`` rows per artist, in rank order; pad to ``k`` with -1."""
        assert self.artists is not None
        out_r = np.full((rows.shape[0], k), -1, dtype=np.int64)
        out_s = np.zeros((rows.shape[0], k), dtype=np.float32)
        short = False
        for i in range(rows.shape[0]):
            seen: dict[int, int] = {}
            j = 0
            for r, sc in zip(rows[i].tolist(), scores[i].tolist(), strict=True):
                if r < 0:
                    break
                a = int(self.artists[r])
                key = a if a >= 0 else -1 - r
                if seen.get(key, 0) >= cap:
                    continue
                seen[key] = seen.get(key, 0) + 1
                out_r[i, j], out_s[i, j] = r, sc
                j += 1
                if j == k:
                    break
            short |= j < k
        return out_r, out_s, short

    @staticmethod
    def _scores(
        sl: np.ndarray,
        sp: np.ndarray | None,
        target: np.ndarray,
        rows: np.ndarray | slice,
        tiers: Tiers,
        w: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and candidate flags of some rows, from the two similarity blocks (q, r)."""
        candidate, logp, by_label = tiers
        score = sl
        if sp is not None:
            score = np.where(by_label[rows][None, :], sl, sp)
        if logp is not None and w != 0.0:
            score = score + w * logp[rows][:, target].T
        cand = candidate[rows][None, :] == target[:, None]
        return score, cand

    def _exact(self, b: _Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every track scored: one product per block of queries, candidates ranked first."""
        k_eff = min(k, self.n)
        out_r = np.full((len(b), k), -1, dtype=np.int64)
        out_s = np.zeros((len(b), k), dtype=np.float32)
        x = self._all_in(b.space)
        # Candidates first: a tier offset larger than any score difference within a tier.
        span = 2.0 + b.w * float(-np.log(MIN_PROBA)) + 1.0
        for s in range(0, len(b), QUERY_BLOCK):
            sl_ = slice(s, s + QUERY_BLOCK)
            sim_l = b.q_label[sl_] @ x.T
            sim_p = None if b.q_probe is None else b.q_probe[sl_] @ x.T
            score, cand = self._scores(sim_l, sim_p, b.target[sl_], slice(None), b.tiers, b.w)
            key = np.where(cand, score, score - span).astype(np.float32)
            ex = b.exclude[sl_]
            has = np.flatnonzero(ex >= 0)
            key[has, ex[has]] = -np.inf
            if b.masks is not None:
                _block_out(key, b.masks[sl_])
            top, topk = top_k(key, k_eff)
            sc = np.take_along_axis(score, top, axis=1)
            valid = np.isfinite(topk)
            out_r[sl_, :k_eff] = np.where(valid, top, -1)
            out_s[sl_, :k_eff] = np.where(valid, sc, 0.0)
        return out_r, out_s

    def _by_index(
        self, b: _Batch, k: int, *, first: dict[int, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index search per tier and query vector, then an exact re-rank of the union.

        ``first`` holds, per query, its candidate tier already ranked (rows and
        scores, shape (2, j)); those queries only search the tiers after it.
        """
        assert self.index is not None
        # The index ranks raw embeddings: re-rank deeper when the exact score differs from it.
        depth = max(k, RERANK_DEPTH) if b.w != 0.0 or b.space is not self.index_space else k
        out_r = np.full((len(b), k), -1, dtype=np.int64)
        out_s = np.zeros((len(b), k), dtype=np.float32)
        two = b.q_probe is not None
        first = first or {}
        for i in range(len(b)):
            t = int(b.target[i])
            allowed = b.mask(i)
            got: list[np.ndarray] = []
            for tier, parts in enumerate(self._tier_masks(b.tiers, t, allowed, two=two)):
                if tier == 0 and i in first:
                    got.append(first[i])
                    continue
                rows = [
                    self._tier_search(self._index_query(b.space, b.probe(i) if use_probe else
                                                        b.q_label[i]), sub, frac,
                                      depth=depth, exclude=int(b.exclude[i]),
                                      filtered=allowed is not None)
                    for use_probe, sub, frac in parts
                    if frac > 0
                ]  # fmt: skip
                rows = [r for r in rows if r.size]
                if not rows:
                    continue
                cand_rows = np.unique(np.concatenate(rows))
                x = _in_space(b.space, self.vectors[cand_rows])
                sl = (b.q_label[i] @ x.T)[None, :]
                sp = (b.probe(i) @ x.T)[None, :] if two else None
                score, _ = self._scores(sl, sp, b.target[i : i + 1], cand_rows, b.tiers, b.w)
                order = np.argsort(-score[0], kind="stable")
                got.append(np.stack([cand_rows[order], score[0][order]]))
                if sum(g.shape[1] for g in got) >= k:
                    break
            if got:
                merged = np.concatenate(got, axis=1)[:, :k]
                out_r[i, : merged.shape[1]] = merged[0].astype(np.int64)
                out_s[i, : merged.shape[1]] = merged[1]
        return out_r, out_s

    def _tier_masks(
        self,
        tiers: Tiers,
        target: int,
        allowed: np.ndarray | None,
        *,
        two: bool,
    ) -> Iterable[list[tuple[bool, np.ndarray, float]]]:
        """Per tier (candidates, then the rest): (scored by the probe query?, mask, fraction).

        Without a filter the masks depend only on the evidence mode and the target,
        so they are computed once per (mode, target) and kept; with one, each tier's
        masks are made only when the search reaches it (most lists fill in the first).
        """
        key = (id(tiers[0]), target, two)
        if allowed is None and key in self._mask_cache:
            return self._mask_cache[key]
        candidate, _, by_label = tiers
        base = np.ones(self.n, dtype=bool) if allowed is None else allowed

        def parts(first: bool) -> list[tuple[bool, np.ndarray, float]]:
            mask = base & ((candidate == target) if first else (candidate != target))
            split = [(False, mask & by_label), (True, mask & ~by_label)] if two else [
                (False, mask)]  # fmt: skip
            return [(use_probe, m, np.count_nonzero(m) / self.n) for use_probe, m in split]

        if allowed is not None:
            return (parts(first) for first in (True, False))
        self._mask_cache[key] = [parts(True), parts(False)]
        return self._mask_cache[key]

    def _tier_search(
        self,
        vec: np.ndarray,
        sub: np.ndarray,
        frac: float,
        *,
        depth: int,
        exclude: int,
        filtered: bool,
    ) -> np.ndarray:
        """The ``depth`` nearest rows of ``sub`` (the seed left out), best first.

        A mask holding a good share of the catalogue is served by an unfiltered
        index search a few times deeper, keeping the rows in the mask: a filtered
        search over a quarter of a large catalogue is answered exactly, which costs
        far more. A narrow mask, or too few hits, falls back to the filtered search.
        """
        assert self.index is not None
        if frac >= OVERSAMPLE_MIN_FRACTION and not filtered:
            probe = min(self.n, int(np.ceil((depth + 1) / frac * OVERSAMPLE)))
            # Deeper once or twice before the filtered search: neighbourhoods are
            # rarely a fair sample of the catalogue's moods.
            while probe <= OVERSAMPLE_MAX:
                idx = self.index.search(vec[None, :], k=probe)[0]
                idx = idx[idx >= 0]
                idx = idx[sub[idx] & (idx != exclude)]
                if idx.size >= depth or probe >= self.n:
                    return idx[:depth]
                probe = min(self.n, probe * 4)
        mask = sub
        if exclude >= 0 and sub[exclude]:
            mask = sub.copy()
            mask[exclude] = False
        idx = self.index.search(vec[None, :], k=depth, allowed=mask)[0]
        return idx[idx >= 0]


def _in_space(space: RankingSpace | None, x: np.ndarray) -> np.ndarray:
    """Rows in ``space`` (unit-norm), or the rows themselves for the plain cosine."""
    return np.asarray(x, dtype=np.float32) if space is None else space.project(x)


def _block_out(
    score: np.ndarray, masks: list[np.ndarray | None], *, cols: np.ndarray | None = None
) -> None:
    """Set ``score[j, c]`` to -inf where query j's mask disallows column c (in place).

    ``cols`` maps the score's columns to catalogue rows (default: all rows). One mask
    shared by every query (an evaluation's filter) is applied once, not per query.
    """
    first = masks[0]
    if first is not None and all(m is first for m in masks):
        score[:, ~(first if cols is None else first[cols])] = -np.inf
        return
    for j, m in enumerate(masks):
        if m is not None:
            score[j, ~(m if cols is None else m[cols])] = -np.inf


def label_codes(catalog: Any, model: MoodshiftModel) -> np.ndarray:
    """Each track's label as a model class index (``-1``: none or unknown), case-insensitive.

    The one reading of a catalogue's mood cells: the query engine, the server and
    ``moodshift label`` all count a track as labelled by it.

    Returns
    -------
    np.ndarray, shape (n,), int64
    """
    attr = model.attribute
    if attr not in catalog.labels.columns:
        return np.full(len(catalog), -1, dtype=np.int64)
    lookup = {c.lower(): i for i, c in enumerate(model.classes)}
    values = catalog.labels[attr].fillna("").astype(str).str.strip().str.lower()
    return np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int64, count=len(values))


def catalog_evidence(
    catalog: Any, model: MoodshiftModel, *, proba: np.ndarray | None = None
) -> MoodEvidence:
    """The evidence of a whole catalogue: its labels and the model's tagger on every track.

    Parameters
    ----------
    catalog : Catalog
    model : MoodshiftModel
    proba : np.ndarray, shape (n, m), optional
        Stored tagger probabilities (e.g. from the index folder); computed when absent.

    Returns
    -------
    MoodEvidence
        A label the model does not know counts as no label (:func:`label_codes`).
    """
    labels = label_codes(catalog, model)
    if proba is None and model.tagger is not None:
        proba = model.mood_proba(catalog.embeddings, labels=labels)
    return MoodEvidence(labels=labels, proba=proba)


def artist_codes(catalog: Any) -> np.ndarray | None:
    """Artist code per track (``-1`` where unknown), or None without an artist column."""
    if "artist" not in catalog.labels.columns:
        return None

    values = catalog.labels["artist"].fillna("").astype(str).str.strip()
    codes, _ = pd.factorize(values.where(values != "", None))
    return codes.astype(np.int64)


def stored_proba(index: Any, model: MoodshiftModel) -> np.ndarray | None:
    """The index's stored tagger probabilities, if they were made by this model's tagger."""
    proba = getattr(index, "mood_proba", None)
    if proba is None or model.tagger is None:
        return None
    if getattr(index, "meta", {}).get("tagger") != model.evidence_fingerprint():
        log.info("the index's mood probabilities come from another tagger; recomputing them")
        return None
    if proba.shape[1] != len(model.classes):
        return None
    return proba
