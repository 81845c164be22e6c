"""Fitting a model's evidence fusion (:mod:`moodshift.model.evidence`) on its catalogue.

The tag head's map (tags -> moods) is learned on the training split (its ``C``
on the validation split). The fusion weights must hold on music the model never
heard, so they are fitted on out-of-genre predictions (:func:`fit_model_evidence`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from moodshift.audio.embedders import embedder_from_provenance
from moodshift.errors import DataError, InputError
from moodshift.model.evidence import (
    MIN_RECENTRE,
    EvidenceFusion,
    TagHead,
    fit_fusion,
    labels_logp,
    log_softmax,
    recentre,
)
from moodshift.model.network import MoodshiftModel
from moodshift.model.tagger import MoodTagger

log = logging.getLogger(__name__)

#: Labelled tracks per mood in the simulated ``labels`` source (one weight set each).
SIMULATED_LABELS_PER_MOOD = (2, 5, 10, 20)
#: Draws of the simulated labels (their validation rows are pooled).
SIMULATED_DRAWS = 5


TagLayer = tuple[np.ndarray, np.ndarray, tuple[str, ...], str]


def embedder_tag_layer(provenance: dict[str, Any]) -> TagLayer | None:
    """The catalogue embedder's tag layer ``(weight, bias, names, embedder name)``, if it has one.

    Only an embedder whose stored output feeds its tag layer directly (musicnn's
    ``penultimate``) has one; others return None.
    """
    try:
        emb = embedder_from_provenance(provenance)
    except Exception as exc:  # an unknown or unavailable embedder: no tag head
        log.info("no tag head for this catalogue's embedder (%s)", exc)
        return None
    layer = getattr(emb, "tag_layer", None)
    if layer is None or getattr(emb, "output", None) != "penultimate":
        return None
    weight, bias, names = layer()
    return weight, bias, names, str(emb.name)


def _class_ids(catalog: Any, model: MoodshiftModel) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(model.classes)}
    values = catalog.labels[model.attribute].fillna("").astype(str).to_numpy()
    return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)


def _folds(catalog: Any, rows: np.ndarray, *, seed: int) -> list[np.ndarray]:
    """Held-out folds of ``rows``: one per genre when there are 3+, else 5 artist groups."""
    labels = catalog.labels
    if "genre" in labels.columns:
        g = labels["genre"].fillna("").astype(str).to_numpy()[rows]
        values = sorted(set(g) - {""})
        if len(values) >= 3:
            return [rows[g == v] for v in values]
    key = labels["artist"] if "artist" in labels.columns else labels.index.to_series()
    groups = key.astype(str).to_numpy()[rows]
    uniq = np.unique(groups)
    which = np.random.default_rng([seed, 0xF01D]).integers(5, size=len(uniq))
    fold_of = dict(zip(uniq, which, strict=True))
    f = np.array([fold_of[x] for x in groups])
    return [rows[f == k] for k in range(5) if (f == k).any()]


def fit_model_evidence(
    model: MoodshiftModel,
    catalog: Any,
    *,
    seed: int = 0,
    taghead: bool = True,
    recentre_sources: bool = True,
) -> EvidenceFusion:
    """Fit the evidence fusion of ``model`` on the catalogue it was trained on.

    The fusion weights must hold on music the model never heard, so they are fitted
    on *out-of-genre* predictions: for each genre of the catalogue (else each of five
    artist folds), a tagger and a tag map of the model's recipe are fitted on the
    other genres' training (and validation) tracks and predict the held-out genre,
    re-centred on that genre as on a new catalogue. The ``labels`` source is
    simulated on those out-of-genre tracks: k tracks per mood (k = 2, 5, 10, 20) are
    "labelled by the user" and the weights are fitted on the others (several
    draws), one weight set per k.

    Parameters
    ----------
    model : MoodshiftModel
        With a tagger.
    catalog : Catalog
        The model's training catalogue, with its stored split.
    seed : int
    taghead : bool
        Use the embedder's tag head when it has one.
    recentre_sources : bool
        Re-centre each source on its catalogue.

    Returns
    -------
    EvidenceFusion
        Not attached to the model: set ``model.evidence`` to use it.
    """
    if model.tagger is None:
        raise DataError("the model has no tagger to fuse; retrain it with `moodshift train`")
    y = _class_ids(catalog, model)
    split = catalog.labels["split"].astype(str).to_numpy()
    m = len(model.classes)
    x = catalog.embeddings
    tr_all = np.flatnonzero((y >= 0) & (split == "train"))
    va_all = np.flatnonzero((y >= 0) & (split == "val"))
    if np.unique(y[tr_all]).size < m or len(va_all) < m:
        raise DataError(
            f"fitting the evidence fusion needs labelled training tracks of all {m} moods and "
            f"at least {m} labelled validation tracks; label more tracks"
        )
    layer = embedder_tag_layer(catalog.provenance) if taghead else None

    def fit_head(tr: np.ndarray, va: np.ndarray) -> TagHead | None:
        if layer is None:
            return None
        w, b, names, emb_name = layer
        return TagHead.fit(tag_weight=w, tag_bias=b, tag_names=names, embedder=emb_name,
                           train_x=x[tr], train_y=y[tr], n_classes=m, val_x=x[va],
                           val_y=y[va], seed=seed)  # fmt: skip

    head = fit_head(tr_all, va_all)
    base: dict[str, list[np.ndarray]] = {}
    rows_oof: list[np.ndarray] = []
    labelled = np.concatenate([tr_all, va_all])
    for fold in _folds(catalog, labelled, seed=seed):
        rest = np.setdiff1d(labelled, fold)
        tr, va = np.intersect1d(rest, tr_all), np.intersect1d(rest, va_all)
        if np.unique(y[tr]).size < m or len(va) < m or len(fold) < 2 * m:
            continue
        tagger = MoodTagger.fit(train_x=x[tr], train_y=y[tr], classes=list(model.classes),
                                val_x=x[va], val_y=y[va], seed=seed)  # fmt: skip
        srcs = {"tagger": log_softmax(tagger.logits(x[fold]).astype(np.float64))}
        fold_head = fit_head(tr, va)
        if fold_head is not None:
            srcs["taghead"] = log_softmax(fold_head.logits(x[fold]))
        if recentre_sources and len(fold) >= MIN_RECENTRE:
            srcs = {k: recentre(v) for k, v in srcs.items()}
        for k, v in {**srcs, "y": y[fold]}.items():
            base.setdefault(k, []).append(v)
        rows_oof.append(fold)
    if not base:
        raise DataError("no held-out fold of the catalogue could be predicted; label more tracks")
    stacked = {k: np.concatenate(v) for k, v in base.items()}
    y_fit = stacked.pop("y")
    rows = np.concatenate(rows_oof)
    # The labels source, simulated: k "user" labels per mood among the out-of-fold
    # tracks, the weights fitted on the others; several draws pooled per k.
    rng = np.random.default_rng([seed, 0x1AB])
    extra: dict[int, dict[str, np.ndarray]] = {}
    for k in SIMULATED_LABELS_PER_MOOD:
        if min(np.bincount(y_fit, minlength=m)) < 2 * k:
            continue
        pooled: dict[str, list[np.ndarray]] = {}
        for _ in range(SIMULATED_DRAWS):
            given = np.full(len(y_fit), -1)
            for c in range(m):
                pick = rng.choice(np.flatnonzero(y_fit == c), size=k, replace=False)
                given[pick] = c
            lab = labels_logp(x[rows], given, classes=model.classes, seed=seed)
            if lab is None:
                continue
            keep = given < 0
            for name, v in {**stacked, "labels": lab, "y": y_fit}.items():
                pooled.setdefault(name, []).append(v[keep])
        if pooled:
            extra[k] = {name: np.concatenate(v) for name, v in pooled.items()}
    fusion = fit_fusion(stacked, y_fit, recentre_sources=recentre_sources, taghead=head,
                        extra=extra)  # fmt: skip
    fusion.report["fitted_on"] = {
        "train_tracks": len(tr_all), "val_tracks": len(va_all), "folds": len(rows_oof),
        "out_of_fold_tracks": len(y_fit),
        "simulated_labels_per_mood": SIMULATED_LABELS_PER_MOOD,
    }  # fmt: skip
    if head is not None:
        fusion.report["taghead_top_tags"] = head.top_tags(model.classes)
    return fusion


#: Share of the catalogue at each end of a tag's probability that gets a pseudo-label.
TAG_LABEL_SHARE = 1 / 3


def add_tag_attribute(catalog: Any, tag: str) -> list[str]:
    """Label a catalogue by one of its embedder's tags, for a column it does not have.

    "Like this, but more acoustic": the tag head's probability ranks every track;
    the top third is labelled ``<tag>``, the bottom third ``not <tag>``, the rest
    stays unlabelled (the model's tagger judges it, as for moods). The column is
    added in memory (the catalogue on disk is unchanged); a split stratified by
    it is stored when the catalogue has none.

    Parameters
    ----------
    catalog : Catalog
    tag : str
        A tag of the embedder's head (case-insensitive), e.g. ``acoustic``.

    Returns
    -------
    list of str
        The two classes, ``[tag, "not " + tag]`` with the head's spelling.

    Raises
    ------
    InputError
        The embedder has no tag head, or ``tag`` is not one of its tags.
    """
    layer = embedder_tag_layer(catalog.provenance)
    if layer is None:
        raise InputError(
            f"the catalogue has no {tag!r} column and its embedder "
            f"({catalog.provenance.get('name')}) has no tag head to derive one; add the column "
            "or embed with musicnn"
        )
    weight, bias, names, _ = layer
    lookup = {n.lower(): i for i, n in enumerate(names)}
    if tag.lower() not in lookup:
        raise InputError(
            f"{tag!r} is neither a column of the catalogue nor a tag of its embedder; "
            f"tags: {', '.join(names)}"
        )
    i = lookup[tag.lower()]
    p = 1.0 / (1.0 + np.exp(-(catalog.embeddings.astype(np.float64) @ weight[i] + bias[i])))
    lo, hi = np.quantile(p, [TAG_LABEL_SHARE, 1 - TAG_LABEL_SHARE])
    name = names[i]
    classes = [name, f"not {name}"]
    catalog.labels[tag] = np.where(p >= hi, classes[0], np.where(p <= lo, classes[1], ""))
    if catalog.split is None:
        catalog.assign_split(attribute=tag, seed=0)
    return classes
