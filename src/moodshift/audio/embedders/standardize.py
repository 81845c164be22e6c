"""Per-catalogue z-scoring for embedders whose dimensions have unrelated units.

:func:`~moodshift.audio.embedders.embed_files` fits a :class:`Standardizer` on the
successfully embedded tracks of a run when the embedder asks for it
(``needs_standardization``), applies it, and records it in the run's
provenance under ``"standardizer"``. Tracks embedded later against that
catalogue (queries) must reuse it::

    std = Standardizer.from_provenance(catalog_provenance)
    run = embed_files([query], embedder="features", standardizer=std)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from moodshift.errors import DimensionMismatchError, InputError

__all__ = ["Standardizer", "fit_standardizer"]

# A dimension that is constant over the catalogue keeps unit scale instead of
# being divided by ~0 (which would blow up any later query that differs).
_MIN_STD = 1e-6


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / std`` per dimension.

    Attributes
    ----------
    mean : ndarray, shape (dim,), float64
    std : ndarray, shape (dim,), float64
        Strictly positive (constant dimensions get 1).
    """

    mean: np.ndarray
    std: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardise rows.

        Parameters
        ----------
        x : ndarray, shape (n, dim) or (dim,)

        Returns
        -------
        ndarray, same shape, float32
        """
        x = np.asarray(x)
        if x.shape[-1] != self.dim:
            raise DimensionMismatchError(
                f"cannot standardise {x.shape[-1]}-d embeddings with a {self.dim}-d "
                "standardizer; were they made by the same embedder?"
            )
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable form (stored in provenance dicts)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed standardizer {d!r}: needs 'mean' and 'std' lists") from exc
        if mean.ndim != 1 or mean.shape != std.shape:
            raise InputError(
                f"malformed standardizer: mean {mean.shape} and std {std.shape} differ"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise InputError("malformed standardizer: non-finite mean or non-positive std")
        return cls(mean=mean, std=std)

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any]) -> Standardizer:
        """The standardizer recorded by :func:`~moodshift.audio.embedders.embed_files`."""
        d = provenance.get("standardizer")
        if d is None:
            raise InputError(
                "this provenance records no standardizer: its embeddings were not standardised"
            )
        return cls.from_dict(d)


def fit_standardizer(x: np.ndarray) -> Standardizer:
    """Fit per-dimension mean and standard deviation.

    Parameters
    ----------
    x : ndarray, shape (n, dim)
        At least two finite rows.

    Returns
    -------
    Standardizer
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(
            f"need at least 2 embeddings of shape (n, dim) to fit a standardizer, got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise InputError("cannot fit a standardizer on embeddings containing NaN or inf")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return Standardizer(mean=mean, std=std)
