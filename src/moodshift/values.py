"""Generic helpers on vectors and label cells, used from data up to serving.

* :func:`l2_normalize`: rows scaled to unit norm (retrieval is by cosine similarity);
* :func:`parse_values`: a ``|``-separated label cell as a set of values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Separates the values of a multi-valued label cell (``rock|pop``).
SEPARATOR = "|"


def l2_normalize(x: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit norm (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def parse_values(value: Any) -> frozenset[str]:
    """Split a ``|``-separated label cell into a set of values (empty cell -> empty set)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return frozenset()
    text = str(value).strip()
    if not text:
        return frozenset()
    return frozenset(v.strip() for v in text.split(SEPARATOR) if v.strip())
