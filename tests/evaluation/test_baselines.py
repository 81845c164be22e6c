"""Baselines with known answers, and the evaluation protocol around them."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.errors import InputError
from moodshift.evaluation import baselines
from moodshift.evaluation.evaluate import (
    METHODS,
    RetrievalEvaluator,
    evaluate_catalog,
    make_queries,
)


def test_oracle_top1_hand_case():
    pool = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.8, -0.6]], dtype=np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    labels = np.array([0, 1, 1, 0])
    # seed row 0 (class 0) -> target class 1: nearest class-1 track is row 1.
    rows = baselines.oracle_topk(pool[[0]], target=np.array([1]), pool=pool, pool_labels=labels,
                                 exclude=np.array([0]), k=2)  # fmt: skip
    assert rows.tolist() == [[1, 2]]
    # seed row 3 targeting its own class must not return itself.
    rows = baselines.oracle_topk(pool[[3]], target=np.array([0]), pool=pool, pool_labels=labels,
                                 exclude=np.array([3]), k=1)  # fmt: skip
    assert rows.tolist() == [[0]]


def test_centroids_and_shift(rng):
    x = rng.standard_normal((50, 6)).astype(np.float32)
    y = np.repeat([0, 1], 25)
    c = baselines.class_centroids(x, y, n_classes=2)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(c[1], xn[25:].mean(0), atol=1e-6)
    same = baselines.mood_shift(x[:3], source=y[:3], target=y[:3], centroids=c)
    np.testing.assert_allclose(same, xn[:3], atol=1e-6)
    zero = baselines.mood_shift(x[:3], source=y[:3], target=np.ones(3, int), centroids=c,
                                alpha=0.0)  # fmt: skip
    np.testing.assert_allclose(zero, xn[:3], atol=1e-6)


def test_random_never_returns_seed(rng):
    rows = baselines.random_results(n_pool=20, exclude=np.arange(20), k=19, rng=rng)
    assert not (rows == np.arange(20)[:, None]).any()
    assert all(len(set(r)) == 19 for r in rows)


def test_make_queries_every_other_class():
    q = make_queries(np.array([0, 1, 2]), n_classes=3)
    assert sorted(zip(q.seeds.tolist(), q.target.tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 2),
        (2, 0),
        (2, 1),
    ]


def test_evaluate_protocol_known_answers(small_catalog):
    r = evaluate_catalog(small_catalog, methods=[m for m in METHODS if m != "model"])
    m = r.methods
    assert m["oracle_top1"]["mood_p@1"] == 1.0
    assert m["oracle_rand100"]["mood_p@10"] == 1.0
    # random: about the target class's share of the pool (1/4 here)
    assert m["random"]["mood_p@10"] == pytest.approx(0.25, abs=0.05)
    assert m["mood_centroid"]["genre_p@1"] < m["seed_nn"]["genre_p@1"]
    assert r.n_queries == 3 * len(small_catalog.split_indices("test"))
    for rows in r.results.values():
        assert not (rows == r.queries["seeds"][:, None]).any()
    # CF@10 counted by hand: the seed's group-mate in the target mood among the top 10.
    pool = small_catalog.subset(small_catalog.split_indices("test"))
    groups = pool.labels["group"].astype(str).to_numpy()
    moods = pool.labels["mood"].astype(str).to_numpy()
    vocab = sorted(set(moods))
    q = r.queries
    hits = []
    for seed, target, row in zip(q["seeds"], q["target"], r.results["mood_shift"], strict=True):
        mates = np.flatnonzero((groups == groups[seed]) & (moods == vocab[target]))
        if mates.size:
            hits.append(bool(np.isin(mates, row[:10]).any()))
    assert hits and m["mood_shift"]["cf@10"] == pytest.approx(np.mean(hits))
    assert m["mood_shift"]["cf@10"] > m["random"]["cf@10"]


def test_evaluator_rejects_seed_in_results(small_catalog):
    pool = small_catalog.subset(small_catalog.split_indices("test"))
    ev = RetrievalEvaluator(pool)
    bad = np.repeat(ev.queries.seeds[:, None], ev.k_max, axis=1)
    with pytest.raises(InputError, match="own result"):
        ev.score(bad)


@pytest.mark.parametrize("oracle", ["top", "rand"])
def test_oracles_score_short_lists_instead_of_repeating_a_track(oracle):
    """Class 1 has two tracks, k = 4: the list is those two, never one of them twice."""
    pool = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.8, -0.6], [0.7, 0.7]], dtype=np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    labels = np.array([0, 1, 1, 0, 0])
    kw = dict(target=np.array([1]), pool=pool, pool_labels=labels, exclude=np.array([0]), k=4)
    if oracle == "top":
        rows = baselines.oracle_topk(pool[[0]], **kw)
    else:
        rows = baselines.oracle_rand(pool[[0]], big_k=100, rng=np.random.default_rng(0), **kw)
    got = rows[0][rows[0] >= 0].tolist()
    assert sorted(got) == [1, 2] and rows[0][2:].tolist() == [-1, -1]


def test_evaluator_scores_short_oracle_lists_over_their_results(small_catalog):
    """A class smaller than k_max: oracle mood P@k_max stays 1 (no repeats, no misses)."""
    from moodshift.data.catalog import Catalog

    cat = small_catalog
    test = cat.subset(cat.split_indices("test"))
    labels = test.labels.copy()
    rare = np.flatnonzero(labels["mood"].to_numpy() == "sad")[:3]
    keep = np.r_[np.flatnonzero(labels["mood"].to_numpy() != "sad"), rare]
    small = Catalog(embeddings=test.embeddings[keep], labels=labels.iloc[keep],
                    provenance=dict(test.provenance))  # fmt: skip
    ev = RetrievalEvaluator(small, ks=(1, 10))
    q = ev.queries
    rows = baselines.oracle_topk(ev.x[q.seeds], target=q.target, pool=ev.x, pool_labels=ev.y,
                                 exclude=q.seeds, k=ev.k_max)  # fmt: skip
    to_sad = q.target == ev.classes.index("sad")
    assert (rows[to_sad] >= 0).sum(axis=1).max() == 3  # three sad tracks, not ten
    scores = ev.score(rows)
    assert scores["mood_p@10"] == pytest.approx(1.0)
    for r in rows[to_sad]:
        real = r[r >= 0]
        assert len(set(real.tolist())) == len(real)
