"""Active learning of a catalogue's moods, shared by ``moodshift label`` and the web page.

:func:`to_label` picks the tracks whose labels would help most (the fused
p(mood | track) refitted on the labels known so far, then
:func:`moodshift.model.evidence.choose_to_label`); :func:`set_label` writes an
answer into the catalogue's labels (the caller saves the catalogue atomically).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.model.evidence import choose_to_label
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.engine import label_codes

__all__ = ["label_codes", "set_label", "to_label"]


def to_label(
    *,
    model: MoodshiftModel,
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int,
    skip: Iterable[int] = (),
    proba: np.ndarray | None = None,
    density: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` unlabelled tracks whose labels would help most, and the p(mood | track) used.

    Parameters
    ----------
    model : MoodshiftModel
        Its fused evidence (or tagger) is refitted on ``labels``: each answer
        changes the next question.
    embeddings : np.ndarray, shape (n, d)
        The catalogue's raw embeddings.
    labels : np.ndarray, shape (n,), int
        Known class per track (``-1``: unlabelled); labelled tracks are never chosen.
    k : int
    skip : iterable of int
        Further rows never chosen (the user skipped them).
    proba : np.ndarray, shape (n, m), optional
        p(mood | track) already refitted on ``labels`` (a server holds it); computed
        when absent.
    density : np.ndarray, shape (n,), optional
        :func:`moodshift.model.evidence.label_density` of ``embeddings``: it does not
        change with the labels, so a caller asking many times computes it once.

    Returns
    -------
    rows : np.ndarray, shape (<= k,), int64
        Best first; empty when every track is labelled or skipped.
    proba : np.ndarray, shape (n, m), float32
    """
    if proba is None:
        proba = model.mood_proba(embeddings, labels=labels)
    taken = np.union1d(np.flatnonzero(labels >= 0), np.fromiter(skip, dtype=np.int64))
    rows = choose_to_label(proba, embeddings, k=k, exclude=taken, density=density)
    return rows, proba


def set_label(catalog: Catalog, *, row: int, attribute: str, value: str) -> None:
    """Set one track's label in memory (the column is added when the catalogue lacks it)."""
    if attribute not in catalog.labels.columns:
        catalog.labels[attribute] = ""
    catalog.labels.loc[catalog.labels.index[row], attribute] = value
