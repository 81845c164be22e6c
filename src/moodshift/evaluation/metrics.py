"""Retrieval metrics, one pure function each, in the style of mir_eval.

Every metric is called as ``metric(reference, estimated, *, k)``:

- ``reference`` has one entry per query (the target mood, the seed's genre set, ...);
- ``estimated`` has one ranked list per query (the labels of the retrieved
  tracks, best first); only the first ``k`` entries count. A list may be shorter
  than ``k`` when fewer candidates exist: per-result averages then run over the
  results it has (an empty list scores 0), and lists are never padded.

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


def validate(
    reference: Sequence[Any],
    estimated: Sequence[Sequence[Any]],
    *,
    k: int,
    sets: bool = False,
) -> None:
    """Check a metric's inputs, in the manner of ``mir_eval.util.validate``.

    Rules: ``k`` is a positive integer; ``reference`` and every row of
    ``estimated`` are sequences (a plain string is refused: it would be read as
    its characters); both have one entry per query; no label is NaN (NaN equals
    nothing, yet ``nan in [nan]`` is true, which would count a hit). With
    ``sets=True`` every label is a set of strings (``frozenset``, ``set``, list
    or tuple), never a bare string.

    A row may hold fewer than ``k`` results (a query with fewer candidates than
    ``k``, e.g. an oracle restricted to a small class): it is scored over the
    results it has (see :func:`precision_at_k`).

    Parameters
    ----------
    reference : sequence, length Q
        One reference per query.
    estimated : sequence of sequences, length Q
        One ranked result list per query (any length; the first ``k`` are checked).
    k : int
        Cut-off.
    sets : bool
        Labels are sets of strings (genre, instruments) rather than single values.

    Raises
    ------
    InputError
        When any rule above is broken.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    for name, seq in (("reference", reference), ("estimated", estimated)):
        if isinstance(seq, str | bytes) or not isinstance(seq, Sequence | np.ndarray):
            raise InputError(f"{name} must be a sequence with one entry per query, got {seq!r:.80}")
    if len(reference) != len(estimated):
        raise InputError(
            f"reference has {len(reference)} queries but estimated has {len(estimated)}"
        )
    if len(reference) == 0:
        raise InputError("no queries to score")
    check = _check_set if sets else _check_label
    for i, ref in enumerate(reference):
        check(ref, f"reference[{i}]")
    for i, row in enumerate(estimated):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence | np.ndarray):
            raise InputError(
                f"estimated[{i}] must be a ranked list of labels, got {row!r:.80}; wrap it in a "
                f"list"
            )
        for j, e in enumerate(row[:k]):
            check(e, f"estimated[{i}][{j}]")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def _check_label(value: Any, where: str) -> None:
    if value is None or _is_nan(value):
        raise InputError(f"{where} is {value!r}; every label must be a real value")
    if isinstance(value, list | set | dict | np.ndarray):
        raise InputError(f"{where} is a {type(value).__name__}; give one hashable label")


def _check_set(value: Any, where: str) -> None:
    if isinstance(value, str | bytes) or not isinstance(value, frozenset | set | list | tuple):
        raise InputError(
            f"{where} must be a set of labels, got {value!r:.60}; wrap a single label as "
            f"frozenset({{label}}) (a string would be split into characters)"
        )
    for v in value:
        if not isinstance(v, str) or _is_nan(v):
            raise InputError(f"{where} holds {v!r}; labels in a set must be strings")


def _mean_over(row: Sequence[Any], k: int, hit: Any) -> float:
    """Mean of ``hit(e)`` over the first ``min(k, len(row))`` results; 0 for no results."""
    top = row[:k]
    if len(top) == 0:
        return 0.0
    return sum(hit(e) for e in top) / len(top)


def precision_at_k(
    reference: Sequence[Hashable], estimated: Sequence[Sequence[Hashable]], *, k: int
) -> float:
    """P@k: the fraction of the first k results equal to the reference, averaged over queries.

    P@k = (1/Q) sum_q (1/k_q) |{j <= k_q : est_q[j] == ref_q}| with k_q = min(k, |est_q|):
    a list shorter than k is scored over the results it has, and an empty list
    scores 0. A list is never padded (a repeated track would count twice).

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the wanted value per
        query; the values of each query's results.

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
    return _precision(reference, estimated, k=k)


def _precision(reference: Sequence[Any], estimated: Sequence[Sequence[Any]], *, k: int) -> float:
    hits = [
        _mean_over(row, k, lambda e, ref=ref: e == ref)
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
        Shapes (Q,) and (Q, <= k each), as in the module docstring: target mood per query;
        moods of each query's results.

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
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the seed's genre set per
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
    validate(reference, estimated, k=k, sets=True)
    return _precision([frozenset(r) for r in reference],
                      [[frozenset(e) for e in row] for row in estimated], k=k)  # fmt: skip


def genre_any_precision(
    reference: Sequence[frozenset[str]], estimated: Sequence[Sequence[frozenset[str]]], *, k: int
) -> float:
    """Genre-any P@k: fraction of retrieved tracks sharing at least one genre with the seed.

    Two empty sets count as a match (both unlabelled).

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the seed's genre set per
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
    validate(reference, estimated, k=k, sets=True)
    hits = []
    for ref, row in zip(reference, estimated, strict=True):
        ref = frozenset(ref)
        hits.append(
            _mean_over(row, k, lambda e, ref=ref: bool(ref & frozenset(e)) or (not ref and not e))
        )
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
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the seed's instrument
        set per query; instrument sets of each query's results.

    Returns
    -------
    float
        Instrument J@k in [0, 1].

    Raises
    ------
    InputError
        On inputs :func:`validate` refuses.
    """
    validate(reference, estimated, k=k, sets=True)
    vals = [
        _mean_over(row, k, lambda e, ref=ref: jaccard(frozenset(ref), frozenset(e)))
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
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the seed's value set per
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
    piece rendered in that mood); ``estimated[q]`` the ranked result ids. A list
    shorter than k is searched as it is.

    Parameters
    ----------
    reference, estimated, k
        Shapes (Q,) and (Q, <= k each), as in the module docstring: the counterfactual's id
        per query; result ids of each query.

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
    retrieved_attribute : sequence of sequences, length Q
        That attribute's value for each query's results, best first.
    seed_labels : mapping of str to sequence of frozenset, each of length Q
        Per preserved column, the seed's value set per query.
    retrieved_labels : mapping of str to sequences of length Q
        Per preserved column, the value sets of each query's results.
    counterfactual : sequence, length Q, optional
        The id of each query's counterfactual (with ``retrieved_ids``).
    retrieved_ids : sequence of sequences, length Q, optional
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
