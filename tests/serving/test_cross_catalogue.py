"""A model trained on one catalogue serves another made by the same embedder."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.errors import EmbedderMismatchError
from moodshift.retrieval.search import Searcher
from moodshift.serving.state import ServingState
from moodshift.synthetic import make_catalog


@pytest.fixture(scope="module")
def untagged_library(serve_catalog):
    """Another catalogue of the same embedder, with no mood column at all (a music folder)."""
    lib = make_catalog(n=120, dim=serve_catalog.dim, seed=99, split=False)
    lib.provenance = dict(serve_catalog.provenance)
    lib.labels = lib.labels.drop(columns=["mood"])
    return lib


def test_untagged_seed_gets_its_mood_from_the_tagger(untagged_library, serve_model):
    searcher = Searcher(catalog=untagged_library, model=serve_model)
    tid = untagged_library.labels["track_id"].iat[0]
    answer = searcher.query(track_id=tid, target_mood="happy", k=5)
    results = answer.results
    p = serve_model.tagger.predict_proba(untagged_library.embeddings[:1])[0]
    assert answer.source_mood_source == "predicted"
    assert answer.source_mood == serve_model.classes[int(p.argmax())]
    assert len(results) == 5
    assert all(r.mood_source == "predicted" and r.mood == "happy" for r in results)

    state = ServingState(catalog=untagged_library, model=serve_model, index=None, max_k=20)
    body = state.query({"track_id": tid, "target_mood": "happy", "k": 5})
    assert body["source_mood_source"] == "predicted"
    assert [r["track_id"] for r in body["results"]] == [r.track_id for r in results]


def test_another_embedder_is_refused(untagged_library, serve_model):
    other = untagged_library.subset(np.arange(len(untagged_library)))
    other.provenance = {**other.provenance, "name": "clap", "version": "1"}
    with pytest.raises(EmbedderMismatchError, match="embedder"):
        Searcher(catalog=other, model=serve_model)
