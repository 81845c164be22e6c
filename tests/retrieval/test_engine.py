"""The query engine: numpy transform, evidence tiers, and the evaluation rows built on it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from moodshift.data.catalog import l2_normalize
from moodshift.errors import InputError
from moodshift.evaluation import baselines
from moodshift.evaluation.evaluate import RetrievalEvaluator, evaluate_catalog
from moodshift.retrieval.engine import MoodEvidence, NumpyTransform, QueryEngine
from moodshift.training.model import Architecture, MoodshiftModel, MoodTransformer
from moodshift.training.tagger import fit_tagger


def _random_model(*, residual: bool, head_hidden: int, centroid_shift: bool, shift_scale: float,
                  seed: int) -> MoodshiftModel:  # fmt: skip
    torch.manual_seed(seed)
    arch = Architecture(dim=24, n_classes=4, hidden=(32, 16), class_hidden=(8, 12),
                        residual=residual, head_hidden=head_hidden,
                        centroid_shift=centroid_shift, shift_scale=shift_scale)  # fmt: skip
    net = MoodTransformer(arch)
    with torch.no_grad():
        # Trained weights are not zero: perturb the zero-initialised last layer too.
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if centroid_shift:
            net.centroids.copy_(torch.randn(4, 24) * 0.3)
    return MoodshiftModel(net=net, classes=["calm", "energetic", "happy", "sad"])


OPTIONS = list(itertools.product([False, True], [0, 20], [False, True], [1.0, 3.0]))


@pytest.mark.parametrize(("residual", "head_hidden", "centroid_shift", "shift_scale"), OPTIONS)
def test_numpy_transform_equals_model_transform(residual, head_hidden, centroid_shift,
                                                shift_scale, rng):  # fmt: skip
    if shift_scale != 1.0 and not centroid_shift:
        pytest.skip("shift_scale only acts with the centroid shift")
    model = _random_model(
        residual=residual, head_hidden=head_hidden, centroid_shift=centroid_shift,
        shift_scale=shift_scale, seed=5,
    )  # fmt: skip
    fast = NumpyTransform(model)
    x = l2_normalize(rng.standard_normal((64, 24)).astype(np.float32))
    src = rng.integers(0, 4, 64)
    tgt = rng.integers(0, 4, 64)
    strength = rng.uniform(0, 1, 64).astype(np.float32)
    ref = model.transform(x, source=src, target=tgt, strength=strength)
    got = fast(x, source=src, target=tgt, strength=strength)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # The verified builder keeps the numpy path (no fallback) for every option.
    assert isinstance(NumpyTransform.build(model), NumpyTransform)


def _engine(model, x, labels, proba=None, **kw):
    return QueryEngine(model=model, vectors=x, evidence=MoodEvidence(labels=labels, proba=proba),
                       **kw)  # fmt: skip


def test_labelled_candidates_rank_before_the_rest_and_fill_short_lists(rng):
    model = _random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0,
                          seed=1)  # fmt: skip
    x = l2_normalize(rng.standard_normal((50, 24)).astype(np.float32))
    labels = np.full(50, -1)
    labels[[3, 7, 11]] = 2  # only three tracks are labelled "happy"
    eng = _engine(model, x, labels)
    rows, _, _ = eng.search(x[:1], source=np.array([0]), target=np.array([2]), k=6,
                            evidence="labels", exclude=np.array([0]))  # fmt: skip
    assert set(rows[0, :3]) == {3, 7, 11}
    assert len(set(rows[0])) == 6 and 0 not in rows[0]


def test_unknown_evidence_and_probe_without_tagger_are_refused(rng):
    model = _random_model(residual=False, head_hidden=0, centroid_shift=False, shift_scale=1.0,
                          seed=2)  # fmt: skip
    x = l2_normalize(rng.standard_normal((20, 24)).astype(np.float32))
    eng = _engine(model, x, np.zeros(20, dtype=int))
    with pytest.raises(InputError, match="unknown evidence"):
        eng.search(x[:1], source=[0], target=[1], k=3, evidence="vibes")
    with pytest.raises(InputError, match="tagger"):
        eng.search(x[:1], source=[0], target=[1], k=3, evidence="probe")


def test_max_per_artist_caps_every_list(rng):
    model = _random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0,
                          seed=3)  # fmt: skip
    x = l2_normalize(rng.standard_normal((60, 24)).astype(np.float32))
    artists = np.arange(60) % 5
    eng = _engine(model, x, np.zeros(60, dtype=int), artists=artists)
    rows, _, _ = eng.search(x[:4], source=np.zeros(4, int), target=np.ones(4, int), k=5,
                            evidence="none", exclude=np.arange(4), max_per_artist=1)  # fmt: skip
    for r in rows:
        assert (r >= 0).all() and len(set(artists[r])) == 5


# ---------------------------------------------------------------------- evaluation contract
@pytest.fixture(scope="module")
def trained():
    """A synthetic catalogue with a mood x genre interaction and a briefly trained model."""
    from moodshift.synthetic import make_catalog
    from moodshift.training.train import TrainConfig, train

    cat = make_catalog(n=1200, dim=32, seed=7, interaction=True)
    model = train(cat, config=TrainConfig(epochs=8, seed=0, val_max_seeds=300), progress=False)
    return cat, model


def test_labels_at_strength_zero_reproduce_oracle_top1(trained):
    cat, model = trained
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool, classes=model.classes, label_fraction=1.0)
    rows = ev.engine_results(ev.engine(model), evidence="labels", strength=0.0)
    q = ev.queries
    oracle = baselines.oracle_topk(ev.x[q.seeds], target=q.target, pool=ev.x, pool_labels=ev.y,
                                   exclude=q.seeds, k=ev.k_max)  # fmt: skip
    np.testing.assert_array_equal(rows, oracle)


def test_label_fraction_zero_never_reads_a_pool_label(trained, rng):
    cat, model = trained
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool, classes=model.classes, label_fraction=0.0)
    before = ev.engine_results(ev.engine(model))
    ev.y = rng.permutation(ev.y)  # scramble every pool label; the queries stay the same
    after = ev.engine_results(ev.engine(model))
    np.testing.assert_array_equal(before, after)
    # ...while at F = 1 the same scramble changes the answers (the test can fail).
    ev.label_fraction = 1.0
    assert not np.array_equal(ev.engine_results(ev.engine(model)), before)


def test_tagger_filter_is_the_engine_at_strength_and_weight_zero(trained):
    cat, model = trained
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool, classes=model.classes, label_fraction=0.0)
    q = ev.queries
    ref = baselines.tagger_filter(ev.x[q.seeds], target=q.target, pool=ev.x,
                                  proba=model.tagger.predict_proba(ev.x), exclude=q.seeds,
                                  k=ev.k_max)  # fmt: skip
    got = ev.engine_results(ev.engine(model), evidence="probe", strength=0.0, weight=0.0)
    # Same candidates and the same cosine order (ties aside).
    assert (got[:, 0] == ref[:, 0]).mean() > 0.99


def test_evidence_aware_ranking_beats_the_label_and_tagger_filters(trained):
    cat, model = trained
    methods = ("query_default", "tagger_filter", "oracle_top1")
    report = evaluate_catalog(cat, model=model, label_fraction=1.0, methods=methods)
    m = report.methods
    # With every label visible: the label filter's mood, and more of the seed kept.
    assert m["query_default"]["mood_p@1"] >= 0.99
    assert m["query_default"]["genre_p@1"] >= m["oracle_top1"]["genre_p@1"] + 0.02
    # ...and far more mood than the tagger filter.
    assert m["query_default"]["mood_p@1"] >= m["tagger_filter"]["mood_p@1"] + 0.1
    assert report.to_json()["label_fraction"] == 1.0


def test_tagger_is_calibrated_and_saved(trained, tmp_path):
    cat, model = trained
    rep = model.tagger.report
    assert 0.5 < rep["val_accuracy"] <= 1.0 and rep["val_ece"] < 0.2
    model.save(tmp_path / "m")
    again = MoodshiftModel.load(tmp_path / "m")
    np.testing.assert_array_equal(again.tagger.weight, model.tagger.weight)
    assert again.config["evidence"] == model.config["evidence"]
    x = cat.embeddings[:5]
    np.testing.assert_allclose(again.tagger.predict_proba(x), model.tagger.predict_proba(x))
    refit = fit_tagger(cat, attribute="mood", classes=model.classes, seed=0)
    np.testing.assert_allclose(refit.weight, model.tagger.weight, atol=1e-6)


def test_index_stores_the_taggers_probabilities(trained, tmp_path):
    from moodshift.retrieval.index import build_catalog_index, load_catalog_index
    from moodshift.retrieval.search import Searcher

    cat, model = trained
    cat.save(tmp_path / "cat")
    build_catalog_index(tmp_path / "cat", kind="flat", model=model, progress=False)
    index = load_catalog_index(cat, catalog_path=tmp_path / "cat")
    np.testing.assert_allclose(index.mood_proba, model.tagger.predict_proba(cat.embeddings),
                               atol=1e-6)  # fmt: skip
    searcher = Searcher(catalog=cat, model=model, index=index)
    assert searcher.engine.evidence.proba is index.mood_proba
    a, _ = searcher.query(track_id=cat.labels["track_id"].iat[5], target_mood="sad", k=5)
    b, _ = Searcher(catalog=cat, model=model).query(
        track_id=cat.labels["track_id"].iat[5], target_mood="sad", k=5
    )
    assert [r.track_id for r in a] == [r.track_id for r in b]
