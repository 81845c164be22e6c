"""Choosing how evidence-aware queries rank, on the validation split.

First the *ranking space* (:mod:`moodshift.model.ranking`): the plain cosine,
the linear mood erasers at a few strengths, and the spaces learned from cross-mood
pairs (:mod:`moodshift.training.metric`). Each is tried with every strength of the
transform, so the default query is the transformed query, the erased seed
(strength 0 in an eraser's space) or a combination of the two, whichever keeps
most on validation. Since the erased seed with the label filter is one of the
points tried, the choice is never worse than concept erasure on validation.

Two regimes bound what a user's catalogue can look like, and each fixes part of
:class:`moodshift.model.fast.EvidenceSettings`:

* **every label visible** (label fraction 1): candidates are the tracks
  labelled with the target mood, so only ``strength_label`` (and the space)
  matters. It is the (space, strength) with the best preservation (mean of Genre
  P@1, Instrument J@1, ... and CF@1 where the catalogue has counterfactual groups)
  among those whose Mood P@1 is at least ``mood_floor``; ties go to the earlier
  space (simpler first) and the smaller strength.
* **no label visible** (label fraction 0): the tagger judges every track, and
  ``strength_probe`` and ``weight`` are chosen together. The reference is the
  tagger filter itself (strength 0, weight 0: the probe's predicted mood,
  ranked by similarity to the seed). The chosen setting maximises its smaller
  gain over the reference, ``min(dMood P@1, dpreservation)``: a setting that
  buys mood with preservation (or the reverse) does not dominate the tagger
  filter, and the reference itself scores 0, so the choice is never worse than
  it on validation. It is chosen in the space the label regime chose; the
  tagger filters with the seed fully erased (``centroid@0``, ``leace@0``) are
  references too, so a positive margin beats concept erasure as well.

Both regimes are scored on the same validation seeds, so the choice never sees
the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from moodshift.errors import InputError
from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.model.fast import EvidenceSettings
from moodshift.model.network import MoodshiftModel
from moodshift.model.ranking import KINDS as ERASER_KINDS
from moodshift.model.ranking import RankingSpace, fit_eraser
from moodshift.training.metric import WEIGHT_DECAYS, fit_metric

#: Strengths tried for both query vectors.
EVIDENCE_STRENGTHS = tuple(np.round(np.linspace(0.0, 1.0, 11), 4).tolist())
#: Tagger weights ``w`` tried (``w log p`` is added to a cosine).
EVIDENCE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: Least Mood P@1 the label regime's strength must keep.
MOOD_FLOOR = 0.95
#: Ranking spaces tried (``--ranking auto``), simplest first.
RANKING_KINDS = ("none", *ERASER_KINDS, "metric")
#: Strengths of the erasers tried (fraction of the mood component kept).
ERASER_KEEPS = (0.0, 0.5)


def space_name(kind: str, knob: float) -> str:
    """The name :func:`candidate_spaces` gives a space: ``centroid@0.5``, ``metric@10``."""
    return f"{kind}@{knob:g}"


#: The fully erased spaces (names given by :func:`candidate_spaces`) whose tagger filter
#: the no-label regime must beat as well as the chosen space's own.
ERASED_REFERENCES = tuple(space_name(kind, 0.0) for kind in ERASER_KINDS)


def _figures(ev: RetrievalEvaluator, rows: np.ndarray) -> dict[str, float]:
    scores = ev.score(rows)
    keys = [k for k in [*ev.preservation_keys(), "cf@1"] if k in scores]
    pres = float(np.mean([scores[k] for k in keys])) if keys else 0.0
    return {"mood_p@1": scores[f"{ev.attribute}_p@1"], "preservation": pres,
            **{k: scores[k] for k in keys}}  # fmt: skip


def choose_evidence(
    ev: RetrievalEvaluator,
    model: MoodshiftModel,
    *,
    strengths: Sequence[float] = EVIDENCE_STRENGTHS,
    weights: Sequence[float] = EVIDENCE_WEIGHTS,
    mood_floor: float = MOOD_FLOOR,
    spaces: dict[str, RankingSpace | None] | None = None,
) -> tuple[EvidenceSettings, RankingSpace | None, dict[str, Any]]:
    """Evidence settings chosen on ``ev``'s pool (the validation split).

    Parameters
    ----------
    ev : RetrievalEvaluator
        Over the validation split; its own label fraction is not used (each
        regime sets its own).
    model : MoodshiftModel
        With a tagger (without one only ``strength_label`` is chosen).
    strengths, weights : sequences of float
        The grids searched.
    mood_floor : float
        Least Mood P@1 of the label regime.
    spaces : dict of str to RankingSpace or None, optional
        Candidate ranking spaces by name, simplest first (None: the plain cosine).
        Default: the model's own space only.

    Returns
    -------
    settings : EvidenceSettings
    space : RankingSpace or None
        The chosen ranking space.
    report : dict
        The chosen points' validation figures, the best point of every space and
        the tagger-filter reference.
    """
    spaces = {"model": model.ranking} if spaces is None else spaces
    label_pts = []
    for order, (name, space) in enumerate(spaces.items()):
        eng = ev.engine(model, label_fraction=1.0, ranking=space)
        for s in strengths:
            f = _figures(ev, ev.engine_results(eng, evidence="labels", strength=s))
            label_pts.append({"space": name, "order": order, "strength": float(s), **f})
    ok = [p for p in label_pts if p["mood_p@1"] >= mood_floor] or label_pts
    best_label = max(ok, key=lambda p: (p["preservation"], -p["order"], -p["strength"]))
    chosen = spaces[best_label["space"]]
    per_space = {}
    for p in ok:
        if p["space"] not in per_space or p["preservation"] > per_space[p["space"]]["preservation"]:
            per_space[p["space"]] = p
    report: dict[str, Any] = {"labels": best_label, "spaces": per_space}
    if model.tagger is None:
        s = best_label["strength"]
        settings = EvidenceSettings(strength_label=s, strength_probe=s, weight=0.0)
        return settings, chosen, report
    eng = ev.engine(model, label_fraction=0.0, ranking=chosen)
    probe_pts = []
    for s in strengths:
        for w in weights:
            rows = ev.engine_results(eng, evidence="probe", strength=s, weight=w)
            probe_pts.append({"strength": float(s), "weight": float(w), **_figures(ev, rows)})
    ref = next(p for p in probe_pts if p["strength"] == 0.0 and p["weight"] == 0.0)
    # The tagger filter in the chosen space, and with the seed fully erased (the erasure
    # baselines that read the tagger): the choice must gain on every one of them.
    refs = {"chosen_space": ref}
    for name in ERASED_REFERENCES:
        if name in spaces and spaces[name] is not chosen:
            eng = ev.engine(model, label_fraction=0.0, ranking=spaces[name])
            rows = ev.engine_results(eng, evidence="probe", strength=0.0, weight=0.0)
            refs[name] = _figures(ev, rows)
    for p in probe_pts:
        p["margin"] = min(
            min(p["mood_p@1"] - r["mood_p@1"], p["preservation"] - r["preservation"])
            for r in refs.values()
        )
    best_probe = max(probe_pts, key=lambda p: (p["margin"], -p["strength"], -p["weight"]))
    report.update(probe=best_probe, tagger_filter=refs)
    settings = EvidenceSettings(
        strength_label=best_label["strength"],
        strength_probe=best_probe["strength"],
        weight=best_probe["weight"],
    )
    return settings, chosen, report


def candidate_spaces(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    kinds: Sequence[str] = RANKING_KINDS,
    keeps: Sequence[float] = ERASER_KEEPS,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    seed: int = 0,
) -> dict[str, RankingSpace | None]:
    """The ranking spaces :func:`choose_evidence` tries, fitted on training rows, simplest first.

    Parameters
    ----------
    x : np.ndarray, shape (n, d), unit-norm
    y : np.ndarray, shape (n,), int (``-1``: unlabelled)
    groups : np.ndarray of str, shape (n,), optional
        Counterfactual groups (the learned space's pairs).
    kinds : sequence of str
        Of :data:`RANKING_KINDS`: ``none`` (plain cosine), the erasers, ``metric``.
    keeps : sequence of float
        Strengths of each eraser (fraction of the mood component kept).
    weight_decays : sequence of float
        Penalties of the learned space toward the centroid eraser.
    seed : int

    Returns
    -------
    dict of str to RankingSpace or None
    """
    unknown = sorted(set(kinds) - set(RANKING_KINDS))
    if unknown:
        raise InputError(f"unknown ranking {unknown}; use {', '.join(RANKING_KINDS)} or auto.")
    out: dict[str, RankingSpace | None] = {}
    if "none" in kinds:
        out["none"] = None
    for kind in ERASER_KINDS:
        if kind in kinds:
            eraser = fit_eraser(kind, x, y)
            out |= {space_name(kind, keep): eraser.space(keep=keep) for keep in keeps}
    if "metric" in kinds:
        for wd in weight_decays:
            out[space_name("metric", wd)] = fit_metric(
                x, y, groups=groups, weight_decay=wd, seed=seed
            )
    return out
