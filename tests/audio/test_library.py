"""A real music folder: compressed files encoded by ffmpeg, tags written by mutagen.

The library is made in the test (nothing binary is committed): synthetic
clips encoded to MP3, Ogg Vorbis, FLAC, M4A (AAC) and Opus, tagged the way
players and taggers tag them (ID3 TMOO, Vorbis MOOD, the MP4 freeform MOOD
atom), plus the files a real folder has that are not music.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf

from moodshift.audio.embedders.features import FeaturesEmbedder
from moodshift.audio.library import (
    TAG_MAX_CHARS,
    embed_library,
    read_tags,
    scan_library,
    write_mood_tag,
)
from moodshift.cli import main
from moodshift.data.catalog import Catalog
from moodshift.errors import DataError, InputError

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs the encoders: apt-get install ffmpeg"
)
SR = 44100
# relative path -> (tags, synthesis seed)
TRACKS: dict[str, tuple[dict[str, object], int]] = {
    "Ann Arbor/First/01 Sun.mp3": (
        {
            "title": "Sun",
            "artist": "Ann Arbor",
            "album": "First",
            "genre": ["Rock", "Pop"],
            "mood": "Happy",
        },
        1,
    ),
    "Ann Arbor/First/02 Rain.ogg": (
        {
            "title": "Rain",
            "artist": "Ann Arbor",
            "album": "First",
            "genre": ["Folk"],
            "mood": "sad",
        },
        2,
    ),
    "Bo Diddle/03 Up.flac": (
        {"title": "Up", "artist": "Bo Diddle", "genre": ["Rock"], "mood": ["happy", "Energetic"]},
        3,
    ),
    "Bo Diddle/04 Down.m4a": (
        {"title": "Down", "artist": "Bo Diddle", "genre": ["Jazz"], "mood": "sad"},
        4,
    ),
    "Cy/05 Untagged mood.mp3": ({"title": "Plain", "artist": "Cy", "genre": ["Jazz"]}, 5),
    "Cy/06 No tags at all.opus": ({}, 6),
}


def _clip(seed: int, seconds: float = 2.5) -> np.ndarray:
    """A chord with a tremolo and a little noise, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    base = 110.0 * 2 ** (seed / 12)
    y = sum(np.sin(2 * np.pi * base * r * t) for r in (1.0, 1.26, 1.5)) / 3
    y = y * (1 + 0.4 * np.sin(2 * np.pi * (1 + seed % 3) * t)) + 0.02 * rng.standard_normal(t.size)
    return (0.4 * y).astype(np.float32)


def _encode(dst: Path, seed: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    wav = dst.with_suffix(".src.wav")
    sf.write(wav, np.stack([_clip(seed), _clip(seed + 50)], axis=1), SR)
    codec = {
        ".mp3": ["-c:a", "libmp3lame", "-b:a", "96k"],
        ".ogg": ["-c:a", "libvorbis"],
        ".flac": ["-c:a", "flac"],
        ".m4a": ["-c:a", "aac", "-b:a", "96k"],
        ".opus": ["-c:a", "libopus", "-b:a", "64k"],
    }[dst.suffix]
    # -map_metadata -1: no encoder tags, so every tag below is mutagen's
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(wav), *codec, "-map_metadata", "-1", str(dst)],
        check=True,
    )
    wav.unlink()


def _tag(path: Path, tags: dict[str, object]) -> None:
    """Write tags as real taggers do, one container format at a time."""
    if not tags:
        return
    values = {k: v if isinstance(v, list) else [v] for k, v in tags.items()}
    ext = path.suffix
    if ext == ".mp3":
        from mutagen.id3 import ID3, TALB, TCON, TIT2, TMOO, TPE1

        id3 = ID3()
        frames = {"title": TIT2, "artist": TPE1, "album": TALB, "genre": TCON, "mood": TMOO}
        for key, frame in frames.items():
            if key in values:
                id3.add(frame(encoding=3, text=values[key]))
        id3.save(path)
    elif ext == ".m4a":
        from mutagen.mp4 import MP4, MP4FreeForm

        f = MP4(path)
        atoms = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "genre": "\xa9gen"}
        for key, atom in atoms.items():
            if key in values:
                f[atom] = values[key]
        if "mood" in values:
            f["----:com.apple.iTunes:MOOD"] = [MP4FreeForm(v.encode()) for v in values["mood"]]
        f.save()
    else:  # Vorbis comments: FLAC, Ogg Vorbis, Opus
        import mutagen

        f = mutagen.File(path)
        for key, vals in values.items():
            f[key.upper()] = vals
        f.save()


def _make_library(root: Path) -> Path:
    for rel, (tags, seed) in TRACKS.items():
        _encode(root / rel, seed)
        _tag(root / rel, tags)
    (root / "Cy" / "corrupt.mp3").write_bytes(b"ID3\x04\x00\x00" + bytes(range(256)) * 40)
    (root / "Cy" / "empty.flac").write_bytes(b"")
    (root / "Ann Arbor" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(root / "Bo Diddle/03 Up.flac", root / "Bo Diddle/.03 Up.flac")  # hidden file
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_library(tmp_path_factory.mktemp("music"))


def test_tags_of_every_container(library: Path) -> None:
    mp3 = read_tags(library / "Ann Arbor/First/01 Sun.mp3")
    assert mp3 == {
        "title": ["Sun"],
        "artist": ["Ann Arbor"],
        "album": ["First"],
        "genre": ["Rock", "Pop"],
        "mood": ["Happy"],
    }
    assert read_tags(library / "Ann Arbor/First/02 Rain.ogg")["mood"] == ["sad"]
    assert read_tags(library / "Bo Diddle/03 Up.flac")["mood"] == ["happy", "Energetic"]
    m4a = read_tags(library / "Bo Diddle/04 Down.m4a")
    assert m4a["mood"] == ["sad"] and m4a["genre"] == ["Jazz"]
    assert "mood" not in read_tags(library / "Cy/05 Untagged mood.mp3")
    assert read_tags(library / "Cy/06 No tags at all.opus") == {}


def test_tags_of_wma_and_wavpack(tmp_path: Path) -> None:
    import mutagen
    from mutagen.asf import ASF

    from moodshift.audio.embedders.pipeline import load_audio

    wma, wv = tmp_path / "a.wma", tmp_path / "b.wv"
    sf.write(tmp_path / "src.wav", _clip(9, seconds=1.0), SR)
    for dst in (wma, wv):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "src.wav"),
                        "-map_metadata", "-1", "-fflags", "+bitexact", str(dst)],
                       check=True)  # fmt: skip
    f = ASF(wma)
    f["Title"], f["Author"], f["WM/Genre"], f["WM/Mood"] = ["T"], ["A"], ["Rock;Pop"], ["Calm"]
    f.save()
    g = mutagen.File(wv)
    if g.tags is None:
        g.add_tags()
    g["Mood"], g["Genre"] = "sad", "Jazz\x00Blues"  # APEv2: several values, NUL-separated
    g.save()
    assert read_tags(wma) == {"title": ["T"], "artist": ["A"], "genre": ["Rock", "Pop"],
                              "mood": ["Calm"]}  # fmt: skip
    wv_tags = read_tags(wv)
    assert wv_tags["mood"] == ["sad"] and wv_tags["genre"] == ["Jazz", "Blues"]
    for p in (wma, wv):  # FFmpeg (PyAV) decodes both
        y, sr = load_audio(p)
        assert sr == SR and 0.95 <= len(y) / sr <= 1.1


def test_scan_sorts_the_folder(library: Path, tmp_path: Path) -> None:
    scan = scan_library(root=library)
    rel = [p.relative_to(library).as_posix() for p in scan.audio]
    assert rel == sorted([*TRACKS, "Cy/corrupt.mp3"])
    assert [p.name for p in scan.empty] == ["empty.flac"]
    assert [p.name for p in scan.hidden] == [".03 Up.flac"]
    assert [p.name for p in scan.non_audio] == ["cover.jpg"]
    with pytest.raises(InputError, match="not a folder"):
        scan_library(root=tmp_path / "nope")


def test_embed_library_counts_labels_and_reruns_incrementally(
    library: Path, tmp_path: Path
) -> None:
    music = _make_copy(library, tmp_path / "music")
    out, cache = tmp_path / "lib", tmp_path / "cache"
    _, rep = embed_library(
        audio_dir=music, out=out, embedder="features", cache_dir=cache, progress=False
    )
    assert (rep.n_tracks, rep.n_labelled, rep.n_unlabelled) == (6, 4, 2)
    assert (rep.n_embedded, rep.n_reused, rep.n_removed) == (6, 0, 0)
    assert [Path(p).name for p, _ in rep.failed] == ["corrupt.mp3"]
    assert (len(rep.empty), len(rep.hidden), len(rep.non_audio)) == (1, 1, 1)
    assert "4 labelled, 2 without a mood" in rep.summary()
    assert rep.several_moods == 1 and "several mood tags: kept the first" in rep.summary()
    loaded = Catalog.load(out)
    labels = loaded.labels.set_index("track_id")
    assert list(labels.index) == sorted(TRACKS)
    sun = labels.loc["Ann Arbor/First/01 Sun.mp3"]
    assert (sun["title"], sun["artist"], sun["meta_album"], sun["genre"], sun["mood"]) == (
        "Sun",
        "Ann Arbor",
        "First",
        "rock|pop",
        "happy",
    )
    assert labels.loc["Bo Diddle/04 Down.m4a", "mood"] == "sad"  # MP4 freeform atom
    assert labels.loc["Bo Diddle/03 Up.flac", "mood"] == "happy"  # the first of two
    assert labels.loc["Cy/05 Untagged mood.mp3", "mood"] == ""
    assert labels.loc["Cy/06 No tags at all.opus", "title"] == "06 No tags at all"
    assert float(labels.loc["Bo Diddle/03 Up.flac", "duration"]) == pytest.approx(2.5, abs=0.1)
    assert loaded.audio_path(0).is_file() and loaded.embeddings.shape == (6, 72)
    assert np.isfinite(loaded.embeddings).all()
    # Unlabelled tracks do not prevent the stored split (they are a stratum of their own).
    assert rep.split.startswith("train") and set(loaded.split) <= {"train", "val", "test"}
    raw_before = _raw(cache)

    # Same command again, after adding one file and deleting another.
    _encode(music / "Cy/07 New.ogg", 7)
    _tag(music / "Cy/07 New.ogg", {"title": "New", "artist": "Cy", "mood": "happy"})
    (music / "Ann Arbor/First/02 Rain.ogg").unlink()
    _, rep2 = embed_library(
        audio_dir=music, out=out, embedder="features", cache_dir=cache, progress=False
    )
    assert (rep2.n_embedded, rep2.n_reused, rep2.n_removed) == (1, 5, 1)
    assert len(_raw(cache)) == len(raw_before) + 1  # exactly one new embedding computed
    assert [Path(p).name for p, _ in rep2.failed] == ["corrupt.mp3"]  # remembered, not retried
    ids2 = list(Catalog.load(out).labels["track_id"])
    assert ids2 == sorted([*(set(TRACKS) - {"Ann Arbor/First/02 Rain.ogg"}), "Cy/07 New.ogg"])
    assert (rep2.n_labelled, rep2.n_unlabelled) == (4, 2)

    # An edited file is re-embedded; a touched-but-identical one is found by its hash.
    (music / "Cy/05 Untagged mood.mp3").touch()
    _, rep3 = embed_library(
        audio_dir=music, out=out, embedder="features", cache_dir=cache, progress=False
    )
    assert (rep3.n_embedded, rep3.n_reused) == (0, 6)


def test_every_format_decodes_to_the_clip(library: Path) -> None:
    from moodshift.audio.embedders.pipeline import load_audio

    flac, sr = load_audio(library / "Bo Diddle/03 Up.flac")
    original = (_clip(3) + _clip(53)) / 2  # stereo -> mono is the channel mean
    assert sr == SR and np.abs(flac - original).max() < 1e-4  # lossless, 16-bit
    for rel in TRACKS:  # lossy codecs: the same length (+ encoder padding) and loudness
        y, sr = load_audio(library / rel)
        assert 2.5 <= len(y) / sr <= 2.6, rel
        assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(original**2)), rel=0.1)
    from moodshift.errors import AudioError

    with pytest.raises(AudioError, match="Invalid data"):  # FFmpeg's reason is the one shown
        load_audio(library / "Cy/corrupt.mp3")


def test_labels_csv_adds_and_overrides(library: Path, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "audio_path,track_id,mood,instruments\n"
        f"{library / 'Cy/05 Untagged mood.mp3'},,calm,piano\n"  # by path: adds a mood
        ",Bo Diddle/03 Up.flac,sad,\n"  # by track id: overrides the tag
        ",06 No tags at all,calm,\n"  # by file name: files named <track_id>.<ext>
        ",no such track,happy,\n"
    )
    cat, rep = embed_library(
        audio_dir=library,
        out=tmp_path / "lib",
        labels=csv,
        embedder="features",
        cache_dir=tmp_path / "c",
        progress=False,
    )
    labels = cat.labels.set_index("track_id")
    assert labels.loc["Cy/05 Untagged mood.mp3", "mood"] == "calm"
    assert labels.loc["Cy/05 Untagged mood.mp3", "instruments"] == "piano"
    assert labels.loc["Bo Diddle/03 Up.flac", "mood"] == "sad"
    # matched by file name, the CSV's id names the track (the <track_id>.<ext> layout)
    assert labels.loc["06 No tags at all", "mood"] == "calm"
    assert labels.loc["06 No tags at all", "audio_path"] == "Cy/06 No tags at all.opus"
    assert (rep.n_labelled, rep.n_unlabelled, rep.labels_unmatched) == (6, 0, 1)


def test_out_never_replaces_a_folder_that_is_not_a_catalogue(library: Path, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a catalogue"):
        embed_library(audio_dir=library, out=tmp_path / "docs", embedder="features")
    with pytest.raises(InputError, match="replace the music folder"):
        embed_library(audio_dir=library / "Cy", out=library, embedder="features")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_nothing_usable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 200)
    with pytest.raises(DataError, match="could be embedded"):
        embed_library(
            audio_dir=tmp_path / "music", out=tmp_path / "lib", embedder="features", progress=False
        )


def test_cli_with_musicnn(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    music = tmp_path / "music"
    for rel in ("Bo Diddle/04 Down.m4a", "Cy/06 No tags at all.opus"):
        (music / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library / rel, music / rel)
    rc = main(["embed", "--audio-dir", str(music), "--out", str(tmp_path / "lib")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "2 tracks: 1 labelled, 1 without a mood" in text
    cat = Catalog.load(tmp_path / "lib")
    assert cat.provenance["name"] == "musicnn-msd" and cat.embeddings.shape == (2, 200)
    assert (tmp_path / "lib.embed_cache").is_dir()  # default cache beside the catalogue
    assert main(["embed", "--audio-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2


def _make_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _raw(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.npy"))


@pytest.mark.slow
def test_a_killed_run_keeps_every_finished_embedding(tmp_path: Path) -> None:
    import os
    import signal
    import sys
    import time

    music = tmp_path / "music"
    # Forty files: after the third is embedded, 37 remain, far more than a fast machine
    # embeds between two polls, so the kill always lands mid-run.
    n_files = 40
    for i in range(n_files):
        _encode(music / f"{i:02d}.flac", 20 + i)
    out, cache = tmp_path / "lib", tmp_path / "cache"
    cmd = [sys.executable, "-m", "moodshift.cli", "embed", "--audio-dir", str(music),
           "--out", str(out), "--cache-dir", str(cache), "--embedder", "features"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_raw(cache)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        done_before_kill = len(_raw(cache))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    assert done_before_kill >= 3 and not out.exists()  # the catalogue is written at the end
    # A kill mid-write leaves at most a stray temporary file, never a truncated entry.
    assert all(np.load(p).shape == (72,) for p in _raw(cache))
    _, rep = embed_library(audio_dir=music, out=out, embedder="features", cache_dir=cache,
                           progress=False)  # fmt: skip
    assert rep.n_tracks == n_files and rep.n_reused >= done_before_kill
    assert rep.n_embedded == n_files - rep.n_reused


def test_bench_embed_on_a_folder(library: Path, tmp_path: Path) -> None:
    import json

    music = tmp_path / "music"
    for rel in ("Bo Diddle/04 Down.m4a", "Ann Arbor/First/01 Sun.mp3"):
        (music / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library / rel, music / rel)
    out = tmp_path / "bench.json"
    argv = ["bench", "embed", "--audio-dir", str(music), "--embedders", "features",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(out.read_text())["embed"]
    assert set(r["decode"]) == {".m4a", ".mp3"} and r["library"]["files"] == 2
    rec = r["embedders"]["features"]
    assert rec["files"] == 2 and rec["files_per_s"] > 0 and rec["x_realtime"] > 0
    assert r["library"]["audio_s"] == pytest.approx(5.0, abs=0.2)


# ------------------------------------------------------------------ a folder read as what it is
def test_a_hostile_folder_is_read_as_what_it_is(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd names, links out of the folder, FIFOs, sockets and huge tags: counted, never fatal."""
    import mutagen

    music = tmp_path / "music"
    shutil.copytree(library / "Bo Diddle", music / "Bo Diddle")
    ogg = library / "Ann Arbor/First/02 Rain.ogg"
    # A Latin-1 name: bytes that are not UTF-8 (this aborted the run with a traceback).
    shutil.copy(ogg, os.path.join(os.fsencode(music), b"bad\xff\xfename.ogg"))
    shutil.copy(ogg, music / "new\nline.ogg")  # an id no URL or playlist line can carry
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(library / "Cy/05 Untagged mood.mp3", elsewhere / "other.mp3")
    (elsewhere / "secret.mp3").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 40)
    (music / "linked.mp3").symlink_to(elsewhere / "other.mp3")
    (music / "passwd.mp3").symlink_to(elsewhere / "secret.mp3")
    (music / "zero.mp3").symlink_to("/dev/zero")  # a device: never opened
    (music / "Bo Diddle" / "alias.flac").symlink_to(music / "Bo Diddle" / "03 Up.flac")  # inside
    os.mkfifo(music / "pipe.ogg")  # reading it would block forever
    monkeypatch.chdir(music)  # a relative name keeps the socket path short
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock.flac")
    long_title = "x" * 1_000_000  # a 1 MB title
    shutil.copy(ogg, music / "long.ogg")
    f = mutagen.File(music / "long.ogg")
    f["TITLE"], f["ARTIST"] = long_title, "A" * 1500
    f.save()
    try:
        cat, rep = embed_library(audio_dir=music, out=tmp_path / "lib", embedder="features",
                                 cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
        ids = set(cat.labels["track_id"])
        assert ids == {"Bo Diddle/03 Up.flac", "Bo Diddle/04 Down.m4a", "Bo Diddle/alias.flac",
                       "long.ogg"}  # fmt: skip
        assert [(p.rsplit("/", 1)[-1], "UTF-8" in r) for p, r in sorted(rep.bad_names)] == [
            ("bad\\xff\\xfename.ogg", True),
            ("new\\nline.ogg", False),
        ]
        assert "control characters (U+000A)" in dict(rep.bad_names)[str(music / "new\\nline.ogg")]
        assert sorted(Path(p).name for p in rep.outside) == ["linked.mp3", "passwd.mp3", "zero.mp3"]
        assert sorted(Path(p).name for p in rep.special) == ["pipe.ogg", "sock.flac"]
        long_row = cat.labels.set_index("track_id").loc["long.ogg"]
        assert long_row["title"] == "x" * TAG_MAX_CHARS and long_row["artist"] == "A" * 1000
        assert rep.tags_cut == 2
        text = rep.summary()
        for needle in ("2 files with unusable names", "3 links to files outside the folder",
                       "--follow-symlinks", "2 devices, FIFOs or sockets",
                       f"2 tag values longer than {TAG_MAX_CHARS} characters"):  # fmt: skip
            assert needle in text, needle

        # --follow-symlinks keeps the link to a file elsewhere; a device stays unopened and
        # a file that is not audio stays unreadable audio (decoded, never a track).
        rc = main(["embed", "--audio-dir", str(music), "--out", str(tmp_path / "lib2"),
                   "--embedder", "features", "--cache-dir", str(tmp_path / "cache"),
                   "--follow-symlinks"])  # fmt: skip
        assert rc == 0
        ids2 = set(Catalog.load(tmp_path / "lib2").labels["track_id"])
        assert ids2 == ids | {"linked.mp3"}
        scan = scan_library(root=music, follow_symlinks=True)
        assert sorted(p.name for p in scan.special) == ["pipe.ogg", "sock.flac", "zero.mp3"]
    finally:
        sock.close()


def test_every_listed_id_round_trips_through_the_server(library: Path, tmp_path: Path) -> None:
    """Ids with spaces, '#', '?', '%', accents: each one listed is served by every route."""
    import httpx

    from moodshift.serving.app import create_app
    from moodshift.synthetic import make_catalog
    from moodshift.training.train import TrainConfig, train
    from serving.helpers import running  # tests/ is on sys.path (rootdir conftest)

    music = tmp_path / "music"
    names = ["Été/01 #1 hit?.ogg", "100% pure/a b.flac", "x/new\nline.ogg", "plain.opus",
             "tab\there.flac"]  # fmt: skip
    sources = [library / r for r in ("Ann Arbor/First/02 Rain.ogg", "Bo Diddle/03 Up.flac",
                                     "Ann Arbor/First/02 Rain.ogg", "Cy/06 No tags at all.opus",
                                     "Bo Diddle/03 Up.flac")]  # fmt: skip
    for name, src in zip(names, sources, strict=True):
        (music / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, music / name)
    cat, rep = embed_library(audio_dir=music, out=tmp_path / "lib", embedder="features",
                             cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    assert len(rep.bad_names) == 2  # refused at import, with the reason, not listed
    assert all("control characters" in r and "rename it" in r for _, r in rep.bad_names)
    # A small model for this embedder (the route answers need one; quality is not the point).
    synth = make_catalog(n=200, dim=cat.dim, seed=1, groups=True)
    synth.provenance = dict(cat.provenance)
    model = train(synth, config=TrainConfig(epochs=1, k=10, seed=0), progress=False)
    with running(create_app(catalog=Catalog.load(tmp_path / "lib"), model=model)) as url:
        listed = httpx.get(f"{url}/tracks", params={"page_size": 100}).json()["items"]
        ids = [t["track_id"] for t in listed]
        assert sorted(ids) == sorted(n for n in names if "\n" not in n and "\t" not in n)
        for t in listed:
            one = httpx.get(f"{url}/tracks/{quote(t['track_id'], safe='')}")
            assert one.status_code == 200 and one.json()["track_id"] == t["track_id"]
            audio = httpx.get(url + t["audio_url"])
            assert audio.status_code == 200 and len(audio.content) > 1000, t["track_id"]


# ------------------------------------------------------------------ audio identity
class _CountingEmbedder(FeaturesEmbedder):
    """The real ``features`` embedder, counting the tracks it analyses."""

    calls = 0

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        type(self).calls += 1
        return super().embed(audio, sr)


def test_retagging_only_rereads_tags_and_moving_keeps_the_id(library: Path, tmp_path: Path) -> None:
    import mutagen
    from mutagen.id3 import ID3, TIT2, TMOO

    music = _make_copy(library, tmp_path / "music")
    (music / "Cy/corrupt.mp3").unlink()
    out, cache, emb = tmp_path / "lib", tmp_path / "cache", _CountingEmbedder()
    _CountingEmbedder.calls = 0
    embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache, progress=False)
    assert _CountingEmbedder.calls == 6

    # Retag as Picard or beets do: new titles and moods, a 200 kB cover-sized padding.
    id3 = ID3(music / "Cy/05 Untagged mood.mp3")
    id3.add(TMOO(encoding=3, text=["calm"]))
    id3.add(TIT2(encoding=3, text=["Plain (remaster)"]))
    id3.save(padding=lambda info: 200_000)
    for rel in ("Ann Arbor/First/02 Rain.ogg", "Bo Diddle/03 Up.flac", "Cy/06 No tags at all.opus"):
        f = mutagen.File(music / rel)
        f["MOOD"], f["COMMENT"] = "calm", "retagged " * 2000
        f.save()
    m4a = mutagen.File(music / "Bo Diddle/04 Down.m4a")
    m4a["\xa9nam"] = ["Down (live)"]
    m4a.save()
    cat, rep = embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache,
                             progress=False)  # fmt: skip
    assert _CountingEmbedder.calls == 6  # not one track analysed again
    assert (rep.n_embedded, rep.n_reused) == (0, 6)
    labels = cat.labels.set_index("track_id")
    assert labels.loc["Cy/05 Untagged mood.mp3", ["title", "mood"]].tolist() == [
        "Plain (remaster)",
        "calm",
    ]
    assert labels.loc["Bo Diddle/04 Down.m4a", "title"] == "Down (live)"
    assert labels.loc["Cy/06 No tags at all.opus", "mood"] == "calm"

    # Reorganise: move one file to another folder, rename another; copy a third.
    (music / "Moved").mkdir()
    (music / "Cy/05 Untagged mood.mp3").rename(music / "Moved/plain.mp3")
    (music / "Bo Diddle/03 Up.flac").rename(music / "Bo Diddle/03 Up (2019).flac")
    shutil.copy(music / "Bo Diddle/04 Down.m4a", music / "Moved/down copy.m4a")
    cat2, rep2 = embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache,
                               progress=False)  # fmt: skip
    assert _CountingEmbedder.calls == 6 and (rep2.n_moved, rep2.n_removed) == (2, 0)
    labels2 = cat2.labels.set_index("track_id")
    assert labels2.loc["Cy/05 Untagged mood.mp3", "audio_path"] == "Moved/plain.mp3"
    assert labels2.loc["Bo Diddle/03 Up.flac", "audio_path"] == "Bo Diddle/03 Up (2019).flac"
    assert labels2.loc["Moved/down copy.m4a", "audio_path"] == "Moved/down copy.m4a"  # a copy
    assert labels2.loc["Bo Diddle/04 Down.m4a", "audio_path"] == "Bo Diddle/04 Down.m4a"
    assert "2 moved (ids kept)" in rep2.summary()
    # A new, different file at a path whose id a moved file holds: ids stay unique.
    _encode(music / "Cy/05 Untagged mood.mp3", 40)
    cat3, _ = embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache,
                            progress=False)  # fmt: skip
    ids3 = cat3.labels["track_id"].tolist()
    assert _CountingEmbedder.calls == 7 and len(set(ids3)) == len(ids3) == 8
    assert "Cy/05 Untagged mood.mp3" in ids3  # still the moved file's id
    assert cat3.labels.set_index("track_id").loc["Cy/05 Untagged mood.mp3", "audio_path"] == (
        "Moved/plain.mp3"
    )


def test_excerpts_embed_windows_of_long_tracks(tmp_path: Path) -> None:
    from moodshift.audio.embedders.pipeline import Excerpts

    sr = 1000
    y = np.arange(200 * sr, dtype=np.float32)  # 200 s: sample value = its index
    cut = Excerpts(n=3, seconds=30).cut(y, sr)
    assert cut.shape == (90 * sr,)
    starts = cut[:: 30 * sr]
    np.testing.assert_array_equal(starts, [35 * sr, 85 * sr, 135 * sr])  # centred at 1/4..3/4
    short = np.ones(80 * sr, np.float32)
    assert Excerpts(n=3, seconds=30).cut(short, sr) is short  # <= 90 s: whole
    with pytest.raises(InputError, match="excerpts"):
        Excerpts(n=0)


def test_a_version_1_library_keeps_its_embeddings(library: Path, tmp_path: Path) -> None:
    """State and cache written before the audio hash (keyed on whole files): nothing re-embedded."""
    import json

    from moodshift.audio.audiohash import audio_sha256
    from moodshift.audio.embedders.pipeline import file_sha256

    music = tmp_path / "music"
    for rel in ("Bo Diddle/03 Up.flac", "Cy/06 No tags at all.opus"):
        (music / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library / rel, music / rel)
    out, cache, emb = tmp_path / "lib", tmp_path / "cache", _CountingEmbedder()
    _CountingEmbedder.calls = 0
    embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache, progress=False)
    assert _CountingEmbedder.calls == 2
    # Rewrite state and cache as version 1 had them: keyed by the SHA-256 of the whole file.
    state = json.loads((out / "library.json").read_text())
    files = {}
    for rel, e in state["files"].items():
        old_key = file_sha256(music / rel)
        (npy,) = cache.rglob(f"{audio_sha256(music / rel)}.npy")
        (npy.parent.parent / old_key[:2]).mkdir(exist_ok=True)
        npy.rename(npy.parent.parent / old_key[:2] / f"{old_key}.npy")
        files[rel] = {"size": e["size"], "mtime_ns": e["mtime_ns"], "sha256": old_key,
                      "tags": e["tags"], "duration": e["duration"]}  # fmt: skip
    (out / "library.json").write_text(json.dumps({**state, "format_version": 1, "files": files}))
    cat, rep = embed_library(audio_dir=music, out=out, embedder=emb, cache_dir=cache,
                             progress=False)  # fmt: skip
    assert _CountingEmbedder.calls == 2 and (rep.n_embedded, rep.n_reused) == (0, 2)
    assert sorted(cat.labels["track_id"]) == ["Bo Diddle/03 Up.flac", "Cy/06 No tags at all.opus"]
    assert json.loads((out / "library.json").read_text())["format_version"] == 2


def test_write_mood_tag_replaces_the_mood_in_every_container(library: Path, tmp_path: Path) -> None:
    for rel in ("Ann Arbor/First/01 Sun.mp3", "Ann Arbor/First/02 Rain.ogg",
                "Bo Diddle/03 Up.flac", "Bo Diddle/04 Down.m4a",
                "Cy/06 No tags at all.opus"):  # fmt: skip
        path = tmp_path / Path(rel).name
        shutil.copy(library / rel, path)
        before = read_tags(path)
        write_mood_tag(path, "calm")
        after = read_tags(path)
        assert after["mood"] == ["calm"], rel  # the two moods of the FLAC become one
        assert {k: v for k, v in after.items() if k != "mood"} == {
            k: v for k, v in before.items() if k != "mood"
        }, rel
        assert not list(tmp_path.glob(".*.tmp"))  # the atomic copy is gone
    with pytest.raises(InputError, match="not an audio file"):
        (tmp_path / "notes.txt").write_text("hello")
        write_mood_tag(tmp_path / "notes.txt", "calm")
