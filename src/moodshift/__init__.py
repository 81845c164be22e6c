"""moodshift: controllable music retrieval ("like this track, but happier").

Public API::

    from moodshift import Catalog, TrainConfig, train, MoodshiftModel, evaluate_catalog, Searcher
"""

from __future__ import annotations

__version__ = "0.1.0"

from moodshift.catalog import Catalog, import_catalog
from moodshift.errors import MoodshiftError
from moodshift.evaluate import evaluate_catalog
from moodshift.model import MoodshiftModel
from moodshift.search import Searcher
from moodshift.train import TrainConfig, train

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
