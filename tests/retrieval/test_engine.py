"""The query engine: numpy transform, evidence tiers, and the evaluation rows built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moodshift.errors import InputError
from moodshift.evaluation import baselines
from moodshift.evaluation.evaluate import RetrievalEvaluator, evaluate_catalog
from moodshift.model.network import Architecture, MoodshiftModel, MoodTransformer
from moodshift.model.tagger import fit_tagger
from moodshift.retrieval.engine import MoodEvidence, QueryEngine
from moodshift.values import l2_normalize


def _engine(model, x, labels, proba=None, **kw):
    return QueryEngine(model=model, vectors=x, evidence=MoodEvidence(labels=labels, proba=proba),
                       **kw)  # fmt: skip


def test_labelled_candidates_rank_before_the_rest_and_fill_short_lists(rng, random_model):
    model = random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0,
                         seed=1)  # fmt: skip
    x = l2_normalize(rng.standard_normal((50, 24)).astype(np.float32))
    labels = np.full(50, -1)
    labels[[3, 7, 11]] = 2  # only three tracks are labelled "happy"
    eng = _engine(model, x, labels)
    rows, _, _ = eng.search(x[:1], source=np.array([0]), target=np.array([2]), k=6,
                            evidence="labels", exclude=np.array([0]))  # fmt: skip
    assert set(rows[0, :3]) == {3, 7, 11}
    assert len(set(rows[0])) == 6 and 0 not in rows[0]


def test_unknown_evidence_and_probe_without_tagger_are_refused(rng, random_model):
    model = random_model(residual=False, head_hidden=0, centroid_shift=False, shift_scale=1.0,
                         seed=2)  # fmt: skip
    x = l2_normalize(rng.standard_normal((20, 24)).astype(np.float32))
    eng = _engine(model, x, np.zeros(20, dtype=int))
    with pytest.raises(InputError, match="unknown evidence"):
        eng.search(x[:1], source=[0], target=[1], k=3, evidence="vibes")
    with pytest.raises(InputError, match="tagger"):
        eng.search(x[:1], source=[0], target=[1], k=3, evidence="probe")


def test_max_per_artist_caps_every_list(rng, random_model):
    model = random_model(residual=True, head_hidden=0, centroid_shift=False, shift_scale=1.0,
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

    cat = make_catalog(n=1200, dim=32, seed=7)
    model = train(cat, config=TrainConfig(epochs=8, seed=0, val_max_seeds=300), progress=False)
    return cat, model


def test_labels_at_strength_zero_reproduce_oracle_top1(trained):
    cat, model = trained
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool, classes=model.classes, label_fraction=1.0)
    rows = ev.engine_results(ev.engine(model, ranking=None), evidence="labels", strength=0.0)
    q = ev.queries
    oracle = baselines.oracle_topk(ev.x[q.seeds], target=q.target, pool=ev.x, pool_labels=ev.y,
                                   exclude=q.seeds, k=ev.k_max)  # fmt: skip
    np.testing.assert_array_equal(rows, oracle)


@pytest.mark.parametrize("kind", ["centroid", "leace"])
def test_labels_at_strength_zero_in_an_erased_space_reproduce_erasure(trained, kind):
    """The erased seed with the label filter is one of the points the default query can take."""
    cat, model = trained
    pool = cat.subset(cat.split_indices("test"))
    ev = RetrievalEvaluator(pool, classes=model.classes, label_fraction=1.0)
    space = baselines.training_erasers(cat, attribute="mood", classes=model.classes)[kind].space()
    rows = ev.engine_results(ev.engine(model, ranking=space), evidence="labels", strength=0.0)
    q = ev.queries
    erased = baselines.erased_filter(ev.x[q.seeds], target=q.target, pool=ev.x, space=space,
                                     pool_labels=ev.y, exclude=q.seeds, k=ev.k_max)  # fmt: skip
    np.testing.assert_array_equal(rows, erased)
    plain = baselines.oracle_topk(ev.x[q.seeds], target=q.target, pool=ev.x, pool_labels=ev.y,
                                  exclude=q.seeds, k=ev.k_max)  # fmt: skip
    assert (rows[:, 0] != plain[:, 0]).any()  # the space changes the ranking


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
    got = ev.engine_results(ev.engine(model, ranking=None), evidence="probe", strength=0.0,
                            weight=0.0)  # fmt: skip
    np.testing.assert_array_equal(got, ref)
    # In an erased space the same point is the erasure baseline that reads the tagger.
    erasers = baselines.training_erasers(cat, attribute="mood", classes=model.classes)
    space = erasers["leace"].space()
    erased = baselines.erased_filter(ev.x[q.seeds], target=q.target, pool=ev.x, space=space,
                                     proba=model.tagger.predict_proba(ev.x), exclude=q.seeds,
                                     k=ev.k_max)  # fmt: skip
    got = ev.engine_results(ev.engine(model, ranking=space), evidence="probe", strength=0.0,
                            weight=0.0)  # fmt: skip
    np.testing.assert_array_equal(got, erased)


def _confounded_catalog(seed: int = 0):
    """Two genres x two moods where mood A's sound leans toward genre G2.

    Embeddings are ``genre + mood + noise`` with ``<a, g2> > 0``: a seed of
    (G1, A) is then nearer the (G2, B) tracks than the (G1, B) ones, so ranking the
    B-labelled tracks by similarity to the *seed* (the label filter) picks the
    wrong genre, while shifting the seed from A to B first removes the bias.
    """
    import pandas as pd

    from moodshift.data.catalog import Catalog

    rng = np.random.default_rng(seed)
    d = 16
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    g1, g2, b, e = basis[0], basis[1], basis[2], basis[3]
    a = (e + 1.5 * g2) / np.linalg.norm(e + 1.5 * g2)
    # Genres are quieter than moods, so mood A's lean toward G2 misleads the seed.
    genres = {"g1": 0.6 * g1, "g2": 0.6 * g2}
    moods = {"A": a, "B": b}
    rows, x = [], []
    for i in range(800):
        g, m = rng.choice(["g1", "g2"]), rng.choice(["A", "B"])
        x.append(genres[g] + moods[m] + 0.15 * rng.standard_normal(d))
        rows.append({"track_id": f"t{i:04d}", "mood": m, "genre": g, "instruments": "",
                     "artist": f"ar{i % 80:03d}"})  # fmt: skip
    cat = Catalog(embeddings=np.asarray(x, np.float32), labels=pd.DataFrame(rows),
                  provenance={"name": "confounded", "version": "1", "dim": d})  # fmt: skip
    cat.assign_split(attribute="mood", seed=seed)
    return cat


def test_evidence_aware_ranking_beats_the_label_and_tagger_filters():
    from moodshift.evaluation.baselines import training_centroids

    cat = _confounded_catalog()
    classes = ["A", "B"]
    # An untrained centroid-shift model is exactly the centroid shift (its network adds 0).
    net = MoodTransformer(Architecture(dim=cat.dim, n_classes=2, centroid_shift=True))
    net.centroids.copy_(
        torch.from_numpy(training_centroids(cat, attribute="mood", classes=classes))
    )
    model = MoodshiftModel(
        net=net, classes=classes, embedder=dict(cat.provenance),
        config={"evidence": {"strength_label": 1.0, "strength_probe": 1.0, "weight": 0.0}},
        tagger=fit_tagger(cat, attribute="mood", classes=classes),
    )  # fmt: skip
    methods = ("query_default", "tagger_filter", "oracle_top1")
    m = evaluate_catalog(cat, model=model, label_fraction=1.0, methods=methods).methods
    qd, tf, orc = m["query_default"], m["tagger_filter"], m["oracle_top1"]
    # The label filter's mood (all labels visible), and the seed's genre kept far more often.
    assert qd["mood_p@1"] == 1.0 == orc["mood_p@1"]
    assert qd["genre_p@1"] >= orc["genre_p@1"] + 0.2
    # The tagger filter shares the label filter's bias, and errs on mood too.
    assert qd["genre_p@1"] >= tf["genre_p@1"] + 0.2 and qd["mood_p@1"] >= tf["mood_p@1"]
    # Without any label (F = 0) the tagger stands in for the labels and the gain remains.
    m0 = evaluate_catalog(cat, model=model, label_fraction=0.0, methods=methods).methods
    assert m0["query_default"]["genre_p@1"] >= tf["genre_p@1"] + 0.2
    assert m0["query_default"]["mood_p@1"] >= tf["mood_p@1"] - 0.02


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
    a = searcher.query(track_id=cat.labels["track_id"].iat[5], target_mood="sad", k=5)
    b = Searcher(catalog=cat, model=model).query(
        track_id=cat.labels["track_id"].iat[5], target_mood="sad", k=5
    )
    assert [r.track_id for r in a.results] == [r.track_id for r in b.results]


@pytest.mark.parametrize("partitions", [True, False], ids=["partitions", "index-only"])
@pytest.mark.parametrize("evidence", ["auto", "labels", "probe", "none"])
def test_index_path_equals_the_exact_path(trained, evidence, partitions, monkeypatch):
    """Above the exact limit candidates are scored by partition (or searched in the
    index per tier and re-ranked); either way the answers equal the exact path's."""
    from moodshift.retrieval import engine as engine_mod
    from moodshift.retrieval.engine import catalog_evidence
    from moodshift.retrieval.index import build_index

    if not partitions:
        monkeypatch.setattr(engine_mod, "PARTITION_MAX_VALUES", 0)
    cat, model = trained
    labels = cat.labels.copy()
    labels.loc[::3, "mood"] = ""  # a partly labelled catalogue
    cat = cat.subset(np.arange(len(cat)))
    cat.labels = labels
    x = cat.normalized
    evidence_ = catalog_evidence(cat, model)
    index = build_index(x, kind="flat", progress=False, recall_sample=20)
    exact = QueryEngine(model=model, vectors=x, evidence=evidence_)
    indexed = QueryEngine(model=model, vectors=x, evidence=evidence_, index=index, exact_limit=0)
    assert exact.exact and not indexed.exact
    seeds = np.arange(0, 60, 3)
    src, _ = exact.source_of(seeds)
    tgt = (src + 1) % len(model.classes)
    kw = {"source": src, "target": tgt, "k": 10, "evidence": evidence, "exclude": seeds}
    a, sa, _ = exact.search(x[seeds], **kw)
    b, sb, _ = indexed.search(x[seeds], **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, atol=1e-5)


@pytest.mark.parametrize(("exact_limit", "partitions"), [(10**9, True), (0, True), (0, False)],
                         ids=["exact", "partitions", "index-only"])  # fmt: skip
def test_a_mixed_batch_equals_its_queries_one_by_one(trained, exact_limit, partitions, rng,
                                                     monkeypatch):  # fmt: skip
    """Per-query strengths and filters in one batch give each query its own answer."""
    from moodshift.retrieval import engine as engine_mod
    from moodshift.retrieval.engine import catalog_evidence
    from moodshift.retrieval.index import build_index

    if not partitions:
        monkeypatch.setattr(engine_mod, "PARTITION_MAX_VALUES", 0)
    cat, model = trained
    x = cat.normalized
    index = build_index(x, kind="flat", progress=False, recall_sample=20)
    eng = QueryEngine(model=model, vectors=x, evidence=catalog_evidence(cat, model), index=index,
                      exact_limit=exact_limit)  # fmt: skip
    seeds = np.arange(1, 40, 4)
    q = seeds.size
    src, _ = eng.source_of(seeds)
    tgt = (src + 1) % len(model.classes)
    strength = rng.choice([0.0, 0.5, 1.0], size=q).astype(np.float32)
    genre = cat.labels["genre"].to_numpy()
    masks = [None if i % 3 else genre == genre[seeds[i]] for i in range(q)]
    rows, scores, qv = eng.search(x[seeds], source=src, target=tgt, k=7, strength=strength,
                                  exclude=seeds, allowed=masks)  # fmt: skip
    # The same filters as one (q, n) array (no filter: every track allowed).
    dense = np.stack([np.ones(len(genre), bool) if m is None else m for m in masks])
    rows2, _, _ = eng.search(x[seeds], source=src, target=tgt, k=7, strength=strength,
                             exclude=seeds, allowed=dense)  # fmt: skip
    np.testing.assert_array_equal(rows, rows2)
    for i in range(q):
        r1, s1, q1 = eng.search(x[seeds[i : i + 1]], source=src[i : i + 1], target=tgt[i : i + 1],
                                k=7, strength=float(strength[i]), exclude=seeds[i : i + 1],
                                allowed=masks[i])  # fmt: skip
        np.testing.assert_array_equal(rows[i], r1[0])
        np.testing.assert_allclose(scores[i], s1[0], atol=1e-5)
        np.testing.assert_allclose(qv[i], q1[0], atol=1e-5)
        if masks[i] is not None:
            assert masks[i][rows[i][rows[i] >= 0]].all()


def test_allowed_masks_of_the_wrong_shape_are_refused(trained):
    cat, model = trained
    x = cat.normalized
    from moodshift.retrieval.engine import catalog_evidence

    eng = QueryEngine(model=model, vectors=x, evidence=catalog_evidence(cat, model))
    with pytest.raises(InputError, match="one per query"):
        eng.search(x[:2], source=[0, 0], target=[1, 1], k=3, allowed=[None])
    with pytest.raises(InputError, match="one per track"):
        eng.search(x[:1], source=[0], target=[1], k=3, allowed=np.ones(5, bool))
    with pytest.raises(InputError, match="strength must lie"):
        eng.search(x[:2], source=[0, 0], target=[1, 1], k=3, strength=np.array([0.5, 1.5]))


def test_partitions_respect_their_memory_budget_and_answers_do_not_change(trained, monkeypatch):
    """Blocks beyond the byte budget are not built; those targets go through the index."""
    from moodshift.retrieval import engine as engine_mod
    from moodshift.retrieval.engine import catalog_evidence
    from moodshift.retrieval.index import build_index

    cat, model = trained
    x = cat.normalized
    ev = catalog_evidence(cat, model)
    index = build_index(x, kind="flat", progress=False, recall_sample=20)
    one_block = int(np.bincount(ev.tiers("labels")[0][ev.tiers("labels")[0] >= 0]).max())
    monkeypatch.setattr(engine_mod, "PARTITION_BUDGET_BYTES", one_block * x.shape[1] * 4)
    eng = QueryEngine(model=model, vectors=x, evidence=ev, index=index, exact_limit=0)
    eng.warm("labels")
    built = [p for p in eng._partitions.values() if p is not None]
    assert 1 <= len(built) < len(model.classes) == len(eng._partitions)
    assert eng._partition_bytes <= engine_mod.PARTITION_BUDGET_BYTES
    exact = QueryEngine(model=model, vectors=x, evidence=ev)
    seeds = np.arange(0, 40, 2)
    src, _ = exact.source_of(seeds)
    kw = {"source": src, "target": (src + 1) % len(model.classes), "k": 8, "evidence": "labels",
          "exclude": seeds}  # fmt: skip
    np.testing.assert_array_equal(eng.search(x[seeds], **kw)[0], exact.search(x[seeds], **kw)[0])


@pytest.mark.parametrize("evidence", ["auto", "labels", "probe"])
def test_an_index_built_with_the_model_searches_its_ranking_space(trained, evidence, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    """`moodshift index --model` stores the tracks in the model's ranking space: searched
    through it, the index path gives the exact path's answers."""
    import copy

    from moodshift.retrieval import engine as engine_mod
    from moodshift.retrieval.engine import catalog_evidence
    from moodshift.retrieval.index import build_catalog_index, load_catalog_index

    monkeypatch.setattr(engine_mod, "PARTITION_MAX_VALUES", 0)  # every query through the index
    cat, model = trained
    model = copy.copy(model)
    erasers = baselines.training_erasers(cat, attribute="mood", classes=model.classes)
    model.ranking = erasers["leace"].space(keep=0.25)
    cat.save(tmp_path / "cat")
    build_catalog_index(tmp_path / "cat", kind="flat", model=model, progress=False)
    index = load_catalog_index(cat, catalog_path=tmp_path / "cat")
    assert index.meta["ranking_space"] == model.ranking.fingerprint()
    x = cat.normalized
    ev_ = catalog_evidence(cat, model)
    exact = QueryEngine(model=model, vectors=x, evidence=ev_)
    indexed = QueryEngine(model=model, vectors=x, evidence=ev_, index=index, exact_limit=0)
    assert indexed.index_space is model.ranking
    seeds = np.arange(0, 90, 3)
    src, _ = exact.source_of(seeds)
    kw = {"source": src, "target": (src + 1) % len(model.classes), "k": 10,
          "evidence": evidence, "exclude": seeds}  # fmt: skip
    a, sa, _ = exact.search(x[seeds], **kw)
    b, sb, _ = indexed.search(x[seeds], **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, atol=1e-5)
