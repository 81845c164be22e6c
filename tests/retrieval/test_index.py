"""FAISS indexes: exactness, recall, filtering inside the search, persistence, staleness."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from moodshift.data.catalog import Catalog
from moodshift.errors import InputError, StaleArtifactError, UnknownLabelError
from moodshift.retrieval.index import (
    FaissIndex,
    LabelPostings,
    build_catalog_index,
    build_index,
    catalog_postings,
    load_catalog_index,
)
from moodshift.retrieval.search import ExactIndex, Searcher, topk_cosine
from moodshift.synthetic import make_catalog


@pytest.fixture(scope="module")
def clustered() -> Catalog:
    """3,000 clustered tracks (genre x mood x instruments), 32-d."""
    return make_catalog(n=3000, dim=32, seed=5, groups=True, split=False)


@pytest.fixture(scope="module")
def hnsw(clustered) -> FaissIndex:
    return build_index(
        clustered.normalized, kind="hnsw", labels=catalog_postings(clustered), progress=False
    )


def _queries(cat: Catalog, n: int = 200, seed: int = 0) -> np.ndarray:
    """Held-out-like queries: stored vectors moved a little off the data."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(cat), size=n, replace=False)
    q = cat.normalized[rows] + 0.05 * rng.standard_normal((n, cat.dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact, strict=True)])
    )


def test_flat_equals_exact_search(clustered):
    index = build_index(clustered.normalized, kind="flat", progress=False)
    q = _queries(clustered)
    idx, sc = index.search(q, k=10)
    ref_i, ref_s = ExactIndex(clustered.normalized).search(q, k=10)
    assert idx.shape == (200, 10) and idx.dtype == np.int64 and sc.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sc, ref_s, atol=1e-5)
    assert index.meta["recall_at_10"] == 1.0


def test_auto_kind_switches_at_the_threshold(clustered):
    small = build_index(clustered.normalized, progress=False)
    assert small.kind == "flat"
    big = build_index(clustered.normalized, progress=False, exact_max_rows=1000)
    assert big.kind == "hnsw"
    with pytest.raises(InputError, match="unknown index kind"):
        build_index(clustered.normalized, kind="annoy", progress=False)
    with pytest.raises(InputError, match="unit-norm"):
        build_index(clustered.embeddings * 3, kind="flat", progress=False)


def test_hnsw_recall_at_10(clustered, hnsw):
    q = _queries(clustered, seed=1)
    approx, _ = hnsw.search(q, k=10)
    exact, _ = topk_cosine(q, clustered.normalized, k=10)
    assert _recall(approx, exact) >= 0.9
    # Measured at build time and stored, with the efSearch it chose.
    assert hnsw.meta["recall_at_10"] >= hnsw.meta["target_recall"] - 1e-9
    assert hnsw.params["efSearch"] in (16, 32, 64, 128, 256, 512)


def test_build_seconds_time_the_build_alone(clustered):
    t0 = time.perf_counter()
    index = build_index(clustered.normalized, kind="hnsw", progress=False, recall_sample=50)
    wall = time.perf_counter() - t0
    # The graph's construction: more than nothing, less than the call with its recall check.
    assert 0 < index.meta["build_seconds"] <= wall


def test_ivf_recall_and_filter(clustered):
    ivf = build_index(clustered.normalized, kind="ivf", progress=False, seed=3)
    q = _queries(clustered, seed=2)
    approx, _ = ivf.search(q, k=10)
    exact, _ = topk_cosine(q, clustered.normalized, k=10)
    assert _recall(approx, exact) >= 0.9
    allowed = np.zeros(len(clustered), dtype=bool)
    allowed[::3] = True
    idx, _ = ivf.search(q, k=10, allowed=allowed)
    assert allowed[idx[idx >= 0]].all()


def test_flat_filtered_equals_exact_filtered(clustered):
    index = build_index(
        clustered.normalized, kind="flat", labels=catalog_postings(clustered), progress=False
    )
    q = _queries(clustered, n=50, seed=3)
    allowed = index.postings.mask({"genre": "genre2", "mood": ["happy", "sad"]})
    assert 0 < allowed.sum() < len(clustered)
    idx, sc = index.search(q, k=10, allowed=allowed)
    ref_i, ref_s = ExactIndex(clustered.normalized).search(q, k=10, allowed=allowed)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sc, ref_s, atol=1e-5)
    assert allowed[idx].all()


def test_filter_with_fewer_allowed_rows_than_k(clustered):
    index = build_index(clustered.normalized, kind="flat", progress=False)
    allowed = np.zeros(len(clustered), dtype=bool)
    allowed[[5, 17, 900]] = True
    idx, sc = index.search(_queries(clustered, n=4), k=10, allowed=allowed)
    assert idx.shape == sc.shape == (4, 3)
    assert set(idx.ravel().tolist()) == {5, 17, 900}
    none, _ = index.search(_queries(clustered, n=2), k=10, allowed=np.zeros(len(clustered), bool))
    assert none.shape == (2, 0)


def test_hnsw_filter_inside_search(clustered, hnsw):
    q = _queries(clustered, n=100, seed=4)
    n = len(clustered)
    # A broad filter (above the exact-fallback threshold) goes through the graph.
    hnsw.exact_rows = 100
    try:
        broad = hnsw.postings.mask({"mood": ["happy", "sad", "calm"]})
        assert broad.sum() > hnsw.exact_threshold()
        idx, _ = hnsw.search(q, k=10, allowed=broad)
        assert (idx >= 0).all() and broad[idx].all()
        ref, _ = ExactIndex(clustered.normalized).search(q, k=10, allowed=broad)
        assert _recall(idx, ref) >= 0.9
        # A selective filter falls back to exact search over the allowed rows.
        narrow = np.zeros(n, dtype=bool)
        narrow[np.random.default_rng(0).choice(n, size=60, replace=False)] = True
        idx, sc = hnsw.search(q, k=10, allowed=narrow)
        ref_i, ref_s = ExactIndex(clustered.normalized).search(q, k=10, allowed=narrow)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(sc, ref_s, atol=1e-5)
    finally:
        hnsw.exact_rows = 20_000


def test_label_filters_with_poor_recall_are_moved_to_exact_search(clustered):
    # Thresholds low enough that label filters would go through the graph.
    index = build_index(
        clustered.normalized, kind="hnsw", labels=catalog_postings(clustered), progress=False,
        exact_filter_rows=50, exact_filter_fraction=0.0,
    )  # fmt: skip
    checks = index.meta["label_filter_checks"]
    assert checks, "label values above the threshold must be checked"
    failed = [c for c in checks.values() if c["recall_at_10"] < index.meta["target_recall"]]
    assert index.exact_rows == max([50] + [c["rows"] for c in failed])
    assert index.meta["exact_filter_rows"] == index.exact_rows
    # Every checked value is now either answered exactly or measured good enough.
    q = _queries(clustered, n=60, seed=6)
    exact = ExactIndex(clustered.normalized)
    for key, c in checks.items():
        column, value = key.split("=", 1)
        mask = index.postings.mask({column: value})
        got, _ = index.search(q, k=10, allowed=mask)
        ref, _ = exact.search(q, k=10, allowed=mask)
        if c["rows"] <= index.exact_rows:
            np.testing.assert_array_equal(got, ref)
        else:
            assert _recall(got, ref) >= 0.85


def test_searcher_accepts_a_faiss_index(serve_catalog, serve_model):
    index = build_index(serve_catalog.normalized, kind="flat", progress=False)
    fast = Searcher(catalog=serve_catalog, model=serve_model, index=index)
    slow = Searcher(catalog=serve_catalog, model=serve_model)
    tid = serve_catalog.labels["track_id"].iat[3]
    a = fast.query(track_id=tid, target_mood="happy", k=5, filters={"genre": "genre1"})
    b = slow.query(track_id=tid, target_mood="happy", k=5, filters={"genre": "genre1"})
    assert [r.track_id for r in a.results] == [r.track_id for r in b.results]
    assert tid not in {r.track_id for r in a.results}
    # The answer says which index served it.
    assert (a.index, b.index) == ("flat", "exact")


# ---------------------------------------------------------------------- label postings
def test_postings_from_frame_match_value_sets(clustered):
    labels = clustered.labels.copy()
    labels.loc[0, "genre"] = "genre1|genre2|genre1"  # a repeated value counts once
    labels.loc[1, "instruments"] = ""
    labels.loc[2, "instruments"] = " inst1 | inst9 "
    cols = ["mood", "genre", "instruments"]
    fast = LabelPostings.from_frame(labels, cols)
    from moodshift.values import parse_values

    slow = LabelPostings.from_labels({c: [parse_values(v) for v in labels[c]] for c in cols})
    assert fast.keys == slow.keys
    np.testing.assert_array_equal(fast.offsets, slow.offsets)
    np.testing.assert_array_equal(fast.rows, slow.rows)
    assert ("instruments", "inst9") in fast.keys


def test_postings_mask_semantics_and_errors(clustered):
    p = catalog_postings(clustered)
    genre = clustered.labels["genre"].to_numpy()
    mood = clustered.labels["mood"].to_numpy()
    m = p.mask({"genre": ["genre1", "genre3"], "mood": "sad"})
    np.testing.assert_array_equal(m, np.isin(genre, ["genre1", "genre3"]) & (mood == "sad"))
    with pytest.raises(UnknownLabelError, match="known values: genre0"):
        p.mask({"genre": "polka"})
    with pytest.raises(UnknownLabelError, match="filterable columns"):
        p.mask({"tempo": "fast"})
    with pytest.raises(InputError, match="empty value list"):
        p.mask({"genre": []})


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path, clustered, hnsw):
    q = _queries(clustered, n=30, seed=5)
    allowed = hnsw.postings.mask({"genre": "genre0"})
    before = hnsw.search(q, k=10), hnsw.search(q, k=10, allowed=allowed)
    hnsw.save(tmp_path / "idx")
    for mmap in (True, False):
        loaded = FaissIndex.load(tmp_path / "idx", mmap=mmap)
        assert loaded.kind == "hnsw" and loaded.n == len(clustered) and loaded.dim == 32
        assert loaded.params == hnsw.params
        assert loaded.meta["recall_at_10"] == hnsw.meta["recall_at_10"]
        np.testing.assert_array_equal(loaded.postings.mask({"genre": "genre0"}), allowed)
        after = loaded.search(q, k=10), loaded.search(q, k=10, allowed=allowed)
        for (ia, sa), (ib, sb) in zip(before, after, strict=True):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_allclose(sa, sb, atol=1e-6)


def test_load_rejects_a_folder_that_is_not_an_index(tmp_path):
    from moodshift.errors import FileFormatError

    with pytest.raises(FileFormatError, match="moodshift index"):
        FaissIndex.load(tmp_path)


def test_failed_save_keeps_the_old_index(tmp_path, clustered, monkeypatch):
    import faiss

    old = build_index(clustered.normalized[:500], kind="flat", progress=False)
    old.save(tmp_path / "idx")
    new = build_index(clustered.normalized, kind="flat", progress=False)
    real_write = faiss.write_index

    def write_then_crash(index, path):
        real_write(index, path)
        with open(path, "r+b") as fh:  # leave a truncated file behind, then fail
            fh.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        new.save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = FaissIndex.load(tmp_path / "idx")
    assert loaded.n == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp leftovers


# ---------------------------------------------------------------------- catalogue indexes
def test_catalog_index_built_checked_and_refused_when_stale(tmp_path):
    cat = make_catalog(n=600, dim=16, seed=9, groups=True)
    cat.save(tmp_path / "cat")
    info = build_catalog_index(tmp_path / "cat", progress=False)
    assert info["kind"] == "flat" and info["n"] == 600 and info["dim"] == 16
    assert info["recall_at_10"] == 1.0 and "build_seconds" in info
    meta = json.loads((tmp_path / "cat" / "index" / "index.json").read_text())
    assert meta["provenance"]["name"] == "synthetic"
    assert set(meta["fingerprint"]["hashes"]) >= {"track_ids", "embeddings", "labels"}

    loaded = Catalog.load(tmp_path / "cat")
    index = load_catalog_index(loaded, catalog_path=tmp_path / "cat")
    assert index is not None and index.postings is not None
    assert load_catalog_index(loaded, catalog_path=tmp_path / "nowhere") is None

    # Re-embedded catalogue (one row changed): the index is stale.
    changed = Catalog.load(tmp_path / "cat")
    emb = changed.embeddings.copy()
    emb[123] = -emb[123]
    changed.embeddings = emb
    with pytest.raises(StaleArtifactError, match=r"embeddings changed.*moodshift index --catalog"):
        load_catalog_index(changed, catalog_path=tmp_path / "cat")
    # Other track ids.
    renamed = Catalog.load(tmp_path / "cat")
    renamed.labels.loc[0, "track_id"] = "someone_else"
    with pytest.raises(StaleArtifactError, match="track ids changed"):
        load_catalog_index(renamed, catalog_path=tmp_path / "cat")
    # Other embedder.
    other = Catalog.load(tmp_path / "cat")
    other.provenance["version"] = "2"
    with pytest.raises(StaleArtifactError, match="embedder synthetic 1"):
        load_catalog_index(other, catalog_path=tmp_path / "cat")
    # Fewer tracks.
    with pytest.raises(StaleArtifactError, match="covers 600"):
        load_catalog_index(loaded.subset(np.arange(300)), catalog_path=tmp_path / "cat")


def test_catalog_index_custom_out_and_kind(tmp_path):
    cat = make_catalog(n=600, dim=16, seed=9)
    cat.save(tmp_path / "cat")
    info = build_catalog_index(tmp_path / "cat", kind="hnsw", out=tmp_path / "elsewhere")
    assert info["kind"] == "hnsw" and info["path"] == str(tmp_path / "elsewhere")
    assert 0.9 <= info["recall_at_10"] <= 1.0
    index = load_catalog_index(
        Catalog.load(tmp_path / "cat"), path=tmp_path / "elsewhere", mmap=True
    )
    assert index.kind == "hnsw"


# ---------------------------------------------------------------------- damaged or stale files
def test_index_is_stale_when_labels_change(tmp_path):
    """The fingerprint covered ids and embeddings only: relabelled tracks served old postings."""
    cat = make_catalog(n=600, dim=16, seed=9, groups=True)
    cat.save(tmp_path / "cat")
    build_catalog_index(tmp_path / "cat", progress=False)
    relabelled = Catalog.load(tmp_path / "cat")
    genres = sorted(relabelled.labels["genre"].unique())
    relabelled.labels.loc[7, "genre"] = next(
        g for g in genres if g != relabelled.labels["genre"][7]
    )
    relabelled.save(tmp_path / "cat2")
    (tmp_path / "cat" / "index").rename(tmp_path / "cat2" / "index")
    with pytest.raises(StaleArtifactError, match=r"labels changed.*moodshift index --catalog"):
        load_catalog_index(Catalog.load(tmp_path / "cat2"), catalog_path=tmp_path / "cat2")


def test_fingerprint_takes_every_stored_part():
    from moodshift.retrieval.index import index_fingerprint

    emb = np.eye(4, dtype=np.float32)
    base = index_fingerprint(track_ids=list("abcd"), embeddings=emb, labels={"g": list("xxyy")})
    assert set(base["hashes"]) == {"track_ids", "embeddings", "labels"}
    other = index_fingerprint(track_ids=list("abcd"), embeddings=emb, labels={"g": list("xyyy")})
    assert other["hashes"]["labels"] != base["hashes"]["labels"]
    extra = index_fingerprint(track_ids=list("abcd"), embeddings=emb, labels={"g": list("xxyy")},
                              arrays={"probs": np.zeros((4, 2))})  # fmt: skip
    assert set(extra["hashes"]) == {"track_ids", "embeddings", "labels", "probs"}


def _damage(folder, how):
    meta_path = folder / "index.json"
    meta = json.loads(meta_path.read_text())
    if how == "list":
        meta_path.write_text(json.dumps([meta]))
    elif how == "no_dim":
        del meta["dim"]
        meta_path.write_text(json.dumps(meta))
    elif how == "not_json":
        meta_path.write_text("{oops")
    elif how == "truncated_rows":
        data = (folder / "postings_rows.npy").read_bytes()
        (folder / "postings_rows.npy").write_bytes(data[: len(data) // 2])
    elif how == "missing_offsets":
        (folder / "postings_offsets.npy").unlink()
    elif how == "short_offsets":
        np.save(folder / "postings_offsets.npy", np.load(folder / "postings_offsets.npy")[:-3])
    elif how == "bad_postings_meta":
        meta["postings"] = {"n": 600, "keys": "genre"}
        meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "how",
    ["list", "no_dim", "not_json", "truncated_rows", "missing_offsets", "short_offsets",
     "bad_postings_meta"],
)  # fmt: skip
def test_damaged_index_files_give_one_line_and_exit_2(tmp_path, how, capsys):
    from moodshift.cli import main
    from moodshift.errors import FileFormatError

    cat = make_catalog(n=600, dim=16, seed=9, groups=True)
    cat.save(tmp_path / "cat")
    build_catalog_index(tmp_path / "cat", progress=False)
    _damage(tmp_path / "cat" / "index", how)
    with pytest.raises(FileFormatError) as info:
        FaissIndex.load(tmp_path / "cat" / "index")
    msg = str(info.value)
    assert "\n" not in msg and "index" in msg and "moodshift index" in msg
    # The CLI: exit 2 and one line (serve fails while loading, before it listens).
    from moodshift.training.train import TrainConfig, train

    train(cat, config=TrainConfig(epochs=1, k=10, seed=0), progress=False).save(tmp_path / "m")
    rc = main(["serve", "--catalog", str(tmp_path / "cat"), "--model", str(tmp_path / "m"),
               "--port", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
