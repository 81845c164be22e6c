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
    "Catalog": "moodshift.catalog",
    "import_catalog": "moodshift.catalog",
    "MoodshiftError": "moodshift.errors",
    "evaluate_catalog": "moodshift.evaluate",
    "MoodshiftModel": "moodshift.model",
    "Searcher": "moodshift.search",
    "TrainConfig": "moodshift.train",
    "train": "moodshift.train",
}

if TYPE_CHECKING:
    from moodshift.catalog import Catalog, import_catalog
    from moodshift.errors import MoodshiftError
    from moodshift.evaluate import evaluate_catalog
    from moodshift.model import MoodshiftModel
    from moodshift.search import Searcher
    from moodshift.train import TrainConfig, train


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
