"""moodshift: controllable music retrieval ("like this track, but happier").

Public API::

    from moodshift import Catalog, TrainConfig, train, MoodshiftModel, evaluate_catalog, Searcher

Names are imported lazily, so ``import moodshift`` (and every worker process
that imports a submodule) does not pay for torch and pandas until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Catalog": "moodshift.data.catalog",
    "import_catalog": "moodshift.data.catalog",
    "MoodshiftError": "moodshift.errors",
    "evaluate_catalog": "moodshift.evaluation.evaluate",
    "MoodshiftModel": "moodshift.model.network",
    "Searcher": "moodshift.retrieval.search",
    "TrainConfig": "moodshift.training.train",
    "train": "moodshift.training.train",
}

if TYPE_CHECKING:
    from moodshift.data.catalog import Catalog, import_catalog
    from moodshift.errors import MoodshiftError
    from moodshift.evaluation.evaluate import evaluate_catalog
    from moodshift.model.network import MoodshiftModel
    from moodshift.retrieval.search import Searcher
    from moodshift.training.train import TrainConfig, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'moodshift' has no attribute {name!r}")


__all__ = [
    "Catalog",
    "MoodshiftError",
    "MoodshiftModel",
    "Searcher",
    "TrainConfig",
    "__version__",
    "evaluate_catalog",
    "import_catalog",
    "train",
]
