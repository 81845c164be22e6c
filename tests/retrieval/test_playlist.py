"""Mood-journey playlists: the rules hold, the export parses, every front end agrees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moodshift.cli import main
from moodshift.errors import InputError
from moodshift.retrieval.playlist import write_m3u
from moodshift.retrieval.search import Searcher


@pytest.fixture(scope="module")
def searcher(serve_catalog, serve_model):
    return Searcher(catalog=serve_catalog, model=serve_model)


def _seed(cat, mood: str) -> str:
    return str(cat.labels.loc[cat.labels["mood"] == mood, "track_id"].iat[0])


@pytest.mark.parametrize("via", [None, "calm"])
def test_journey_rules(searcher, serve_catalog, serve_model, via):
    seed = _seed(serve_catalog, "sad")
    # 16 artists in this catalogue: one per item leaves room for 8 with a monotone mood.
    tracks = searcher.playlist(track_id=seed, to="happy", length=8, via=via, max_per_artist=1)
    assert len(tracks) == 8
    ids = [t["track_id"] for t in tracks]
    assert len(set(ids)) == 8 and seed not in ids
    artists = [t["artist"] for t in tracks]
    assert len(set(artists)) == 8
    seed_artist = serve_catalog.labels.set_index("track_id").loc[seed, "artist"]
    assert seed_artist not in artists
    # Strength rises along each leg, and the tagger's p(target) never falls within a leg.
    legs = [tracks] if via is None else [tracks[:4], tracks[4:]]
    targets = ["happy"] if via is None else ["calm", "happy"]
    rows = [serve_catalog.index_of(i) for i in ids]
    proba = serve_model.tagger.predict_proba(serve_catalog.embeddings[rows])
    start = 0
    for leg, target in zip(legs, targets, strict=True):
        assert all(t["toward"] == target for t in leg)
        s = [t["strength"] for t in leg]
        assert s == sorted(s) and s[-1] == 1.0
        p = proba[start : start + len(leg), serve_model.classes.index(target)]
        assert np.all(np.diff(p) >= -1e-6), p
        start += len(leg)
    assert tracks[-1]["mood"] == "happy"


def test_journey_rejects_bad_arguments(searcher, serve_catalog):
    seed = _seed(serve_catalog, "sad")
    with pytest.raises(InputError, match="length"):
        searcher.playlist(track_id=seed, to="happy", length=0)
    with pytest.raises(InputError, match="max_per_artist"):
        searcher.playlist(track_id=seed, to="happy", max_per_artist=0)


def test_m3u_export_parses(searcher, serve_catalog, tmp_path):
    tracks = searcher.playlist(track_id=_seed(serve_catalog, "calm"), to="energetic", length=8)
    path, left_out = write_m3u(tmp_path / "j.m3u8", tracks, roots=[serve_catalog.root])
    assert left_out == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    entries = list(zip(lines[1::2], lines[2::2], strict=True))
    with_audio = [t for t in tracks if t["audio_path"]]
    assert len(entries) == len(with_audio) > 0
    for (info, file), t in zip(entries, with_audio, strict=True):
        assert info.startswith("#EXTINF:-1,") and file == t["audio_path"]
        assert (serve_catalog.root / "audio").resolve() in list(
            __import__("pathlib").Path(file).parents
        )


def test_cli_playlist_json_and_m3u(serve_catalog, serve_model, tmp_path, capsys):
    serve_catalog.save(tmp_path / "cat")
    serve_model.save(tmp_path / "model")
    seed = _seed(serve_catalog, "sad")
    rc = main(["playlist", "--catalog", str(tmp_path / "cat"), "--model", str(tmp_path / "model"),
               "--track", seed, "--to", "happy", "--length", "6", "--json",
               "--m3u", str(tmp_path / "p.m3u8")])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    t0 = out["tracks"][0]
    assert {"track_id", "artist", "mood", "mood_source", "strength", "audio_path"} <= set(t0)
    assert t0["mood_source"] in ("label", "predicted")
    assert (tmp_path / "p.m3u8").read_text().startswith("#EXTM3U")


def test_api_playlist_matches_the_library(client_factory, serve_catalog, searcher):
    seed = _seed(serve_catalog, "sad")
    with client_factory() as client:
        r = client.post("/playlist", json={"track_id": seed, "to": "happy", "length": 6})
        assert r.status_code == 200
        api = [t["track_id"] for t in r.json()["tracks"]]
        lib = [t["track_id"] for t in searcher.playlist(track_id=seed, to="happy", length=6)]
        assert api == lib
        assert client.post("/playlist", json={"track_id": seed, "to": "nope"}).status_code == 422
        assert client.post("/playlist", json={"track_id": "nope", "to": "happy"}).status_code == 404


@pytest.fixture
def client_factory(live_server):
    import httpx

    return lambda: httpx.Client(base_url=live_server, timeout=30)


# ---------------------------------------------------------------------- injection (issue 19)
EVIL_TITLE = "Song\n#EXTINF:-1,Injected\nhttp://evil.example/pwn.mp3"
EVIL_ARTIST = "Band\r\n/etc/passwd\u2028x\x85y"


def _m3u_entries(path):
    """(info, file) pairs, every line accounted for: a header, then pairs only."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#EXTM3U" and lines[-1] == ""
    body = lines[1:-1]
    assert len(body) % 2 == 0, body
    pairs = list(zip(body[0::2], body[1::2], strict=True))
    for info, file in pairs:
        assert info.startswith("#EXTINF:-1,") and not file.startswith("#"), (info, file)
    return pairs


def test_m3u_cannot_be_injected_and_keeps_files_inside_the_root(tmp_path):
    root = tmp_path / "music"
    root.mkdir()
    good = root / "good.wav"
    good.write_bytes(b"RIFF")
    newline = root / "new\nline.wav"
    newline.write_bytes(b"RIFF")
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    (root / "link.wav").symlink_to(secret)  # a link inside that leads out
    entries = [
        {"track_id": "a", "title": EVIL_TITLE, "artist": EVIL_ARTIST, "audio_path": str(good)},
        {"track_id": "b", "title": "t", "audio_path": str(newline)},
        {"track_id": "c", "title": "t", "audio_path": "/etc/passwd"},
        {"track_id": "d", "title": "t", "audio_path": "../../../../etc/shadow"},
        {"track_id": "e", "title": "t", "audio_path": str(root / ".." / "secret.wav")},
        {"track_id": "f", "title": "t", "audio_path": str(root / "link.wav")},
        {"track_id": "g", "title": "t", "audio_path": str(root)},  # a folder, not a file
        {"track_id": "h", "title": "t", "audio_path": None},
    ]
    path, left_out = write_m3u(tmp_path / "p.m3u8", entries, roots=[root])
    pairs = _m3u_entries(path)
    assert left_out == 6
    assert pairs == [("#EXTINF:-1,Band  /etc/passwd x y - Song #EXTINF:-1,Injected "
                      "http://evil.example/pwn.mp3", str(good.resolve()))]  # fmt: skip


@pytest.mark.parametrize("where", ["folder", "folder/", "missing/p.m3u8"])
def test_cli_m3u_into_a_folder_or_a_missing_folder_exits_2_and_creates_nothing(
    serve_catalog, serve_model, tmp_path, capsys, where
):
    (tmp_path / "folder").mkdir()
    serve_catalog.save(tmp_path / "cat")
    serve_model.save(tmp_path / "model")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc = main(["playlist", "--catalog", str(tmp_path / "cat"), "--model", str(tmp_path / "model"),
               "--track", _seed(serve_catalog, "sad"), "--to", "happy",
               "--m3u", str(tmp_path / where)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--m3u" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.fixture(scope="module")
def hostile(serve_catalog, serve_model, tmp_path_factory):
    """serve_catalog with injected titles, and odd rows pointing at files outside its root."""
    import copy

    cat = copy.deepcopy(serve_catalog)
    cat.labels["title"] = EVIL_TITLE
    cat.labels["artist"] = [f"{a}{EVIL_ARTIST}" for a in cat.labels["artist"]]
    outside = ["/etc/passwd", "../../../../etc/shadow"]
    cat.labels["audio_path"] = [p or outside[i % 4 // 2] for i, p in
                                enumerate(cat.labels["audio_path"])]  # fmt: skip
    folder = tmp_path_factory.mktemp("hostile")
    cat.save(folder / "cat")
    serve_model.save(folder / "model")
    return cat, folder


def test_cli_playlist_json_and_m3u_leave_outside_files_out(hostile, tmp_path, capsys):
    cat, folder = hostile
    rc = main(["playlist", "--catalog", str(folder / "cat"), "--model", str(folder / "model"),
               "--track", _seed(cat, "sad"), "--to", "happy", "--length", "10",
               "--max-per-artist", "0", "--json", "--m3u", str(tmp_path / "p.m3u8")])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0
    out = json.loads(captured.out)
    outside = [t for t in out["tracks"] if cat.index_of(t["track_id"]) % 2]
    assert out["audio_left_out"] == len(outside) > 0
    assert f"{len(outside)} track(s) have an audio_path outside" in captured.err
    root = cat.root.resolve()  # the audio root saved with the catalogue
    for t in out["tracks"]:
        assert t["audio_left_out"] == (t in outside)
        assert t["audio_path"] is None or Path(t["audio_path"]).is_relative_to(root)
    pairs = _m3u_entries(tmp_path / "p.m3u8")
    assert len(pairs) == len(out["tracks"]) - len(outside)
    assert all(Path(file).is_relative_to(root) for _, file in pairs)


def test_api_playlist_leaves_outside_audio_out(hostile, serve_model):
    from fastapi.testclient import TestClient

    from moodshift.serving.app import create_app

    cat, folder = hostile
    from moodshift.data.catalog import Catalog

    loaded = Catalog.load(folder / "cat")
    with TestClient(create_app(catalog=loaded, model=serve_model),
                    base_url="http://127.0.0.1") as client:  # fmt: skip
        r = client.post("/playlist", json={"track_id": _seed(cat, "sad"), "to": "happy",
                                           "length": 10, "max_per_artist": None})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        outside = [t for t in body["tracks"] if cat.index_of(t["track_id"]) % 2]
        assert body["audio_left_out"] == len(outside) > 0
        assert all(t["audio_url"] is None for t in outside)
        for t in body["tracks"]:
            if t["audio_url"]:
                assert client.get(t["audio_url"]).status_code == 200


@pytest.mark.parametrize(("flag", "args"), [("--via", ["--to", "happy", "--via", "angry"]),
                                            ("--to", ["--to", "angry"])])  # fmt: skip
def test_cli_playlist_names_the_option_holding_an_unknown_mood(hostile, capsys, flag, args):
    cat, folder = hostile
    rc = main(["playlist", "--catalog", str(folder / "cat"), "--model", str(folder / "model"),
               "--track", _seed(cat, "sad"), *args])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"{flag} 'angry'" in err and "known: calm" in err, err
