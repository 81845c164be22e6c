"""The test oracle of the self-join: every class's top-k of every track by brute force."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _brute_force_class_topk(
    *, embeddings: np.ndarray, labels: np.ndarray, k: int
) -> list[list[list[int]]]:
    """``[i][c]``: track i's k nearest tracks of class c (itself excluded), best first.

    Full similarity matrix and a stable sort per list, so ties go to the lower index:
    fine on tiny data, and obviously right.
    """
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = x @ x.T
    m = int(labels.max()) + 1
    result = []
    for i in range(x.shape[0]):
        row = []
        for c in range(m):
            members = np.flatnonzero((labels == c) & (np.arange(len(labels)) != i))
            row.append(members[np.argsort(-sims[i, members], kind="stable")][:k].tolist())
        result.append(row)
    return result


@pytest.fixture
def brute_force_class_topk() -> Callable[..., list[list[list[int]]]]:
    """:func:`_brute_force_class_topk`, the oracle the self-join's paths are checked against."""
    return _brute_force_class_topk
