"""Evaluation protocol (docs/method.md, "Evaluation") and the paper-style results table.

For every seed of the evaluated part and every target class other than its
own: build a query (model or baseline), retrieve by cosine among that part's
tracks with the seed itself excluded, and score with :mod:`moodshift.evaluation.metrics`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.errors import DataError, InputError
from moodshift.evaluation import baselines, metrics
from moodshift.model.network import MoodshiftModel
from moodshift.model.ranking import MoodEraser, RankingSpace
from moodshift.model.tagger import fit_tagger
from moodshift.retrieval.engine import MoodEvidence, QueryEngine
from moodshift.retrieval.search import topk_cosine

METHODS = (
    "model", "query_default", "random", "seed_nn", "mood_shift", "mood_centroid",
    "tagger_filter", "probe_direction", "oracle_top1", "oracle_rand100",
    "erasure_label", "leace_label", "erasure_tagger", "leace_tagger",
)  # fmt: skip
#: The concept-erasure rows: name -> (eraser kind, mood filter). They rank the filter's
#: tracks by cosine after erasing the mood from both sides (``baselines.erased_filter``).
ERASURE_METHODS = {
    "erasure_label": ("centroid", "label"), "leace_label": ("leace", "label"),
    "erasure_tagger": ("centroid", "tagger"), "leace_tagger": ("leace", "tagger"),
}  # fmt: skip
KS = (1, 5, 10)


@dataclass
class QuerySet:
    """Every (seed, target) pair scored: seeds are rows of the evaluated pool."""

    seeds: np.ndarray
    source: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return int(self.seeds.size)


def make_queries(
    pool_classes: np.ndarray,
    *,
    n_classes: int,
    max_seeds: int | None = None,
    rng: np.random.Generator | None = None,
) -> QuerySet:
    """Each labelled seed paired with each class other than its own (optionally a sample).

    Unlabelled tracks (class ``-1``) are never seeds: their source is unknown.

    Parameters
    ----------
    pool_classes : np.ndarray of int, shape (n,)
        Class of each pool track, -1 where unlabelled.
    n_classes : int
        Number of classes m.
    max_seeds : int, optional
        Use a random sample of this many seeds (sorted); default every labelled track.
    rng : np.random.Generator, optional
        For the sample (default seed 0).

    Returns
    -------
    QuerySet
        ``seeds``, ``source``, ``target``, each of shape (Q,) with
        Q = seeds x (m - 1).
    """
    seeds = np.flatnonzero(np.asarray(pool_classes) >= 0)
    if max_seeds is not None and seeds.size > max_seeds:
        rng = rng or np.random.default_rng(0)
        seeds = np.sort(rng.choice(seeds, size=max_seeds, replace=False))
    s = np.repeat(seeds, n_classes - 1)
    src = pool_classes[s]
    offs = np.tile(np.arange(1, n_classes), seeds.size)
    tgt = (src + offs) % n_classes
    return QuerySet(seeds=s, source=src, target=tgt)


class RetrievalEvaluator:
    """Scores ranked results against the labels of one catalogue part.

    Like a sentence-transformers evaluator, calling it returns a dict of figures
    with a ``primary`` entry (the trade-off score used to pick checkpoints):
    ``primary = min(mood_p@1 / mood_target, 1) + mean(preservation@1)``. Mood
    success counts until it reaches ``mood_target``; past that only
    preservation of the other labels (genre P@1, instrument J@1, ...) counts.

    Parameters
    ----------
    pool : Catalog
        The tracks retrieved from (e.g. the test split alone).
    attribute : str
    classes : list of str
        The model's vocabulary; every pool track's attribute must be in it.
    """

    def __init__(
        self,
        pool: Catalog,
        *,
        attribute: str = "mood",
        classes: Sequence[str] | None = None,
        ks: Sequence[int] = KS,
        max_seeds: int | None = None,
        mood_target: float = 0.9,
        seed: int = 0,
        label_fraction: float = 1.0,
    ) -> None:
        if not 0.0 <= label_fraction <= 1.0:
            raise InputError(f"label fraction must lie in [0, 1], got {label_fraction}.")
        self.pool = pool
        self.label_fraction = float(label_fraction)
        self.seed = seed
        self.attribute = attribute
        # An evaluated part may hold a single track of some class: it can still be a seed.
        vocab, y = pool.classes(attribute, min_count=1)
        if classes is not None:
            unknown = sorted(set(vocab) - set(classes))
            if unknown:
                raise DataError(
                    f"the catalogue has {attribute} values {unknown} the model does not know "
                    f"(model: {list(classes)}); retrain on this catalogue."
                )
            lookup = {c: i for i, c in enumerate(classes)}
            y = np.array([lookup[vocab[v]] if v >= 0 else -1 for v in y], dtype=np.int64)
            vocab = list(classes)
        self.classes = list(vocab)
        self.y = y
        self.ks = tuple(ks)
        self.k_max = max(self.ks)
        if len(pool) <= self.k_max:
            raise DataError(
                f"the evaluated part has {len(pool)} tracks; need more than k={self.k_max}."
            )
        self.mood_target = mood_target
        self.x = pool.normalized
        self.raw = pool.embeddings
        self.queries = make_queries(
            y, n_classes=len(self.classes), max_seeds=max_seeds, rng=np.random.default_rng(seed)
        )
        self.preserved = [c for c in pool.label_columns() if c != attribute]
        self.label_sets = {c: pool.value_sets(c) for c in self.preserved}
        self.ids = pool.track_ids.astype(str)
        self.counterfactual = self._counterfactuals()

    def visible_labels(self, label_fraction: float | None = None) -> np.ndarray:
        """Pool labels a query may read: a seeded random ``label_fraction`` of them.

        Parameters
        ----------
        label_fraction : float in [0, 1], optional
            Default: the evaluator's own.

        Returns
        -------
        np.ndarray, shape (n_pool,), int64
            The class index where visible, ``-1`` where hidden or unlabelled.
            Scoring always uses the true labels (:attr:`y`).
        """
        frac = self.label_fraction if label_fraction is None else float(label_fraction)
        if frac >= 1.0:
            return self.y.copy()
        rng = np.random.default_rng([self.seed, 0x1ABE1])
        shown = rng.random(self.y.size) < frac
        return np.where(shown, self.y, -1)

    def engine(
        self,
        model: MoodshiftModel,
        *,
        label_fraction: float | None = None,
        ranking: RankingSpace | str | None = "model",
    ) -> QueryEngine:
        """The query engine over this pool (with the model's tagger), seeing the visible labels.

        Parameters
        ----------
        model : MoodshiftModel
        label_fraction : float in [0, 1], optional
            Default: the evaluator's own.
        ranking : RankingSpace or None or "model"
            The space queries rank in (default: the model's own).
        """
        visible = self.visible_labels(label_fraction)
        # Raw embeddings: the fused evidence's tag head reads them unnormalised.
        proba = None if model.tagger is None else model.mood_proba(self.raw, labels=visible)
        evidence = MoodEvidence(labels=visible, proba=proba)
        return QueryEngine(model=model, vectors=self.x, evidence=evidence, ranking=ranking)

    def engine_results(
        self,
        engine: QueryEngine,
        *,
        evidence: str = "auto",
        strength: float | None = None,
        weight: float | None = None,
    ) -> np.ndarray:
        """Ranked pool rows (Q, k_max) of the engine, exactly as a user's queries get them.

        The seed's source mood is its visible label, else the tagger's prediction.
        """
        q = self.queries
        source, _ = engine.source_of(q.seeds)
        rows, _, _ = engine.search(
            self.x[q.seeds], source=source, target=q.target, k=self.k_max, evidence=evidence,
            strength=strength, weight=weight, exclude=q.seeds,
        )  # fmt: skip
        return rows

    def _counterfactuals(self) -> np.ndarray | None:
        """Pool row of the seed's group-mate in the target class (-1: none), or None."""
        if "group" not in self.pool.labels.columns:
            return None
        groups = self.pool.labels["group"].astype(str).to_numpy()
        if (groups == "").all():
            return None
        where = {(g, int(c)): i for i, (g, c) in enumerate(zip(groups, self.y, strict=True))}
        q = self.queries
        return np.array(
            [where.get((groups[s], int(t)), -1) for s, t in zip(q.seeds, q.target, strict=True)],
            dtype=np.int64,
        )

    # ---------------------------------------------------------------- retrieval
    def retrieve(self, queries: np.ndarray) -> np.ndarray:
        """Top-k pool rows for query vectors (one per pair), the seed excluded.

        Parameters
        ----------
        queries : np.ndarray, shape (Q, d)
            One query vector per (seed, target) pair of :attr:`queries`.

        Returns
        -------
        np.ndarray of int, shape (Q, k_max)
            Pool rows, best first.
        """
        idx, _ = topk_cosine(queries, self.x, k=self.k_max, exclude=self.queries.seeds)
        return idx

    def score(self, rows: np.ndarray) -> dict[str, float]:
        """Metrics of ranked pool rows.

        A row may end in ``-1`` entries when a method had fewer than ``k_max``
        candidates (an oracle on a small class): that query's list is the part
        before them, scored over the results it has (rule in
        :mod:`moodshift.evaluation.metrics`). ``-1`` may only trail a list.

        Parameters
        ----------
        rows : np.ndarray of int, shape (Q, k_max)
            Ranked pool rows per query, never the query's seed; ``-1`` may trail.

        Returns
        -------
        dict of str to float
            Every figure of :func:`moodshift.evaluation.metrics.evaluate` at every k,
            ``cf@k`` where the pool has groups, and ``primary``.

        Raises
        ------
        InputError
            When ``rows`` has the wrong shape, holds a query's own seed, or a
            ``-1`` before a result.
        """
        q = self.queries
        if rows.shape != (len(q), self.k_max):
            raise InputError(f"expected results of shape {(len(q), self.k_max)}, got {rows.shape}")
        if np.any(rows == q.seeds[:, None]):
            raise InputError("a seed was returned as its own result; exclude it")
        if np.any(rows < -1) or np.any(rows >= len(self.pool)):
            raise InputError(f"result rows must lie in 0..{len(self.pool) - 1} (or -1 for none)")
        valid = rows >= 0
        lengths = valid.sum(axis=1)
        if np.any(valid != (np.arange(self.k_max)[None, :] < lengths[:, None])):
            raise InputError("a result list has -1 before a real row; -1 may only end a list")
        lists = [r[:m].tolist() for r, m in zip(rows, lengths.tolist(), strict=True)]
        target = q.target.tolist()
        y = self.y.tolist()
        retrieved_attr = [[y[j] for j in r] for r in lists]
        seed_labels = {c: [s[i] for i in q.seeds] for c, s in self.label_sets.items()}
        retrieved = {c: [[s[j] for j in r] for r in lists] for c, s in self.label_sets.items()}
        cf = self.counterfactual
        out = metrics.evaluate(
            target=target, retrieved_attribute=retrieved_attr, seed_labels=seed_labels,
            retrieved_labels=retrieved, ks=self.ks, attribute=self.attribute,
        )  # fmt: skip
        if cf is not None and (cf >= 0).any():
            has = cf >= 0
            cf_lists = [lst for lst, h in zip(lists, has.tolist(), strict=True) if h]
            for k in self.ks:
                out[f"cf@{k}"] = metrics.counterfactual_hit(cf[has].tolist(), cf_lists, k=k)
        out["primary"] = self.primary(out)
        return out

    def primary(self, scores: dict[str, float]) -> float:
        """``min(mood_p@1 / mood_target, 1) + mean(preservation@1)`` (the class docstring).

        Parameters
        ----------
        scores : dict of str to float
            A :meth:`score` result.

        Returns
        -------
        float
        """
        mood = scores[f"{self._attr_name()}_p@1"]
        keep = [scores[k] for k in self.preservation_keys() if k in scores]
        return float(min(mood / self.mood_target, 1.0) + (np.mean(keep) if keep else 0.0))

    def preservation_keys(self, k: int = 1) -> list[str]:
        """Names of the preservation figures at ``k`` (``genre_p@k``, ``inst_j@k``, ...).

        Parameters
        ----------
        k : int

        Returns
        -------
        list of str
            One per preserved label column.
        """
        keys = []
        for c in self.preserved:
            keys.append(
                {"instruments": f"inst_j@{k}", "genre": f"genre_p@{k}"}.get(c, f"{c}_p@{k}")
            )
        return keys

    def _attr_name(self) -> str:
        return "mood" if self.attribute == "mood" else self.attribute

    def __call__(self, model: MoodshiftModel, *, strength: float = 1.0) -> dict[str, float]:
        """Score a model's queries at ``strength`` (:meth:`score` of :meth:`model_queries`)."""
        return self.score(self.retrieve(self.model_queries(model, strength=strength)))

    def model_queries(self, model: MoodshiftModel, *, strength: float = 1.0) -> np.ndarray:
        """The model's query vector for every (seed, target) pair.

        Parameters
        ----------
        model : MoodshiftModel
        strength : float in [0, 1]

        Returns
        -------
        np.ndarray, shape (Q, d)
        """
        q = self.queries
        return model.transform(self.x[q.seeds], source=q.source, target=q.target, strength=strength)


@dataclass
class Report:
    """Figures per method, plus what was evaluated."""

    methods: dict[str, dict[str, float]]
    n_queries: int
    catalog: str = ""
    model: str = ""
    part: str = "test"
    extras: dict[str, Any] = field(default_factory=dict)
    queries: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    results: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The figures (without ``primary``), what was evaluated, and the extras.

        Returns
        -------
        dict
            JSON-ready.
        """
        out: dict[str, Any] = {
            "methods": {
                m: {k: v for k, v in s.items() if k != "primary"} for m, s in self.methods.items()
            },
            "n_queries": self.n_queries,
            "catalog": self.catalog,
            "model": self.model,
            "part": self.part,
        }
        out.update(self.extras)
        return out


def baseline_results(
    ev: RetrievalEvaluator,
    *,
    centroids: np.ndarray,
    big_k: int = 100,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    tagger: Any = None,
    nuisance: np.ndarray | None = None,
    erasers: dict[str, MoodEraser] | None = None,
) -> dict[str, np.ndarray]:
    """Ranked pool rows of every training-free baseline.

    Parameters
    ----------
    ev : RetrievalEvaluator
    centroids : np.ndarray, shape (m, d)
        Training-split class centroids in ``ev``'s class order
        (:func:`moodshift.evaluation.baselines.training_centroids`).
    big_k : int
        Depth of Oracle Rand-K (its result is named ``oracle_rand{big_k}``).
    seed : int
        Seed of the random baselines.
    methods : sequence of str
        Baselines to run (names of :data:`METHODS`; others, like ``model``, are ignored).
    tagger : MoodTagger, optional
        Needed by ``tagger_filter`` and ``probe_direction`` (skipped without it).
    nuisance : np.ndarray, shape (r, d), optional
        Directions ``probe_direction`` keeps (:func:`baselines.nuisance_directions`).
    erasers : dict of str to MoodEraser, optional
        Fitted on the training split (:func:`baselines.training_erasers`); needed by
        the rows of :data:`ERASURE_METHODS` (skipped without them, or without a
        tagger for the ``_tagger`` rows).

    Returns
    -------
    dict of str to np.ndarray
        Pool rows per method, each of shape (Q, k_max).
    """
    q = ev.queries
    rng = np.random.default_rng(seed)
    seeds = ev.x[q.seeds]
    makers: dict[str, Callable[[], np.ndarray]] = {
        "random": lambda: baselines.random_results(
            n_pool=len(ev.pool), exclude=q.seeds, k=ev.k_max, rng=rng),
        "seed_nn": lambda: ev.retrieve(baselines.seed_nn(seeds)),
        "mood_shift": lambda: ev.retrieve(baselines.mood_shift(
            seeds, source=q.source, target=q.target, centroids=centroids)),
        "mood_centroid": lambda: ev.retrieve(
            baselines.mood_centroid(q.target, centroids=centroids)),
        "oracle_top1": lambda: baselines.oracle_topk(
            seeds, target=q.target, pool=ev.x, pool_labels=ev.y, exclude=q.seeds, k=ev.k_max),
        f"oracle_rand{big_k}": lambda: baselines.oracle_rand(
            seeds, target=q.target, pool=ev.x, pool_labels=ev.y, exclude=q.seeds, k=ev.k_max,
            big_k=big_k, rng=rng),
    }  # fmt: skip

    @functools.cache
    def pool_proba() -> np.ndarray:  # one tagger pass for every row that reads it
        return tagger.predict_proba(ev.x)

    if tagger is not None:
        makers["tagger_filter"] = lambda: baselines.tagger_filter(
            seeds, target=q.target, pool=ev.x, proba=pool_proba(), exclude=q.seeds, k=ev.k_max,
        )  # fmt: skip
        makers["probe_direction"] = lambda: ev.retrieve(baselines.probe_direction(
            seeds, source=q.source, target=q.target, mood_weights=tagger.weight,
            nuisance=nuisance if nuisance is not None else np.zeros((0, ev.x.shape[1])),
            scale=baselines.centroid_scale(centroids),
        ))  # fmt: skip
    for name, (kind, source) in ERASURE_METHODS.items():
        if erasers is None or kind not in erasers or (source == "tagger" and tagger is None):
            continue
        space = erasers[kind].space(keep=0.0)
        makers[name] = lambda space=space, source=source: baselines.erased_filter(
            seeds,
            target=q.target,
            pool=ev.x,
            space=space,
            exclude=q.seeds,
            k=ev.k_max,
            **({"pool_labels": ev.y} if source == "label" else {"proba": pool_proba()}),
        )
    wanted = [m if m != "oracle_rand100" else f"oracle_rand{big_k}" for m in methods]
    return {m: makers[m]() for m in wanted if m in makers}


def evaluate_catalog(
    catalog: Catalog,
    *,
    model: MoodshiftModel | None = None,
    part: str = "test",
    methods: Sequence[str] = METHODS,
    ks: Sequence[int] = KS,
    big_k: int = 100,
    seed: int = 0,
    max_seeds: int | None = None,
    attribute: str | None = None,
    label_fraction: float = 1.0,
    evidence: str = "auto",
) -> Report:
    """Run the protocol on one split of ``catalog``: the model and every baseline.

    Every labelled track of the part is a seed, paired with every other class;
    retrieval is among all the part's tracks (unlabelled ones included, which
    never count as any mood), with the seed excluded.

    Parameters
    ----------
    catalog : Catalog
        With a stored split.
    model : MoodshiftModel, optional
        Without one only the training-free baselines run (a tagger is then
        fitted on the training split for ``tagger_filter``/``probe_direction``).
    part : {"test", "val", "train"}
        The split evaluated.
    methods : sequence of str
        Rows of the report (:data:`METHODS`); ``model`` adds
        ``model_default_strength`` when the model's default strength is not 1.
    ks : sequence of int
        Cut-offs of the metrics.
    big_k : int
        K of ``oracle_rand<K>``.
    seed : int
        Seeds the random baselines, the seed sample and the visible labels.
    max_seeds : int, optional
        Evaluate a seeded sample of this many seeds.
    attribute : str, optional
        The transformed label column (default: the model's, else ``mood``).
    label_fraction : float in [0, 1]
        The fraction of the part's tracks whose labels queries may read
        (``query_default``; the oracles always read them). Scoring always uses
        the true labels.
    evidence : {"auto", "labels", "probe", "none"}
        The evidence of the ``query_default`` row.

    Returns
    -------
    Report
        ``methods`` maps each row to its figures (``mood_p@k``, ``genre_p@k``,
        ``inst_j@k``, ``cf@k``, ...); ``extras["label_fraction"]`` records F.

    Raises
    ------
    DataError
        If the part is too small, or holds moods the model does not know.
    DimensionMismatchError
        If the model was trained on another embedder.
    """
    attribute = attribute or (model.attribute if model else "mood")
    if model is not None:
        catalog.check_compatible(model.embedder, what="model")
        model.check_catalog(catalog, strict=True)  # refuse before any work
    pool = catalog.subset(catalog.split_indices(part))
    classes = model.classes if model is not None else None
    ev = RetrievalEvaluator(
        pool, attribute=attribute, classes=classes, ks=ks, max_seeds=max_seeds, seed=seed,
        label_fraction=label_fraction,
    )  # fmt: skip
    centroids = baselines.training_centroids(catalog, attribute=attribute, classes=ev.classes)
    tagger = model.tagger if model is not None else None
    wants_probe = {"tagger_filter", "probe_direction", "erasure_tagger", "leace_tagger"} & set(
        methods
    )
    # query_default uses the model's own tagger (or none), as `moodshift query` does.
    if tagger is None and wants_probe:
        tagger = fit_tagger(catalog, attribute=attribute, classes=ev.classes, seed=seed)
    nuisance = None
    if "probe_direction" in methods:
        nuisance = baselines.training_nuisance(catalog, columns=ev.preserved)
    erasers = None
    if set(ERASURE_METHODS) & set(methods):
        erasers = baselines.training_erasers(catalog, attribute=attribute, classes=ev.classes)
    results: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for name in methods:
        t0 = time.perf_counter()
        if name == "model":
            if model is None:
                continue
            results[name] = ev.retrieve(ev.model_queries(model))
            # The strength chosen on validation is what queries get by default: show it too.
            if model.default_strength != 1.0:
                results["model_default_strength"] = ev.retrieve(
                    ev.model_queries(model, strength=model.default_strength)
                )
        elif name == "query_default":
            if model is None:
                continue
            # Exactly what `moodshift query` does with this model (its own tagger or none).
            results[name] = ev.engine_results(ev.engine(model), evidence=evidence)
        else:
            results.update(baseline_results(ev, centroids=centroids, big_k=big_k, seed=seed,
                                            methods=[name], tagger=tagger,
                                            nuisance=nuisance, erasers=erasers))  # fmt: skip
        timings[name] = time.perf_counter() - t0
    scores = {name: ev.score(rows) for name, rows in results.items()}
    return Report(
        methods=scores,
        n_queries=len(ev.queries),
        part=part,
        extras={"seconds": timings, "label_fraction": float(label_fraction),
                "evidence": evidence},
        queries={"seeds": ev.queries.seeds, "source": ev.queries.source,
                 "target": ev.queries.target},
        results=results,
    )  # fmt: skip


def format_table(report: Report, *, k_values: Sequence[int] = (1, 10)) -> str:
    """The paper-style table: methods x metrics, as plain text.

    Parameters
    ----------
    report : Report
    k_values : sequence of int
        The cut-offs shown.

    Returns
    -------
    str
    """
    first = next(iter(report.methods.values()))
    cols = [c for k in k_values for c in first if c.endswith(f"@{k}") and c != "primary"]
    width = max(len(m) for m in report.methods) + 2
    header = "method".ljust(width) + "".join(c.rjust(max(10, len(c) + 2)) for c in cols)
    lines = [header, "-" * len(header)]
    for name, s in report.methods.items():
        row = name.ljust(width) + "".join(
            f"{s.get(c, float('nan')):.3f}".rjust(max(10, len(c) + 2)) for c in cols
        )
        lines.append(row)
    lines.append(f"({report.n_queries} queries on the {report.part} split)")
    return "\n".join(lines)
