"""Ranking spaces and the linear mood erasers (centroid span, LEACE)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from moodshift.errors import DataError, FileFormatError, InputError
from moodshift.model.ranking import (
    RankingSpace,
    cross_mood_pairs,
    fit_centroid,
    fit_eraser,
    fit_leace,
)
from moodshift.values import l2_normalize


def _moody(rng: np.random.Generator, n: int = 600, d: int = 16, m: int = 4):
    """Unit rows whose mood shifts them along a few directions, with correlated noise."""
    y = rng.integers(0, m, n)
    mix = rng.standard_normal((d, d)) * 0.3 + np.eye(d)
    shift = rng.standard_normal((m, d)) * 0.8
    x = rng.standard_normal((n, d)) @ mix + shift[y]
    return l2_normalize(x.astype(np.float32)), y


@pytest.mark.parametrize("kind", ["centroid", "leace"])
def test_keep_one_is_the_identity_and_keep_zero_erases(kind, rng):
    x, y = _moody(rng)
    eraser = fit_eraser(kind, x, y)
    assert eraser.rank == 3  # m - 1 directions
    same = eraser.space(keep=1.0)
    np.testing.assert_allclose(same.project(x), x, atol=1e-6)
    erased = eraser.space(keep=0.0).project(x)
    assert not np.allclose(erased, x, atol=1e-2)


def test_centroid_erasure_makes_the_class_centroids_coincide(rng):
    x, y = _moody(rng)
    space = fit_centroid(x, y).space(keep=0.0)
    z = x @ space.matrix + space.offset  # before renormalising: the linear edit itself
    cents = np.stack([z[y == c].mean(axis=0) for c in range(4)])
    assert np.abs(cents - cents[0]).max() < 1e-5
    before = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    assert np.abs(before - before[0]).max() > 0.1


def test_leace_leaves_no_linear_mood_signal(rng):
    """After LEACE no linear classifier beats chance by much; before, one is near perfect."""
    x, y = _moody(rng, n=1200)
    space = fit_leace(x, y).space(keep=0.0)
    z = x @ space.matrix + space.offset
    # The defining property: the cross-covariance of the edited rows with the one-hot is 0.
    onehot = np.eye(4)[y]
    cross = (z - z.mean(0)).T @ (onehot - onehot.mean(0)) / len(z)
    assert np.abs(cross).max() < 1e-5
    half = len(x) // 2
    acc_raw = LogisticRegression(max_iter=2000).fit(x[:half], y[:half]).score(x[half:], y[half:])
    acc_erased = LogisticRegression(max_iter=2000).fit(z[:half], y[:half]).score(z[half:], y[half:])
    assert acc_raw > 0.8
    assert acc_erased < 0.4  # chance is 0.25


def test_keep_interpolates_the_mood_component(rng):
    x, y = _moody(rng)
    eraser = fit_centroid(x, y)
    u = eraser.a  # orthonormal basis of the mood span
    full = np.linalg.norm(x @ u, axis=1)
    half = x @ eraser.space(keep=0.5).matrix
    np.testing.assert_allclose(np.linalg.norm(half @ u, axis=1), 0.5 * full, rtol=1e-4)


@pytest.mark.parametrize("kind", ["centroid", "leace"])
def test_pullback_ranks_raw_vectors_as_the_space_does(kind, rng):
    x, y = _moody(rng)
    space = fit_eraser(kind, x, y).space(keep=0.25)
    v = rng.standard_normal((3, x.shape[1])).astype(np.float32)
    lhs = x @ space.pullback(v).T
    rhs = (x @ space.matrix + space.offset) @ v.T
    # Equal up to one constant per query (v . offset).
    np.testing.assert_allclose(lhs - rhs, np.broadcast_to(-(v @ space.offset), lhs.shape),
                               atol=1e-4)  # fmt: skip


def test_erasers_need_two_moods(rng):
    x, _ = _moody(rng)
    with pytest.raises(DataError, match="two moods"):
        fit_centroid(x, np.zeros(len(x), dtype=np.int64))
    with pytest.raises(InputError, match="unknown eraser"):
        fit_eraser("pca", x, np.arange(len(x)) % 2)
    with pytest.raises(InputError, match="keep"):
        fit_centroid(x, np.arange(len(x)) % 2).space(keep=1.5)


def test_space_round_trips_and_damage_is_refused(tmp_path, rng):
    x, y = _moody(rng)
    space = fit_leace(x, y).space(keep=0.5)
    path = tmp_path / "ranking.safetensors"
    space.save(path)
    back = RankingSpace.load(path, dim=x.shape[1], info=space.info)
    np.testing.assert_array_equal(back.matrix, space.matrix)
    np.testing.assert_array_equal(back.offset, space.offset)
    with pytest.raises(FileFormatError, match="32-d model"):
        RankingSpace.load(path, dim=32, info={})
    bad = RankingSpace(matrix=np.full_like(space.matrix, np.nan), offset=space.offset)
    bad.save(path)
    with pytest.raises(FileFormatError, match="NaN"):
        RankingSpace.load(path, dim=x.shape[1], info={})
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match="not a readable ranking space"):
        RankingSpace.load(path, dim=x.shape[1], info={})


def test_cross_mood_pairs_from_groups_and_from_mutual_neighbours(rng):
    x, y = _moody(rng, n=200)
    groups = np.array([f"g{i // 4}" for i in range(200)])
    y_grouped = np.arange(200) % 4  # each group holds the four moods
    pairs, source = cross_mood_pairs(x, y_grouped, groups=groups)
    assert source == "groups"
    assert len(pairs) == 50 * 6  # every two members of each group
    assert (groups[pairs[:, 0]] == groups[pairs[:, 1]]).all()
    assert (y_grouped[pairs[:, 0]] != y_grouped[pairs[:, 1]]).all()
    pairs, source = cross_mood_pairs(x, y)
    assert source == "mutual_nn" and len(pairs) > 0
    assert (y[pairs[:, 0]] != y[pairs[:, 1]]).all()
    sims = x @ x.T
    for a, b in pairs[:20].tolist():
        # b is a's nearest track of b's mood, and the reverse.
        assert b == np.flatnonzero(y == y[b])[sims[a, y == y[b]].argmax()]
        assert a == np.flatnonzero(y == y[a])[sims[b, y == y[a]].argmax()]
