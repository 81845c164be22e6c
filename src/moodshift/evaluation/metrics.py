"""Retrieval metrics, one pure function each, in the style of mir_eval.

Every metric is called as ``metric(reference, estimated, *, k)``:

- ``reference`` has one entry per query (the target mood, the seed's genre set, ...);
- ``estimated`` has one ranked list per query (the labels of the retrieved
  tracks, best first); only the first ``k`` entries count.

Inputs are validated first (:func:`validate`). The seed itself must already be
excluded from ``estimated`` by the caller (see :mod:`moodshift.evaluation.evaluate`).
Definitions follow Wilkins et al., "Controllable Embedding Transformation for
Mood-Guided Music Retrieval" (arXiv 2510.20759, 2025), section "Evaluation".
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from moodshift.errors import InputError

LabelSet = frozenset


def validate(reference: Sequence[Any], estimated: Sequence[Sequence[Any]], *, k: int) -> None:
    """Check a metric's inputs: equal query counts, k >= 1, at least k results per query.

    Parameters
    ----------
    reference : sequence, length Q
        One reference per query.
    estimated : sequence of sequences, shape (Q, >= k)
        One ranked result list per query.
    k : int
        Cut-off.

    Raises
    ------
    InputError
        When ``k < 1``, the lengths differ, there is no query, or a list is shorter than k.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if len(reference) != len(estimated):
        raise InputError(
            f"reference has {len(reference)} queries but estimated has {len(estimated)}"
        )
    if len(reference) == 0:
        raise InputError("no queries to score")
    for i, row in enumerate(estimated):
        if len(row) < k:
            raise InputError(f"query {i} has {len(row)} results, fewer than k={k}")


def precision_at_k(
    reference: Sequence[Hashable], estimated: Sequence[Sequence[Hashable]], *, k: int
) -> float:
    """P@k: the fraction of the first k results equal to the reference, averaged over queries.

    P@k = (1/Q) sum_q (1/k) |{j <= k : est_q[j] == ref_q}|.

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the wanted value per query;
        the values of each query's results.

    Returns
    -------
    float
        P@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    validate(reference, estimated, k=k)
    hits = [
        sum(1 for e in row[:k] if e == ref) / k
        for ref, row in zip(reference, estimated, strict=True)
    ]
    return float(np.mean(hits))


def mood_precision(
    reference: Sequence[Hashable], estimated: Sequence[Sequence[Hashable]], *, k: int
) -> float:
    """Mood P@k: fraction of retrieved tracks whose mood is the target mood.

    ``reference[q]`` is query q's target mood; ``estimated[q]`` the moods of its results.

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: target mood per query; moods
        of each query's results.

    Returns
    -------
    float
        Mood P@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    return precision_at_k(reference, estimated, k=k)


def genre_precision(
    reference: Sequence[frozenset[str]], estimated: Sequence[Sequence[frozenset[str]]], *, k: int
) -> float:
    """Genre P@k: fraction of retrieved tracks whose genre *set* equals the seed's.

    Exact set match, as the paper's random row (0.01 on MTG-Jamendo) implies; see
    :func:`genre_any_precision` for the looser "shares a genre".

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the seed's genre set per
        query; genre sets of each query's results.

    Returns
    -------
    float
        Genre P@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    return precision_at_k([frozenset(r) for r in reference],
                          [[frozenset(e) for e in row] for row in estimated], k=k)  # fmt: skip


def genre_any_precision(
    reference: Sequence[frozenset[str]], estimated: Sequence[Sequence[frozenset[str]]], *, k: int
) -> float:
    """Genre-any P@k: fraction of retrieved tracks sharing at least one genre with the seed.

    Two empty sets count as a match (both unlabelled).

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the seed's genre set per
        query; genre sets of each query's results.

    Returns
    -------
    float
        Genre-any P@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    validate(reference, estimated, k=k)
    hits = []
    for ref, row in zip(reference, estimated, strict=True):
        ref = frozenset(ref)
        hits.append(sum(1 for e in row[:k] if (ref & frozenset(e)) or (not ref and not e)) / k)
    return float(np.mean(hits))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|, and 0 when both are empty (docs/method.md, "Metrics").

    Parameters
    ----------
    a, b : frozenset of str
        Label sets.

    Returns
    -------
    float
        The overlap in [0, 1].
    """
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def instrument_jaccard(
    reference: Sequence[frozenset[str]], estimated: Sequence[Sequence[frozenset[str]]], *, k: int
) -> float:
    """Instrument J@k: mean Jaccard overlap of instrument sets, seed vs each of the k results.

    J@k = (1/Q) sum_q (1/k) sum_{j <= k} |I_q & I_j| / |I_q | I_j| (0 when both empty).

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the seed's instrument set per
        query; instrument sets of each query's results.

    Returns
    -------
    float
        Instrument J@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    validate(reference, estimated, k=k)
    vals = [
        np.mean([jaccard(frozenset(ref), frozenset(e)) for e in row[:k]])
        for ref, row in zip(reference, estimated, strict=True)
    ]
    return float(np.mean(vals))


def label_preservation(
    reference: Sequence[frozenset[str]], estimated: Sequence[Sequence[frozenset[str]]], *, k: int
) -> float:
    """Preservation P@k of any other label column: exact set match with the seed's value.

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the seed's value set per
        query; value sets of each query's results.

    Returns
    -------
    float
        P@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    return genre_precision(reference, estimated, k=k)


def counterfactual_hit(
    reference: Sequence[Hashable], estimated: Sequence[Sequence[Hashable]], *, k: int
) -> float:
    """CF@k: fraction of queries whose known counterfactual is among the first k results.

    ``reference[q]`` is the id of the seed's group-mate in the target mood (the same
    piece rendered in that mood); ``estimated[q]`` the ranked result ids.

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, >= k), as in the module docstring: the counterfactual's id per
        query; result ids of each query.

    Returns
    -------
    float
        CF@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    validate(reference, estimated, k=k)
    return float(np.mean([ref in row[:k] for ref, row in zip(reference, estimated, strict=True)]))


def evaluate(
    *,
    target: Sequence[Hashable],
    retrieved_attribute: Sequence[Sequence[Hashable]],
    seed_labels: Mapping[str, Sequence[frozenset[str]]],
    retrieved_labels: Mapping[str, Sequence[Sequence[frozenset[str]]]],
    counterfactual: Sequence[Hashable] | None = None,
    retrieved_ids: Sequence[Sequence[Hashable]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    attribute: str = "mood",
) -> dict[str, float]:
    """Every metric at every k, as a name -> score mapping.

    Names: ``mood_p@k`` (the transformed attribute; ``{attribute}_p@k`` if not mood),
    ``genre_p@k``, ``genre_any_p@k``, ``inst_j@k`` (from an ``instruments`` column),
    ``{column}_p@k`` for any other preserved column, and ``cf@k`` when counterfactuals
    are given.

    Parameters
    ----------
    target : sequence, length Q
        Target value of the transformed attribute per query.
    retrieved_attribute : sequence of sequences, shape (Q, >= max(ks))
        That attribute's value for each query's results, best first.
    seed_labels : mapping of str to sequence of frozenset, each of length Q
        Per preserved column, the seed's value set per query.
    retrieved_labels : mapping of str to sequences, each of shape (Q, >= max(ks))
        Per preserved column, the value sets of each query's results.
    counterfactual : sequence, length Q, optional
        The id of each query's counterfactual (with ``retrieved_ids``).
    retrieved_ids : sequence of sequences, shape (Q, >= max(ks)), optional
        Result ids per query.
    ks : sequence of int
        Cut-offs.
    attribute : str
        Name of the transformed attribute (``mood``).

    Returns
    -------
    dict of str to float
        Every score, named as above.

    Raises
    ------
    InputError
        When an input fails :func:`validate`.
    """
    scores: dict[str, float] = {}
    attr_name = "mood" if attribute == "mood" else attribute
    for k in ks:
        scores[f"{attr_name}_p@{k}"] = mood_precision(target, retrieved_attribute, k=k)
        for col, ref in seed_labels.items():
            est = retrieved_labels[col]
            if col == "instruments":
                scores[f"inst_j@{k}"] = instrument_jaccard(ref, est, k=k)
            elif col == "genre":
                scores[f"genre_p@{k}"] = genre_precision(ref, est, k=k)
                scores[f"genre_any_p@{k}"] = genre_any_precision(ref, est, k=k)
            else:
                scores[f"{col}_p@{k}"] = label_preservation(ref, est, k=k)
        if counterfactual is not None and retrieved_ids is not None:
            scores[f"cf@{k}"] = counterfactual_hit(counterfactual, retrieved_ids, k=k)
    return scores
