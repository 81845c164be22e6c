"""Mood-journey playlists: the rules hold, the export parses, every front end agrees."""

from __future__ import annotations

import json

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
    path = write_m3u(tmp_path / "j.m3u8", tracks)
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
