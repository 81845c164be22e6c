"""Choosing how evidence-aware queries rank, on the validation split.

Two regimes bound what a user's catalogue can look like, and each fixes part of
:class:`moodshift.model.fast.EvidenceSettings`:

* **every label visible** (label fraction 1): candidates are the tracks
  labelled with the target mood, so only ``strength_label`` matters. It is the
  strength with the best preservation (mean of Genre P@1, Instrument J@1, ...)
  among those whose Mood P@1 is at least ``mood_floor``; ties go to the
  smaller strength.
* **no label visible** (label fraction 0): the tagger judges every track, and
  ``strength_probe`` and ``weight`` are chosen together. The reference is the
  tagger filter itself (strength 0, weight 0: the probe's predicted mood,
  ranked by similarity to the seed). The chosen setting maximises its smaller
  gain over the reference, ``min(dMood P@1, dpreservation)``: a setting that
  buys mood with preservation (or the reverse) does not dominate the tagger
  filter, and the reference itself scores 0, so the choice is never worse than
  it on validation.

Both regimes are scored on the same validation seeds, so the choice never sees
the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.model.fast import EvidenceSettings
from moodshift.model.network import MoodshiftModel

#: Strengths tried for both query vectors.
EVIDENCE_STRENGTHS = tuple(np.round(np.linspace(0.0, 1.0, 11), 4).tolist())
#: Tagger weights ``w`` tried (``w log p`` is added to a cosine).
EVIDENCE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: Least Mood P@1 the label regime's strength must keep.
MOOD_FLOOR = 0.95


def _figures(ev: RetrievalEvaluator, rows: np.ndarray) -> dict[str, float]:
    scores = ev.score(rows)
    keys = [k for k in ev.preservation_keys() if k in scores]
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
) -> tuple[EvidenceSettings, dict[str, Any]]:
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

    Returns
    -------
    settings : EvidenceSettings
    report : dict
        The chosen points' validation figures and the tagger-filter reference.
    """
    eng = ev.engine(model, label_fraction=1.0)
    label_pts = []
    for s in strengths:
        f = _figures(ev, ev.engine_results(eng, evidence="labels", strength=s))
        label_pts.append({"strength": float(s), **f})
    ok = [p for p in label_pts if p["mood_p@1"] >= mood_floor] or label_pts
    best_label = max(ok, key=lambda p: (p["preservation"], -p["strength"]))
    report: dict[str, Any] = {"labels": best_label}
    if model.tagger is None:
        s = best_label["strength"]
        return EvidenceSettings(strength_label=s, strength_probe=s, weight=0.0), report
    eng = ev.engine(model, label_fraction=0.0)
    probe_pts = []
    for s in strengths:
        for w in weights:
            rows = ev.engine_results(eng, evidence="probe", strength=s, weight=w)
            probe_pts.append({"strength": float(s), "weight": float(w), **_figures(ev, rows)})
    ref = next(p for p in probe_pts if p["strength"] == 0.0 and p["weight"] == 0.0)
    for p in probe_pts:
        p["margin"] = min(p["mood_p@1"] - ref["mood_p@1"], p["preservation"] - ref["preservation"])
    best_probe = max(probe_pts, key=lambda p: (p["margin"], -p["strength"], -p["weight"]))
    report.update(probe=best_probe, tagger_filter=ref)
    settings = EvidenceSettings(
        strength_label=best_label["strength"],
        strength_probe=best_probe["strength"],
        weight=best_probe["weight"],
    )
    return settings, report
