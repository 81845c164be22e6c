"""Catalogue import, validation, split and crash-safe saving."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moodshift.data.catalog import Catalog, import_catalog, make_split, read_mtg_jamendo
from moodshift.errors import DataError, FileFormatError, InputError, UnknownTrackError


def _write(tmp: Path, emb: np.ndarray, rows: list[dict]) -> tuple[Path, Path]:
    np.save(tmp / "emb.npy", emb)
    pd.DataFrame(rows).to_csv(tmp / "tracks.csv", index=False)
    return tmp / "emb.npy", tmp / "tracks.csv"


def _rows(n: int, moods=("happy", "sad", "calm", "energetic")) -> list[dict]:
    return [
        {"track_id": f"t{i}", "mood": moods[i % len(moods)], "genre": "rock|pop" if i % 3 else "",
         "instruments": "piano", "artist": f"a{i // 4}"}
        for i in range(n)
    ]  # fmt: skip


def test_import_round_trip(tmp_path, rng):
    emb = rng.standard_normal((80, 8)).astype(np.float32)
    e, lab = _write(tmp_path, emb, _rows(80))
    cat = import_catalog(labels=lab, embeddings=e, embedder={"name": "x", "version": "1"})
    cat.save(tmp_path / "cat")
    back = Catalog.load(tmp_path / "cat")
    np.testing.assert_array_equal(back.embeddings, emb)
    assert back.provenance["name"] == "x" and back.provenance["dim"] == 8
    assert list(back.track_ids) == [f"t{i}" for i in range(80)]
    assert back.value_sets("genre")[1] == frozenset({"rock", "pop"})
    assert back.value_sets("genre")[0] == frozenset()
    assert (back.split == cat.split).all()
    assert set(back.label_columns()) == {"mood", "genre", "instruments"}


def test_split_is_deterministic_stratified_and_artist_disjoint(rng):
    y = rng.integers(0, 4, size=2000)
    artists = rng.integers(0, 300, size=2000).astype(str)
    a = make_split(y=y, groups=artists, seed=1)
    b = make_split(y=y, groups=artists, seed=1)
    assert (a == b).all()
    for art in np.unique(artists):
        assert len(set(a[artists == art])) == 1
    for c in range(4):
        frac = np.mean(a[y == c] == "train")
        assert 0.72 < frac < 0.88, frac
    c = make_split(y=y, groups=None, seed=1)
    for cls in range(4):
        counts = pd.Series(c[y == cls]).value_counts(normalize=True)
        assert counts["train"] == pytest.approx(0.8, abs=0.02)
        assert counts["test"] == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize(
    ("mutate", "error", "needle"),
    [
        (lambda e, r: e.__setitem__((5, 2), np.nan), DataError, "rows 5"),
        (lambda e, r: e.__setitem__((7, 0), np.inf), DataError, "rows 7"),
        (lambda e, r: r.__setitem__(3, {**r[3], "track_id": "t0"}), DataError, "duplicate"),
        (lambda e, r: r.__setitem__(9, {**r[9], "mood": "angry"}), DataError, r"angry \(1\)"),
    ],
)
def test_bad_catalogue_inputs(tmp_path, rng, mutate, error, needle):
    emb = rng.standard_normal((40, 4)).astype(np.float32)
    rows = _rows(40)
    mutate(emb, rows)
    e, lab = _write(tmp_path, emb, rows)
    with pytest.raises(error, match=needle):
        import_catalog(labels=lab, embeddings=e)


def test_row_count_mismatch(tmp_path, rng):
    e, lab = _write(tmp_path, rng.standard_normal((39, 4)), _rows(40))
    with pytest.raises(DataError, match="row-count mismatch: 39 embeddings but 40"):
        import_catalog(labels=lab, embeddings=e)


def test_non_utf8_csv(tmp_path, rng):
    np.save(tmp_path / "emb.npy", rng.standard_normal((2, 4)))
    (tmp_path / "t.csv").write_bytes("track_id,mood\nt1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(FileFormatError, match="not UTF-8"):
        import_catalog(labels=tmp_path / "t.csv", embeddings=tmp_path / "emb.npy")


def test_malformed_files(tmp_path, rng):
    _, lab = _write(tmp_path, rng.standard_normal((4, 2)), _rows(4))
    (tmp_path / "emb.npy").write_bytes(b"not an npy file")
    with pytest.raises(FileFormatError, match=r"not a readable \.npy"):
        import_catalog(labels=lab, embeddings=tmp_path / "emb.npy")
    with pytest.raises(FileFormatError, match="does not exist"):
        import_catalog(labels=tmp_path / "missing.csv", embeddings=tmp_path / "emb.npy")
    np.save(tmp_path / "emb.npy", rng.standard_normal((4, 2)))
    (tmp_path / "bad.csv").write_text('track_id,mood\n"t1,happy\n')
    with pytest.raises(FileFormatError):
        import_catalog(labels=tmp_path / "bad.csv", embeddings=tmp_path / "emb.npy")
    (tmp_path / "nomood.csv").write_text("track_id,genre\nt1,rock\nt2,pop\nt3,a\nt4,b\n")
    with pytest.raises(DataError, match="lack column"):
        import_catalog(labels=tmp_path / "nomood.csv", embeddings=tmp_path / "emb.npy")


def test_parquet_with_embedding_column(tmp_path, rng):
    emb = rng.standard_normal((40, 3)).astype(np.float32)
    df = pd.DataFrame(_rows(40))
    df["embedding"] = list(emb)
    df.to_parquet(tmp_path / "t.parquet")
    cat = import_catalog(labels=tmp_path / "t.parquet")
    np.testing.assert_allclose(cat.embeddings, emb)


def test_multi_valued_attribute_is_refused(small_catalog):
    cat = small_catalog.subset(np.arange(40))
    cat.labels.loc[2, "mood"] = "happy|sad"
    with pytest.raises(DataError, match="rows 2"):
        cat.classes("mood")


def test_unknown_track_lists_examples(small_catalog):
    with pytest.raises(UnknownTrackError, match="ids look like syn_000000"):
        small_catalog.index_of("nope")


def test_split_fraction_validation():
    with pytest.raises(InputError):
        make_split(y=np.zeros(10, int), fractions=(0.5, 0.5, 0.5))


def _tsv(path: Path, rows: list[tuple[str, str, list[str]]]) -> None:
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for tid, artist, tags in rows:
        lines.append("\t".join([tid, artist, "album_1", f"00/{tid}.mp3", "200.0", *tags]))
    path.write_text("\n".join(lines) + "\n")


def test_mtg_jamendo_reader(tmp_path):
    _tsv(tmp_path / "autotagging_moodtheme.tsv", [
        ("track_0000001", "artist_01", ["mood/theme---happy", "mood/theme---film"]),
        ("track_0000002", "artist_01", ["mood/theme---sad", "mood/theme---happy"]),
        ("track_0000003", "artist_02", ["mood/theme---dark"]),
        ("track_0000004", "artist_02", ["mood/theme---calm"]),
    ])  # fmt: skip
    _tsv(tmp_path / "autotagging_genre.tsv", [
        ("track_0000001", "artist_01", ["genre---pop", "genre---rock"]),
        ("track_0000004", "artist_02", ["genre---ambient"]),
    ])  # fmt: skip
    _tsv(tmp_path / "autotagging_instrument.tsv", [
        ("track_0000004", "artist_02", ["instrument---piano"]),
    ])  # fmt: skip
    df, skipped, keep = read_mtg_jamendo(tmp_path)
    assert df["track_id"].tolist() == ["track_0000001", "track_0000004"]
    assert df["mood"].tolist() == ["happy", "calm"]
    assert df["genre"].tolist() == ["pop|rock", "ambient"]
    assert df["instruments"].tolist() == ["", "piano"]
    assert skipped == {"no_target_mood": 1, "several_target_moods": 1}
    assert keep.tolist() == [0, 3]


def test_mtg_jamendo_bad_header(tmp_path):
    (tmp_path / "autotagging_moodtheme.tsv").write_text("a\tb\tc\n")
    with pytest.raises(FileFormatError, match="MTG-Jamendo"):
        read_mtg_jamendo(tmp_path)


def _save_and_hang(path: str) -> None:
    """Child process: starts saving a new catalogue and stalls half-way (then gets killed)."""
    import moodshift.data.catalog as catalog_module
    from moodshift.synthetic import make_catalog

    real_save = np.save

    def save_then_hang(file, arr, **kwargs):
        real_save(file, arr, **kwargs)  # the embeddings are written...
        Path(path + ".midway").write_text("1")
        time.sleep(600)  # ...and the process dies before labels and catalog.json

    catalog_module.np.save = save_then_hang
    make_catalog(n=50, dim=8, seed=9).save(path)


def test_killed_save_keeps_previous_version(tmp_path, small_catalog):
    dest = tmp_path / "cat"
    small_catalog.save(dest)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_save_and_hang, args=(str(dest),))
    proc.start()
    deadline = time.time() + 120
    while not Path(str(dest) + ".midway").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert Path(str(dest) + ".midway").exists(), "the child never reached the middle of save()"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    back = Catalog.load(dest)
    assert len(back) == len(small_catalog)
    np.testing.assert_array_equal(back.embeddings, small_catalog.embeddings)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the killed save's
    # The next save removes the killed save's temporary folder and replaces it normally.
    small_catalog.subset(np.arange(10)).save(dest)
    assert len(Catalog.load(dest)) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_save_keeps_previous_version(tmp_path, small_catalog, monkeypatch):
    dest = tmp_path / "cat"
    small_catalog.save(dest)
    bigger = small_catalog.subset(np.arange(100))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError):
        bigger.save(dest)
    assert len(Catalog.load(dest)) == len(small_catalog)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_saves_remove_leftovers_of_dead_processes_only(tmp_path, small_catalog):
    dest = tmp_path / "cat"
    dead = tmp_path / ".cat.999999999.abcd.tmp"  # no such process
    legacy = tmp_path / ".cat.k2j3h4.tmp"  # the format before process ids
    live = tmp_path / f".cat.{os.getppid()}.efgh.tmp"  # a save running elsewhere
    other = tmp_path / ".catalog.999999999.abcd.tmp"  # another artefact's
    for d in (dead, legacy, live, other):
        d.mkdir()
        (d / "embeddings.npy").write_bytes(b"partial")
    small_catalog.subset(np.arange(10)).save(dest)
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists()


@pytest.mark.parametrize("missing", ["", "nan", None])
def test_unknown_artist_is_its_own_group(rng, missing):
    """One empty artist cell used to switch the artist-disjoint split off for everyone."""
    import warnings

    y = rng.integers(0, 4, size=1000)
    artists = rng.integers(0, 100, size=1000).astype(str).astype(object)
    artists[::50] = missing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = make_split(y=y, groups=artists, seed=0)
    known = np.array([a not in ("", "nan", None) for a in artists])
    for art in np.unique(artists[known].astype(str)):
        assert len(set(split[artists == art])) == 1, art
    # Unknown-artist tracks are spread like singletons, not lumped into one part.
    assert len(set(split[~known])) > 1


def test_assign_split_keeps_artists_disjoint_with_an_empty_cell(small_catalog):
    import warnings

    cat = small_catalog.subset(np.arange(len(small_catalog)))
    cat.labels["artist"] = [f"a{i // 5}" for i in range(len(cat))]
    cat.labels.loc[3, "artist"] = ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cat.assign_split(seed=0)
    assert cat.split_info["artist_disjoint"] is True
    split = cat.labels["split"].to_numpy()
    for art, rows in cat.labels.groupby("artist").groups.items():
        if art:
            assert len(set(split[np.asarray(rows)])) == 1


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "catalog.json").write_text("[1, 2]"), "expected an object"),
        (lambda d: (d / "catalog.json").write_text("{"), "not valid JSON"),
        (lambda d: (d / "catalog.json").write_text('{"n_tracks": "many", "dim": 32}'),
         "n_tracks"),
        (lambda d: (d / "embeddings.npy").write_bytes((d / "embeddings.npy").read_bytes()[:500]),
         "embeddings.npy"),
        (lambda d: (d / "embeddings.npy").unlink(), "missing"),
        (lambda d: np.save(d / "embeddings.npy", np.zeros((5, 32), np.float32)), "shape"),
        (lambda d: (d / "labels.parquet").write_bytes(b"PAR1junk"), "labels.parquet"),
    ],
)  # fmt: skip
def test_damaged_catalogue_files_give_one_line(tmp_path, small_catalog, damage, needle):
    small_catalog.save(tmp_path / "cat")
    damage(tmp_path / "cat")
    with pytest.raises(FileFormatError) as info:
        Catalog.load(tmp_path / "cat")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and "moodshift import" in msg, msg


def test_load_never_runs_code_from_a_planted_npy(tmp_path, small_catalog, code_payload):
    small_catalog.save(tmp_path / "cat")
    np.save(tmp_path / "cat" / "embeddings.npy", np.array([code_payload], dtype=object),
            allow_pickle=True)  # fmt: skip
    for mmap in (False, True):
        with pytest.raises(FileFormatError, match=r"embeddings\.npy") as info:
            Catalog.load(tmp_path / "cat", mmap=mmap)
        assert "\n" not in str(info.value)
    assert not code_payload.marker.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mmap", [False, True])
def test_load_refuses_non_finite_embeddings(tmp_path, small_catalog, bad, mmap, monkeypatch):
    import moodshift._finite

    # Small chunks, so that the chunked check is exercised past its first chunk.
    monkeypatch.setattr(moodshift._finite, "CHUNK_VALUES", 64)
    small_catalog.save(tmp_path / "cat")
    emb = np.load(tmp_path / "cat" / "embeddings.npy")
    emb[len(emb) - 3, 5] = bad
    np.save(tmp_path / "cat" / "embeddings.npy", emb)
    with pytest.raises(FileFormatError, match="NaN or infinity") as info:
        Catalog.load(tmp_path / "cat", mmap=mmap)
    msg = str(info.value)
    assert "embeddings.npy" in msg and "moodshift import" in msg and "\n" not in msg


def test_concat_catalogs_keeps_ids_unique_and_audio_paths_resolvable(tmp_path, rng):
    from moodshift.data.catalog import concat_catalogs
    from moodshift.errors import InputError

    def part(root: Path) -> Catalog:
        labels = pd.DataFrame({"track_id": ["a", "b"], "mood": ["happy", "sad"],
                               "audio_path": ["x.wav", "y.wav"]})  # fmt: skip
        return Catalog(embeddings=rng.standard_normal((2, 4)).astype(np.float32), labels=labels,
                       provenance={"name": "toy", "version": "1", "dim": 4}, root=root)  # fmt: skip

    one, two = part(tmp_path / "one"), part(tmp_path / "two")
    both = concat_catalogs([one, two], prefixes=("c_", "w_"))
    assert list(both.labels["track_id"]) == ["c_a", "c_b", "w_a", "w_b"]
    assert both.audio_path(2) == tmp_path / "two" / "x.wav"
    np.testing.assert_array_equal(both.embeddings[2:], two.embeddings)
    other = part(tmp_path)
    other.provenance["name"] = "features"
    with pytest.raises(InputError):
        concat_catalogs([one, other], prefixes=("a", "b"))


def test_saving_over_a_catalogue_keeps_what_else_lives_in_its_folder(tmp_path, small_catalog):
    """Rewriting the labels (moodshift label, the page) must not delete a music library's
    state or the index built into the folder."""
    folder = tmp_path / "cat"
    small_catalog.save(folder)
    (folder / "library.json").write_text('{"version": 2}')
    (folder / "index").mkdir()
    (folder / "index" / "index.json").write_text("{}")
    relabelled = Catalog.load(folder)
    labels = relabelled.labels.copy()
    labels.loc[0, "mood"] = "sad" if labels.loc[0, "mood"] != "sad" else "happy"
    relabelled.labels = labels
    relabelled.save(folder)
    assert (folder / "library.json").read_text() == '{"version": 2}'
    assert (folder / "index" / "index.json").read_text() == "{}"
    assert Catalog.load(folder).labels.loc[0, "mood"] == labels.loc[0, "mood"]
    assert not list(tmp_path.glob(".cat.*"))  # no temporary folder left behind


def test_relabelling_a_mapped_catalogue_links_its_vectors_instead_of_rewriting_them(
    tmp_path, small_catalog
):
    folder = tmp_path / "cat"
    small_catalog.save(folder)
    before = (folder / "embeddings.npy").stat().st_ino
    mapped = Catalog.load(folder, mmap=True)
    labels = mapped.labels.copy()
    labels.loc[0, "mood"] = "sad" if labels.loc[0, "mood"] != "sad" else "happy"
    mapped.labels = labels
    mapped.save(folder)
    assert (folder / "embeddings.npy").stat().st_ino == before  # the same file, linked
    back = Catalog.load(folder)
    np.testing.assert_array_equal(back.embeddings, small_catalog.embeddings)
    assert back.labels.loc[0, "mood"] == labels.loc[0, "mood"]
    # An in-memory catalogue (not a map of that file) is written out as before.
    Catalog.load(folder).save(folder)
    assert (folder / "embeddings.npy").stat().st_ino != before
