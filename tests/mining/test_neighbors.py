"""The per-class self-join: exact paths equal brute force, approximate paths are close."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from moodshift.errors import InputError
from moodshift.mining.neighbors import (
    class_topk,
    list_recall,
    merge_partial_topk,
    numba_available,
    topk_against,
    topk_recall,
)

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def _data(rng: np.random.Generator, n: int = 400, d: int = 16, m: int = 3):
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(m, size=n)
    return x, y


def _assert_matches_brute(nb, x, y, k, brute_force):
    ref = brute_force(embeddings=x, labels=y, k=k)
    n, m = nb.counts.shape
    for i in range(n):
        for c in range(m):
            got = nb.indices[i, c, : nb.counts[i, c]].tolist()
            assert set(got) == set(ref[i][c]), (i, c)
            assert i not in got  # self excluded
            assert (nb.indices[i, c, nb.counts[i, c] :] == -1).all()
    valid = np.isfinite(nb.scores)
    assert (valid == (nb.indices >= 0)).all()
    # Best first: scores never increase along a list.
    assert (np.diff(np.where(valid, nb.scores, -2.0), axis=2) <= 0).all()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"backend": "numba"}, marks=needs_numba, id="numba"),
        pytest.param(
            {"backend": "numba", "threads": 2, "block": 37, "chunk": 29},
            marks=needs_numba,
            id="numba-threads-small-tiles",
        ),
        pytest.param({"backend": "torch"}, id="torch"),
        pytest.param({"backend": "torch", "block": 50, "chunk": 33}, id="torch-small-tiles"),
        pytest.param({"backend": "torch", "precision": "bf16", "chunk": 64}, id="torch-bf16"),
    ],
)
def test_exact_equals_brute_force(rng, options, brute_force_class_topk):
    x, y = _data(rng)
    nb = class_topk(embeddings=x, labels=y, k=12, **options)
    _assert_matches_brute(nb, x, y, 12, brute_force_class_topk)
    assert nb.scores.dtype == np.float32 and nb.indices.dtype == np.int64
    # Scores are the cosine similarities of the listed rows.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, c = 5, 1
    expect = xn[nb.indices[i, c]] @ xn[i]
    np.testing.assert_allclose(nb.scores[i, c], expect, atol=1e-5)


@needs_numba
def test_streaming_kernel_many_buffer_cuts(rng, brute_force_class_topk):
    # Tiny tiles and a long class force many buffer cuts and threshold raises per row.
    x, y = _data(rng, n=1500, d=8, m=2)
    nb = class_topk(embeddings=x, labels=y, k=40, backend="numba", block=128, chunk=70)
    _assert_matches_brute(nb, x, y, 40, brute_force_class_topk)


@needs_numba
def test_ties_resolve_to_the_lower_index_like_a_stable_sort(brute_force_class_topk):
    # One-hot rows: every similarity is exactly 0 or 1, so lists are decided by ties alone.
    n, d = 90, 6
    x = np.eye(d, dtype=np.float32)[np.arange(n) % d]
    y = (np.arange(n) // 7) % 3
    for options in ({"block": 1000, "chunk": 4096}, {"block": 13, "chunk": 11, "threads": 2}):
        nb = class_topk(embeddings=x, labels=y, k=9, backend="numba", normalized=True, **options)
        ref = brute_force_class_topk(embeddings=x, labels=y, k=9)
        for i in range(n):
            for c in range(3):
                assert nb.indices[i, c, : len(ref[i][c])].tolist() == ref[i][c]


@needs_numba
def test_result_does_not_depend_on_the_shuffle_seed(rng):
    x, y = _data(rng, n=300)
    a = class_topk(embeddings=x, labels=y, k=10, backend="numba", seed=0)
    b = class_topk(embeddings=x, labels=y, k=10, backend="numba", seed=99)
    assert np.array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_small_classes_clamp_k_with_a_warning(rng, brute_force_class_topk):
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = np.zeros(60, dtype=np.int64)
    y[:5] = 1  # a class of 5 tracks
    with pytest.warns(UserWarning, match="K clamped per class"):
        nb = class_topk(embeddings=x, labels=y, k=10)
    assert (nb.counts[:5, 1] == 4).all()  # members: every other member
    assert (nb.counts[5:, 1] == 5).all()  # non-members: the whole class
    assert (nb.counts[:, 0] == 10).all()
    _assert_matches_brute(nb, x, y, 10, brute_force_class_topk)


def test_k_larger_than_every_class_is_clamped(rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = np.arange(20) % 2
    with pytest.warns(UserWarning, match="using K=9"):
        nb = class_topk(embeddings=x, labels=y, k=50)
    assert nb.k == 9


def test_low_precision_candidates_fall_back_to_fp32_where_unsure(rng):
    # Near-duplicates: many scores within bf16's error of the K-th, so the pool check must
    # send rows to the float32 path, and the result must still be exact.
    base = rng.standard_normal((1, 32)).astype(np.float32)
    x = base + 0.05 * rng.standard_normal((300, 32)).astype(np.float32)
    y = rng.integers(2, size=300)
    nb = class_topk(embeddings=x, labels=y, k=20, backend="torch", precision="bf16", chunk=64)
    assert nb.info["fp32_redone_rows"] > 0
    ref = class_topk(embeddings=x, labels=y, k=20, backend="torch")
    for i in range(300):
        for c in range(2):
            differ = set(nb.indices[i, c]) ^ set(ref.indices[i, c])
            # Only float32 rounding at the boundary may differ (different summation order).
            assert not differ or abs(nb.scores[i, c, -1] - ref.scores[i, c, -1]) < 1e-6


def test_shards_merge_to_the_whole(rng):
    q = rng.standard_normal((30, 8)).astype(np.float32)
    c = rng.standard_normal((200, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    ids = np.arange(1000, 1200)
    self_pos = np.full(30, -1)
    self_pos[3] = 17
    whole = topk_against(queries=q, candidates=c, candidate_ids=ids, k=15, self_pos=self_pos)
    parts = []
    for a, b in ((0, 64), (64, 150), (150, 200)):
        sp = np.where((self_pos >= a) & (self_pos < b), self_pos - a, -1)
        parts.append(topk_against(queries=q, candidates=c[a:b], candidate_ids=ids[a:b], k=15,
                                  self_pos=sp))  # fmt: skip
    merged_ids, merged_sc = merge_partial_topk(parts, k=15)
    assert np.array_equal(merged_ids, whole[0])
    np.testing.assert_allclose(merged_sc, whole[1], atol=1e-6)
    assert 1017 not in merged_ids[3]
    # Brute force: the same sets.
    sims = q @ c.T
    sims[3, 17] = -np.inf
    expect = ids[np.argsort(-sims, axis=1, kind="stable")[:, :15]]
    assert all(set(a) == set(b) for a, b in zip(merged_ids, expect, strict=True))


def test_merge_pads_short_lists():
    ids, sc = merge_partial_topk([(np.array([[4, -1]]), np.array([[0.5, -np.inf]]))], k=3)
    assert ids.tolist() == [[4, -1, -1]]
    assert np.isneginf(sc[0, 1:]).all()


@pytest.mark.parametrize("method", ["ivf", "ivf-faiss", "hnsw", "projected"])
def test_approximate_methods_have_high_recall(method, rng):
    from moodshift.bench.core import synthetic_vectors

    x, y = synthetic_vectors(n=3000, dim=32, classes=3, seed=1)
    exact = class_topk(embeddings=x, labels=y, k=20, normalized=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        approx = class_topk(embeddings=x, labels=y, k=20, normalized=True, method=method)
    assert topk_recall(approx, exact) >= 0.9
    rows = np.arange(len(x))
    for c in range(3):
        assert not (approx.indices[:, c, :] == rows[:, None]).any()  # self excluded
        listed = approx.indices[:, c, :][approx.indices[:, c, :] >= 0]
        assert (y[listed] == c).all()  # lists hold tracks of their class only
    assert approx.info["per_class"] == [method] * 3


def test_projected_join_keeps_most_neighbours_and_approximates_the_cosines():
    from moodshift.bench.core import synthetic_vectors
    from moodshift.mining.neighbors import PROJECTED_DIMS

    # 128-d rows projected onto 64 directions: a real reduction, unlike the 32-d case above.
    x, y = synthetic_vectors(n=3000, dim=2 * PROJECTED_DIMS, classes=3, seed=2)
    exact = class_topk(embeddings=x, labels=y, k=20, normalized=True)
    proj = class_topk(embeddings=x, labels=y, k=20, normalized=True, method="projected")
    assert 0.9 <= topk_recall(proj, exact) < 1.0  # approximate, and close
    assert proj.info["projected_dims"] == PROJECTED_DIMS
    assert 0.5 < proj.info["projected_energy"] < 1.0
    # The reported scores are projected similarities: near the true cosines, never above
    # them by more than the dropped directions allow.
    rows = np.arange(len(x))[:, None]
    ids = proj.indices[:, 1, :]
    ok = ids >= 0
    true = np.einsum("nd,nkd->nk", x, x[np.where(ok, ids, 0)])[ok]
    assert np.abs(proj.scores[:, 1, :][ok] - true).max() < 0.1
    assert not (ids == rows).any()
    # Unnormalised input gives the same lists as unit rows (up to float-rounding ties).
    scaled = class_topk(embeddings=x * 3.0, labels=y, k=20, method="projected")
    assert topk_recall(scaled, proj) > 0.99


def test_auto_dispatches_per_class_by_size(rng, brute_force_class_topk):
    x, y = _data(rng, n=600, d=16, m=2)
    y[:500] = 0
    y[500:] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nb = class_topk(embeddings=x, labels=y, k=10, method="auto", exact_max_class=200)
    assert nb.info["per_class"] == ["ivf", "exact"]
    # The exact class matches brute force exactly.
    ref = brute_force_class_topk(embeddings=x, labels=y, k=10)
    assert all(set(nb.indices[i, 1, : nb.counts[i, 1]]) == set(ref[i][1]) for i in range(600))


def test_topk_recall_counts_overlap(rng):
    x, y = _data(rng, n=100, m=2)
    a = class_topk(embeddings=x, labels=y, k=5)
    assert topk_recall(a, a) == 1.0
    b = class_topk(embeddings=x, labels=y, k=5)
    b.indices[:, :, 0] = -1  # drop one of five everywhere
    assert topk_recall(b, a) == pytest.approx(0.8)


def test_list_recall_on_plain_arrays():
    exact = np.array([[1, 2, 3, -1], [4, 5, -1, -1]])
    approx = np.array([[3, 9, 1], [6, 7, -1]])  # 2 of 3, then 0 of 2
    assert list_recall(approx, exact) == pytest.approx(2 / 5)
    assert list_recall(np.full((2, 3), -1), np.full((2, 4), -1)) == 1.0
    with pytest.raises(InputError, match="same rows"):
        list_recall(approx[:1], exact)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "nope"}, "unknown method"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"backend": "cuda"}, "unknown backend"),
        ({"k": 0}, "k must be"),
        ({"labels": np.array([0, 1, -1, 0])}, "labels must lie"),
        ({"labels": np.array([0.0, 1.0, 1.0, 0.0])}, "integer class"),
        ({"embeddings": np.zeros((4,), np.float32)}, "expected"),
    ],
)
def test_bad_inputs_raise_input_error(kwargs, match):
    args = {"embeddings": np.eye(4, dtype=np.float32), "labels": np.array([0, 1, 1, 0]), "k": 1}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        class_topk(**args)
