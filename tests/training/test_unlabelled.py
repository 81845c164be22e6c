"""Partially labelled catalogues: unlabelled tracks are kept, retrievable, never learned from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moodshift.data.catalog import Catalog, import_catalog
from moodshift.errors import DataError
from moodshift.evaluation.evaluate import RetrievalEvaluator
from moodshift.retrieval.search import Searcher
from moodshift.synthetic import make_catalog
from moodshift.training.train import TrainConfig, train


def _partly_labelled(seed: int = 4) -> tuple[Catalog, np.ndarray]:
    cat = make_catalog(n=600, dim=16, seed=seed)
    rng = np.random.default_rng(seed)
    hidden = rng.random(len(cat)) < 0.3
    cat.labels.loc[hidden, "mood"] = ""
    return cat, np.flatnonzero(hidden)


def test_classes_mark_unlabelled_tracks_and_refuse_several_values():
    cat, hidden = _partly_labelled()
    _, y = cat.classes("mood")
    assert (y[hidden] == -1).all() and (y[np.setdiff1d(np.arange(len(cat)), hidden)] >= 0).all()
    assert cat.label_summary("mood") == {"labelled": len(cat) - hidden.size,
                                         "unlabelled": hidden.size}  # fmt: skip
    cat.labels.loc[0, "mood"] = "happy|sad"
    with pytest.raises(DataError, match="at most one value"):
        cat.classes("mood")


def test_poisoned_unlabelled_tracks_do_not_change_the_trained_weights():
    cat, hidden = _partly_labelled()
    cfg = TrainConfig(epochs=3, seed=0, batch_size=64, choose_strength=False)
    a = train(cat, config=cfg, progress=False)
    poisoned = cat.subset(np.arange(len(cat)))
    rng = np.random.default_rng(0)
    poisoned.embeddings[hidden] = rng.standard_normal((hidden.size, cat.dim)) * 1e3
    b = train(poisoned, config=cfg, progress=False)
    for (name, wa), wb in zip(a.net.state_dict().items(), b.net.state_dict().values(),
                              strict=True):  # fmt: skip
        assert torch_equal(wa, wb), name
    np.testing.assert_array_equal(a.tagger.weight, b.tagger.weight)
    # ...while poisoning labelled tracks does change them (the test can fail).
    labelled = np.setdiff1d(np.arange(len(cat)), hidden)[:50]
    poisoned.embeddings[labelled] = rng.standard_normal((labelled.size, cat.dim)) * 1e3
    c = train(poisoned, config=cfg, progress=False)
    assert not all(
        torch_equal(x, y)
        for x, y in zip(a.net.state_dict().values(), c.net.state_dict().values(), strict=True)
    )


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_unlabelled_tracks_are_never_seeds_but_are_retrievable():
    cat, hidden = _partly_labelled()
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool)
    unl = set(np.flatnonzero(ev.y < 0).tolist())
    assert unl and not unl & set(ev.queries.seeds.tolist())
    model = train(cat, config=TrainConfig(epochs=2, seed=0), progress=False)
    searcher = Searcher(catalog=cat, model=model)
    tid = cat.labels["track_id"].iat[int(hidden[0])]
    answer = searcher.query(track_id=tid, target_mood="happy", k=len(cat) - 1, evidence="none")
    ids = {r.track_id for r in answer.results}
    assert set(cat.labels["track_id"].iloc[hidden[1:]]) <= ids
    # The unlabelled seed's source mood came from the tagger, and the answer says so.
    assert answer.source_mood_source == "predicted"
    auto = searcher.query(track_id=tid, target_mood="happy", k=20).results
    sources = {r.mood_source for r in auto}
    assert sources <= {"label", "predicted"}
    assert all(r.mood == "happy" for r in auto)


def test_import_keeps_empty_moods(tmp_path):
    cat = make_catalog(n=120, dim=8, seed=2, split=False)
    labels = cat.labels.copy()
    labels.loc[::4, "mood"] = ""
    labels.to_csv(tmp_path / "labels.csv", index=False)
    np.save(tmp_path / "emb.npy", cat.embeddings)
    out = import_catalog(labels=tmp_path / "labels.csv", embeddings=tmp_path / "emb.npy")
    assert out.label_summary("mood") == {"labelled": 90, "unlabelled": 30}
    # Unlabelled tracks form a stratum of their own: most train, some held out.
    split = pd.Series(out.labels["split"]).where(out.labels["mood"] == "").dropna()
    assert (split == "train").mean() >= 0.6 and (split != "train").any()
