"""Trade-off curves: every method as mood success against what it keeps of the seed.

Changing the mood is easy (jump to the target mood's centroid) and keeping
everything else is easy (return the seed's neighbours); a single number per
method hides where a method sits between the two. :func:`run_sweep` turns each
method into a curve by moving its one knob:

- ``model``: the trained transformation at strength ``s`` in [0, 1] (slerp
  between the seed and the model's output, :meth:`MoodshiftModel.transform`);
- ``mood_shift``: the centroid shift ``x_s + alpha * (c(y_t) - c(y_s))`` for
  ``alpha`` in [0, 2] (:func:`moodshift.evaluation.baselines.mood_shift`);
- ``centroid_interp``: slerp from the seed (``t = 0``) to the target mood's
  centroid (``t = 1``) (:func:`moodshift.evaluation.baselines.centroid_interp`);
- ``oracle_top1`` and ``oracle_rand100``: single points (they read the labels);
- the concept-erasure rows (``erasure_label``, ``leace_label``, ``erasure_tagger``,
  ``leace_tagger``): the fraction ``keep`` of the mood component left in the seed
  and the tracks, in [0, 1] (``keep = 0`` is the ``evaluate`` row, ``keep = 1`` the
  plain filter) (:func:`moodshift.evaluation.baselines.erased_filter`).

Each point holds Mood P@1, Genre P@1, Instrument J@1 and CF@1 (``None`` where
the catalogue lacks the label or the ``group`` column). Each method also gets
its best preservation at Mood P@1 >= 0.9 and >= 0.95 (:func:`best_at_level`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from moodshift.data.catalog import Catalog
from moodshift.errors import SweepError
from moodshift.evaluation import baselines
from moodshift.evaluation.evaluate import ERASURE_METHODS, RetrievalEvaluator, baseline_results
from moodshift.model.network import MoodshiftModel
from moodshift.model.tagger import fit_tagger

#: Figures stored per curve point (``None`` when the catalogue cannot score one).
POINT_KEYS = ("mood_p@1", "genre_p@1", "inst_j@1", "cf@1")
#: Preservation figures summarised "at mood level".
PRESERVATION_KEYS = ("genre_p@1", "inst_j@1", "cf@1")
LEVELS = (0.9, 0.95)
DEFAULT_STRENGTHS = tuple(np.round(np.linspace(0.0, 1.0, 21), 4).tolist())
DEFAULT_ALPHAS = tuple(np.round(np.linspace(0.0, 2.0, 21), 4).tolist())
DEFAULT_TS = tuple(np.round(np.linspace(0.0, 1.0, 21), 4).tolist())
DEFAULT_KEEPS = tuple(np.round(np.linspace(0.0, 1.0, 11), 4).tolist())
CURVE_METHODS = ("model", "mood_shift", "centroid_interp")
POINT_METHODS = ("oracle_top1", "oracle_rand100")


def level_key(metric: str, level: float) -> str:
    """Name of a summary figure, e.g. ``genre_p@1_at_mood_0.9``.

    Parameters
    ----------
    metric : str
        A preservation figure (``genre_p@1``).
    level : float
        The Mood P@1 level.

    Returns
    -------
    str
    """
    return f"{metric}_at_mood_{level:g}"


def best_at_level(
    curve: Sequence[dict[str, Any]], *, level: float, metric: str = "genre_p@1"
) -> float | None:
    """Best ``metric`` reached anywhere on the curve where Mood P@1 >= ``level``.

    The rule: the curve is the polyline through its points in knob order (not
    sorted by mood), every figure linear in between two consecutive points. The
    result is the maximum of ``metric`` over the part of that polyline whose
    Mood P@1 is at least ``level``. Because both figures are linear on a
    segment, that maximum lies at a point whose own Mood P@1 >= ``level`` or at
    a crossing, where a segment's Mood P@1 equals ``level`` exactly and
    ``metric`` is interpolated (``m0 + (level - mood0) / (mood1 - mood0) *
    (m1 - m0)``). A single-point curve counts only its point.

    Parameters
    ----------
    curve : sequence of dict
        Points with ``mood_p@1`` and ``metric`` (``None`` where unknown), in knob order.
    level : float
        Least Mood P@1.
    metric : str
        The figure maximised.

    Returns
    -------
    float or None
        ``None`` when no part of the curve reaches ``level`` or the metric is
        missing there.
    """
    pts = [(p.get("mood_p@1"), p.get(metric)) for p in curve]
    best: float | None = None

    def consider(value: float | None) -> None:
        nonlocal best
        if value is not None and not math.isnan(value) and (best is None or value > best):
            best = float(value)

    for mood, value in pts:
        if mood is not None and mood >= level:
            consider(value)
    for (m0, v0), (m1, v1) in itertools.pairwise(pts):
        if None in (m0, m1, v0, v1) or (m0 >= level) == (m1 >= level):
            continue
        frac = (level - m0) / (m1 - m0)
        consider(v0 + frac * (v1 - v0))
    return best


def summarise(curve: list[dict[str, Any]], *, levels: Sequence[float] = LEVELS) -> dict[str, Any]:
    """A method's entry: its curve and, per level, the best preservation at that level.

    Parameters
    ----------
    curve : list of dict
        The method's points (:data:`POINT_KEYS` and ``param``).
    levels : sequence of float
        Mood P@1 levels.

    Returns
    -------
    dict
        ``{"curve": curve, level_key(metric, level): float or None, ...}`` for every
        metric of :data:`PRESERVATION_KEYS` and every level.
    """
    entry: dict[str, Any] = {"curve": curve}
    for level in levels:
        for metric in PRESERVATION_KEYS:
            entry[level_key(metric, level)] = best_at_level(curve, level=level, metric=metric)
    return entry


def _point(param: float | None, scores: dict[str, float]) -> dict[str, Any]:
    return {"param": param, **{k: scores.get(k) for k in POINT_KEYS}}


def _check_knobs(name: str, values: Sequence[float], *, low: float, high: float) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) < 2 or any(not (low <= v <= high) for v in vals):
        raise SweepError(f"{name} must hold at least 2 values in [{low}, {high}], got {vals}.")
    return vals


def model_curve(
    ev: RetrievalEvaluator, model: MoodshiftModel, *, strengths: Sequence[float]
) -> list[dict[str, Any]]:
    """The model's curve on an evaluator's pool: one point per strength.

    Parameters
    ----------
    ev : RetrievalEvaluator
    model : MoodshiftModel
    strengths : sequence of float in [0, 1]

    Returns
    -------
    list of dict
        One point per strength: ``param`` and :data:`POINT_KEYS`.
    """
    return [_point(s, ev(model, strength=s)) for s in strengths]


def strength_curve(
    ev: RetrievalEvaluator, model: MoodshiftModel, *, strengths: Sequence[float] = DEFAULT_STRENGTHS
) -> list[dict[str, Any]]:
    """Every figure of the model at each strength, plus ``param`` and ``preservation``.

    ``preservation`` is the mean of the evaluator's preservation figures
    (Genre P@1, Instrument J@1, other labels' P@1), as in its ``primary``.

    Parameters
    ----------
    ev : RetrievalEvaluator
        Usually on the validation split.
    model : MoodshiftModel
    strengths : sequence of float in [0, 1]
        Default :data:`DEFAULT_STRENGTHS`, the one strength grid of the project.

    Returns
    -------
    list of dict
        One point per strength: every figure of ``ev``, ``param`` and ``preservation``.
    """
    keys = ev.preservation_keys()
    curve = []
    for s in strengths:
        scores = ev(model, strength=s)
        vals = [scores[k] for k in keys if k in scores]
        curve.append({"param": s, **scores, "preservation": float(np.mean(vals)) if vals else 0.0})
    return curve


#: Least fraction of the seed's preservation (above the collapse) a usable point keeps.
MIN_KEPT = 0.25


def _grid_text(values: Sequence[float]) -> str:
    return f"{values[0]:g}, {values[1]:g}, ..., {values[-1]:g}"


#: The operating-point rule of :func:`operating_point` in one paragraph: stored with
#: every tuned model (``selection.json``) and printed by ``moodshift tune``.
OPERATING_POINT_RULE = (
    f"On the validation split, sweep the model's strength over {_grid_text(DEFAULT_STRENGTHS)}. "
    "A point is collapsed when its preservation (mean of genre_p@1, inst_j@1 and other "
    f"preserved labels' P@1) keeps less than {MIN_KEPT:g} of the gap between the target-mood "
    "centroid baseline and the seed's neighbours. Operating point: the non-collapsed strength "
    "with the highest preservation among those with mood_p@1 >= mood_target (tier 2, "
    "feasible); else the non-collapsed strength with the highest primary = "
    "min(mood_p@1 / mood_target, 1) + preservation (tier 1); else the highest primary "
    "(tier 0); ties go to the higher mood_p@1, then the larger strength."
)


def collapse_bounds(ev: RetrievalEvaluator, *, centroids: np.ndarray) -> tuple[float, float]:
    """Preservation of the collapse and of the seed on ``ev``'s pool.

    Parameters
    ----------
    ev : RetrievalEvaluator
    centroids : np.ndarray, shape (m, d)
        Training-split class centroids in ``ev``'s class order
        (:func:`moodshift.evaluation.baselines.training_centroids`).

    Returns
    -------
    collapse : float
        Mean preservation of the target-mood centroid baseline (every query
        answered by its mood's centroid): what a model that forgot the seed keeps.
    seed : float
        Mean preservation of the seed's own neighbours (no transform).
    """
    q = ev.queries
    keys = ev.preservation_keys()

    def pres(queries: np.ndarray) -> float:
        scores = ev.score(ev.retrieve(queries))
        vals = [scores[k] for k in keys if k in scores]
        return float(np.mean(vals)) if vals else 0.0

    return (
        pres(baselines.mood_centroid(q.target, centroids=centroids)),
        pres(baselines.seed_nn(ev.x[q.seeds])),
    )


def operating_point(
    curve: Sequence[dict[str, Any]],
    *,
    mood_target: float,
    bounds: tuple[float, float] | None = None,
    min_kept: float = MIN_KEPT,
) -> tuple[dict[str, Any], int]:
    """The strength a model is used at by default, chosen on a validation curve.

    Every point (a :func:`strength_curve` entry) gets ``kept`` = (preservation -
    collapse) / (seed - collapse) with ``bounds = (collapse, seed)`` from
    :func:`collapse_bounds` (1 without bounds), ``primary`` = min(Mood P@1 /
    mood_target, 1) + preservation, and a tier:

    - 2: Mood P@1 >= ``mood_target`` and ``kept >= min_kept``;
    - 1: ``kept >= min_kept`` only;
    - 0: collapsed (it keeps less than ``min_kept`` of what separates the seed's
      neighbours from the target-mood centroid: the "failed" model of
      docs/method.md, whose genre is no better than the centroid's).

    The chosen point is in the highest tier present; within tier 2 it has the
    highest preservation, within tiers 1 and 0 the highest ``primary`` (ties:
    higher Mood P@1, then larger strength). :data:`OPERATING_POINT_RULE` says
    the same in one paragraph.

    Parameters
    ----------
    curve : sequence of dict
        :func:`strength_curve` points.
    mood_target : float
        Validation Mood P@1 to reach.
    bounds : (float, float), optional
        ``(collapse, seed)`` preservation from :func:`collapse_bounds`.
    min_kept : float
        Least ``kept`` of a non-collapsed point.

    Returns
    -------
    point : dict
        The chosen point of ``curve`` (``param`` is the strength), with
        ``kept``, ``primary``, ``tier`` and ``score`` (what it was ranked by) added.
    tier : int

    Raises
    ------
    SweepError
        For an empty curve.
    """
    if not curve:
        raise SweepError("an empty curve has no operating point.")
    pts = []
    for p in curve:
        kept = 1.0
        if bounds is not None:
            collapse, seed = bounds
            kept = (p["preservation"] - collapse) / max(seed - collapse, 1e-9)
        primary = min(p["mood_p@1"] / mood_target, 1.0) + p["preservation"]
        tier = 0 if kept < min_kept else (2 if p["mood_p@1"] >= mood_target else 1)
        score = p["preservation"] if tier == 2 else primary
        pts.append({**p, "kept": kept, "primary": primary, "tier": tier, "score": score})
    best = max(pts, key=lambda p: (p["tier"], p["score"], p["mood_p@1"], p["param"]))
    return best, best["tier"]


def run_sweep(
    catalog: Catalog,
    *,
    model: MoodshiftModel | None,
    part: str = "test",
    seed: int = 0,
    max_seeds: int | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    ts: Sequence[float] = DEFAULT_TS,
    levels: Sequence[float] = LEVELS,
    big_k: int = 100,
    attribute: str | None = None,
    progress: bool = True,
    label_fraction: float = 1.0,
) -> dict[str, Any]:
    """Every method as a curve of (Mood P@1, preservation) on one split.

    Parameters
    ----------
    catalog : Catalog
        Must carry a split; centroids come from its training part.
    model : MoodshiftModel or None
        Without a model only the baselines are swept.
    part : str
        The split retrieved from and scored (``test``; ``val`` when choosing).
    seed, max_seeds
        Seed sample of the evaluator (as :func:`moodshift.evaluation.evaluate.evaluate_catalog`).
    strengths : sequence of float in [0, 1]
        Model strengths (default 21 steps).
    alphas : sequence of float in [0, 2]
        Centroid-shift scales (default 21 steps; ``alpha = 1`` is the plain shift).
    ts : sequence of float in [0, 1]
        Seed-to-target-centroid interpolation fractions (default 21 steps).
    levels : sequence of float
        Mood P@1 levels of the summary figures.
    big_k : int
        Depth of Oracle Rand-K.
    attribute : str, optional
        Label column transformed (default: the model's, else ``mood``).
    progress : bool
        Show a progress bar.
    label_fraction : float in [0, 1]
        Pool labels the ``query_default`` curve may read (as ``evaluate``).

    Returns
    -------
    dict
        ``{method: {"curve": [{"param", "mood_p@1", "genre_p@1", "inst_j@1",
        "cf@1"}, ...], "genre_p@1_at_mood_0.9": ..., "genre_p@1_at_mood_0.95":
        ..., "inst_j@1_at_mood_0.9": ..., "cf@1_at_mood_0.9": ..., ...}}`` for
        ``model`` (when given), ``mood_shift``, ``centroid_interp``,
        ``oracle_top1`` and ``oracle_rand100`` (single-point curves, ``param``
        None), the concept-erasure rows (over ``keep``, :data:`DEFAULT_KEEPS`), plus
        ``query_default`` (the query engine with mood evidence, over
        the strength), ``tagger_filter`` (over the probability threshold; the
        argmax filter is its ``param`` None point) and ``probe_direction`` (over
        the step ``alpha``). The model's entry also holds ``default_strength``,
        the strength stored in the model (1.0 unless chosen on validation).

    Raises
    ------
    SweepError
        When a knob list has fewer than 2 values or one outside its range.
    EmbedderMismatchError, DimensionMismatchError
        When the model was trained on another embedder's catalogue.
    DataError
        When the catalogue has no split.
    """
    strengths = _check_knobs("strengths", strengths, low=0.0, high=1.0)
    alphas = _check_knobs("alphas", alphas, low=0.0, high=2.0)
    ts = _check_knobs("ts", ts, low=0.0, high=1.0)
    attribute = attribute or (model.attribute if model is not None else "mood")
    if model is not None:
        catalog.check_compatible(model.embedder, what="model")
    pool = catalog.subset(catalog.split_indices(part))
    ev = RetrievalEvaluator(
        pool, attribute=attribute, classes=model.classes if model is not None else None,
        ks=(1,), max_seeds=max_seeds, seed=seed, label_fraction=label_fraction,
    )  # fmt: skip
    centroids = baselines.training_centroids(catalog, attribute=attribute, classes=ev.classes)
    q = ev.queries
    seeds = ev.x[q.seeds]
    n_steps = (len(strengths) if model is not None else 0) + len(alphas) + len(ts) + 1
    bar = tqdm(total=n_steps, desc="sweep", unit="point", disable=not progress, leave=False)
    out: dict[str, Any] = {}
    if model is not None:
        out["model"] = summarise(model_curve(ev, model, strengths=strengths), levels=levels)
        bar.update(len(strengths))
        out["model"]["default_strength"] = model.default_strength
    curve = []
    for a in alphas:
        query = baselines.mood_shift(
            seeds, source=q.source, target=q.target, centroids=centroids, alpha=a
        )
        curve.append(_point(a, ev.score(ev.retrieve(query))))
        bar.update(1)
    out["mood_shift"] = summarise(curve, levels=levels)
    curve = []
    for t in ts:
        query = baselines.centroid_interp(seeds, target=q.target, centroids=centroids, t=t)
        curve.append(_point(t, ev.score(ev.retrieve(query))))
        bar.update(1)
    out["centroid_interp"] = summarise(curve, levels=levels)
    oracles = baseline_results(
        ev, centroids=centroids, big_k=big_k, seed=seed, methods=POINT_METHODS
    )
    for name, rows in oracles.items():
        key = "oracle_rand100" if name.startswith("oracle_rand") else name
        out[key] = summarise([_point(None, ev.score(rows))], levels=levels)
    bar.update(1)
    out.update(_evidence_curves(catalog, ev, model, centroids=centroids, strengths=strengths,
                                alphas=alphas, levels=levels, seed=seed))  # fmt: skip
    bar.close()
    return out


def _erasure_curves(
    catalog: Catalog, ev: RetrievalEvaluator, *, proba: np.ndarray, levels: Sequence[float]
) -> dict[str, Any]:
    """Each concept-erasure row as a curve over ``keep`` (the strength knob of erasure)."""
    erasers = baselines.training_erasers(catalog, attribute=ev.attribute, classes=ev.classes)
    q = ev.queries
    out: dict[str, Any] = {}
    for name, (kind, source) in ERASURE_METHODS.items():
        evidence = {"pool_labels": ev.y} if source == "label" else {"proba": proba}
        curve = []
        for keep in DEFAULT_KEEPS:
            rows = baselines.erased_filter(
                ev.x[q.seeds], target=q.target, pool=ev.x, space=erasers[kind].space(keep=keep),
                exclude=q.seeds, k=ev.k_max, **evidence,
            )  # fmt: skip
            curve.append(_point(keep, ev.score(rows)))
        out[name] = summarise(curve, levels=levels)
    return out


#: Probability thresholds of the tagger-filter curve.
THRESHOLDS = tuple(np.round(np.linspace(0.0, 0.95, 20), 4).tolist())


def _evidence_curves(
    catalog: Catalog,
    ev: RetrievalEvaluator,
    model: MoodshiftModel | None,
    *,
    centroids: np.ndarray,
    strengths: Sequence[float],
    alphas: Sequence[float],
    levels: Sequence[float],
    seed: int,
) -> dict[str, Any]:
    """Curves of the methods that use a mood tagger (the model's, or one fitted here)."""

    tagger = model.tagger if model is not None and model.tagger is not None else fit_tagger(
        catalog, attribute=ev.attribute, classes=ev.classes, seed=seed)  # fmt: skip
    q = ev.queries
    seeds = ev.x[q.seeds]
    proba = tagger.predict_proba(ev.x)
    out: dict[str, Any] = {}
    if model is not None:
        eng = ev.engine(model)
        curve = [_point(s, ev.score(ev.engine_results(eng, strength=s))) for s in strengths]
        out["query_default"] = summarise(curve, levels=levels)
        out["query_default"]["settings"] = eng.settings.to_dict()
    curve = [
        _point(
            None,
            ev.score(
                baselines.tagger_filter(
                    seeds, target=q.target, pool=ev.x, proba=proba, exclude=q.seeds, k=ev.k_max
                )
            ),
        )
    ]
    for t in THRESHOLDS:
        rows = baselines.tagger_filter(
            seeds, target=q.target, pool=ev.x, proba=proba, exclude=q.seeds, k=ev.k_max, threshold=t
        )
        curve.append(_point(t, ev.score(rows)))
    out["tagger_filter"] = summarise(curve, levels=levels)
    nuisance = baselines.training_nuisance(catalog, columns=ev.preserved)
    scale = baselines.centroid_scale(centroids)
    curve = []
    for a in alphas:
        query = baselines.probe_direction(
            seeds,
            source=q.source,
            target=q.target,
            mood_weights=tagger.weight,
            nuisance=nuisance,
            scale=scale,
            alpha=a,
        )
        curve.append(_point(a, ev.score(ev.retrieve(query))))
    out["probe_direction"] = summarise(curve, levels=levels)
    out.update(_erasure_curves(catalog, ev, proba=proba, levels=levels))
    return out


def dominates(
    sweep: dict[str, Any],
    *,
    method: str = "model",
    other: str,
    metric: str = "genre_p@1",
    levels: Sequence[float] = tuple(np.round(np.arange(0.80, 0.951, 0.01), 4).tolist()),
    tol: float = 1e-9,
) -> dict[str, Any]:
    """Does ``method``'s curve keep at least as much as ``other``'s at every mood level?

    At each level, both curves' :func:`best_at_level` are compared; a curve that
    never reaches a level keeps nothing there (counted as -inf). ``dominates``
    is True when ``method`` is >= ``other`` at every level (within ``tol``) and
    strictly greater at one level at least.

    Parameters
    ----------
    sweep : dict
        A :func:`run_sweep` result.
    method, other : str
        The two methods compared.
    metric : str
        The preservation figure compared.
    levels : sequence of float
        Mood P@1 levels (default 0.80, 0.81, ..., 0.95).
    tol : float
        Ties within ``tol`` count as equal.

    Returns
    -------
    dict
        ``dominates`` (bool), ``levels`` and both curves' figures per level.
    """
    mine, theirs = [], []
    for level in levels:
        mine.append(best_at_level(sweep[method]["curve"], level=level, metric=metric))
        theirs.append(best_at_level(sweep[other]["curve"], level=level, metric=metric))

    def val(v: float | None) -> float:
        return -math.inf if v is None else v

    at_least = all(val(a) >= val(b) - tol for a, b in zip(mine, theirs, strict=True))
    strictly = any(val(a) > val(b) + tol for a, b in zip(mine, theirs, strict=True))
    return {
        "dominates": bool(at_least and strictly),
        "levels": list(levels),
        method: mine,
        other: theirs,
    }
