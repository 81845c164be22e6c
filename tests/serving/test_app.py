"""The HTTP API, against a real uvicorn server on 127.0.0.1 (``live_server`` fixture)."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest

from moodshift.errors import InputError
from moodshift.retrieval.search import Searcher

MAX_K = 50  # live_server's create_app(max_k=...)


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as c:
        yield c


def _ids(cat, rows):
    return [cat.labels["track_id"].iat[r] for r in rows]


def test_healthz_and_docs(client, serve_catalog):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "tracks": len(serve_catalog), "index": "flat"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/query", "/tracks", "/audio/{track_id}", "/metrics"} <= set(spec["paths"])


def test_info_lists_moods_and_filters(client, serve_model):
    info = client.get("/api/info").json()
    assert info["moods"] == serve_model.classes
    assert "genre0" in info["filters"]["genre"] and info["max_k"] == MAX_K
    m = client.get("/map").json()
    assert len(m["points"]) == 400 and all(len(p) == 3 for p in m["points"])


# ---------------------------------------------------------------------- /tracks
def test_tracks_search_by_id_title_and_label(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[42]
    r = client.get("/tracks", params={"q": tid}).json()
    assert r["items"][0]["track_id"] == tid
    r = client.get("/tracks", params={"q": "tune 04", "page_size": 100}).json()
    titles = [it["title"] for it in r["items"]]
    assert r["total"] == 10 and all(t.startswith("Tune 04") for t in titles)
    r = client.get("/tracks", params={"mood": "sad", "genre": "genre1", "page_size": 100}).json()
    labels = serve_catalog.labels
    expected = int(((labels["mood"] == "sad") & (labels["genre"] == "genre1")).sum())
    assert r["total"] == expected > 0
    assert all(it["mood"] == "sad" and it["genre"] == ["genre1"] for it in r["items"])


def test_tracks_pagination(client, serve_catalog):
    pages = [client.get("/tracks", params={"page": p, "page_size": 7}).json() for p in (1, 2)]
    assert pages[0]["total"] == len(serve_catalog) and pages[0]["pages"] == 58
    assert [len(p["items"]) for p in pages] == [7, 7]
    ids = [it["track_id"] for p in pages for it in p["items"]]
    assert ids == _ids(serve_catalog, range(14))
    last = client.get("/tracks", params={"page": 58, "page_size": 7}).json()
    assert len(last["items"]) == 400 - 57 * 7
    assert client.get("/tracks", params={"page": 99}).json()["items"] == []
    assert client.get("/tracks", params={"page_size": 101}).status_code == 422
    assert client.get("/tracks", params={"page": 0}).status_code == 422


def test_tracks_unknown_label_is_422(client):
    r = client.get("/tracks", params={"mood": "melancholic"})
    assert r.status_code == 422 and "known values" in r.text


def test_one_track(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[2]
    r = client.get(f"/tracks/{tid}")
    assert r.status_code == 200
    body = r.json()
    assert body["track_id"] == tid and body["title"] == "Tune 002"
    assert body["audio_url"] == f"/audio/{tid}" and len(body["map"]) == 2
    assert (
        client.get(f"/tracks/{serve_catalog.labels['track_id'].iat[3]}").json()["audio_url"] is None
    )
    r = client.get("/tracks/no_such_track")
    assert r.status_code == 404 and "unknown track id" in r.json()["detail"]


# ---------------------------------------------------------------------- /query
def test_query_by_id_matches_the_library(client, serve_catalog, serve_model):
    tid = serve_catalog.labels["track_id"].iat[10]
    r = client.post("/query", json={"track_id": tid, "target_mood": "happy", "k": 8})
    assert r.status_code == 200
    body = r.json()
    assert body["seed"]["track_id"] == tid and body["target_mood"] == "happy"
    results = body["results"]
    assert [x["rank"] for x in results] == list(range(1, 9))
    assert tid not in {x["track_id"] for x in results}
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert {"mood", "genre", "instruments", "title", "audio_url"} <= set(results[0])
    lib = (
        Searcher(catalog=serve_catalog, model=serve_model)
        .query(track_id=tid, target_mood="happy", k=8)
        .results
    )
    assert [x["track_id"] for x in results] == [x.track_id for x in lib]
    np.testing.assert_allclose(scores, [x.score for x in lib], atol=1e-4)
    assert len(body["map"]["results"]) == 8
    assert len(body["map"]["seed"]) == 2 and len(body["map"]["query"]) == 2


def test_query_strength_zero_keeps_the_seed_neighbourhood(client, serve_catalog):
    cat = serve_catalog
    row = 20
    tid = cat.labels["track_id"].iat[row]
    body = client.post(
        "/query", json={"track_id": tid, "target_mood": "calm", "strength": 0, "evidence": "none"}
    ).json()
    sims = cat.normalized @ cat.normalized[row]
    sims[row] = -np.inf
    assert [x["track_id"] for x in body["results"]] == _ids(cat, np.argsort(-sims)[:10])
    assert body["map"]["query"] == pytest.approx(body["map"]["seed"], abs=1e-3)


def test_query_by_embedding(client, serve_catalog):
    row = 7
    emb = serve_catalog.embeddings[row].astype(float).tolist()
    mood = serve_catalog.labels["mood"].iat[row]
    r = client.post(
        "/query",
        json={
            "embedding": emb,
            "source_mood": mood,
            "target_mood": "sad",
            "strength": 0,
            "k": 3,
            "evidence": "none",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["seed"] is None and body["source_mood"] == mood
    # Not excluded: with strength 0 the track itself is the best match.
    assert body["results"][0]["track_id"] == serve_catalog.labels["track_id"].iat[row]
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_query_by_embedding_without_source_mood_uses_the_tagger(client, serve_catalog, serve_model):
    row = 9
    emb = serve_catalog.embeddings[row].astype(float).tolist()
    body = client.post("/query", json={"embedding": emb, "target_mood": "sad", "k": 3}).json()
    predicted = serve_model.tagger.predict_proba(serve_catalog.embeddings[row : row + 1])[0]
    assert body["source_mood_source"] == "predicted"
    assert body["source_mood"] == serve_model.classes[int(predicted.argmax())]


def test_results_say_where_their_mood_came_from(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[3]
    body = client.post("/query", json={"track_id": tid, "target_mood": "sad", "k": 5}).json()
    assert body["evidence"] == "auto" and body["source_mood_source"] == "label"
    for r in body["results"]:
        assert r["mood_source"] == "label" and r["mood"] == "sad"
    probe = client.post(
        "/query", json={"track_id": tid, "target_mood": "sad", "k": 5, "evidence": "probe"}
    ).json()
    assert all(r["mood_source"] == "predicted" for r in probe["results"])
    assert (
        client.post(
            "/query", json={"track_id": tid, "target_mood": "sad", "evidence": "vibes"}
        ).status_code
        == 422
    )


def test_query_filters(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[0]
    r = client.post(
        "/query",
        json={"track_id": tid, "target_mood": "happy", "k": 20,
              "filters": {"genre": "genre2", "mood": ["happy", "calm"]}},
    )  # fmt: skip
    assert r.status_code == 200
    results = r.json()["results"]
    labels = serve_catalog.labels
    n_allowed = int(
        ((labels["genre"] == "genre2") & labels["mood"].isin(["happy", "calm"])).sum()
        - ((labels["track_id"] == tid) & (labels["genre"] == "genre2")).sum()
    )
    assert len(results) == min(20, n_allowed) > 0
    assert all(x["genre"] == ["genre2"] and x["mood"] in ("happy", "calm") for x in results)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"track_id": "nope", "target_mood": "happy"}, 404, "unknown track id"),
        ({"track_id": "syn_000001", "target_mood": "ecstatic"}, 422, "known: calm"),
        ({"track_id": "syn_000001", "target_mood": "happy", "k": 0}, 422, "greater than"),
        ({"track_id": "syn_000001", "target_mood": "happy", "k": MAX_K + 1}, 422, "less than"),
        ({"track_id": "syn_000001", "target_mood": "happy", "strength": -0.1}, 422, "greater"),
        ({"track_id": "syn_000001", "target_mood": "happy", "strength": 1.5}, 422, "less than"),
        ({"target_mood": "happy"}, 422, "exactly one of track_id or embedding"),
        ({"embedding": [0.1] * 31, "source_mood": "sad", "target_mood": "happy"}, 422,
         "dimension mismatch"),
        ({"embedding": [0.0] * 32, "source_mood": "sad", "target_mood": "happy"}, 422, "zeros"),
        ({"track_id": "syn_000001", "target_mood": "happy", "filters": {"tempo": "fast"}}, 422,
         "filterable columns"),
        ({"track_id": "syn_000001", "target_mood": "happy", "filters": {"genre": "polka"}}, 422,
         "known values"),
        ({"track_id": "syn_000001", "target_mood": "happy", "colour": "red"}, 422, "xtra"),
    ],
)  # fmt: skip
def test_query_validation(client, body, status, needle):
    r = client.post("/query", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_unknown_mood_lists_known_moods(client, serve_model):
    r = client.post("/query", json={"track_id": "syn_000001", "target_mood": "ecstatic"})
    assert r.status_code == 422
    assert r.json()["known_moods"] == serve_model.classes


def test_query_k_at_the_cap_is_fine(client):
    r = client.post("/query", json={"track_id": "syn_000001", "target_mood": "sad", "k": MAX_K})
    assert r.status_code == 200 and len(r.json()["results"]) == MAX_K


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_query_rejects_non_finite_embeddings(client, token):
    values = ["0.1"] * 32
    values[5] = token
    raw = '{"embedding": [' + ",".join(values) + '], "source_mood": "sad", "target_mood": "happy"}'
    r = client.post("/query", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "NaN or infinity" in r.text


def test_big_bodies_are_413(client):
    big = json.dumps({"track_id": "syn_000001", "target_mood": "happy", "pad": "x" * 70_000})
    r = client.post("/query", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(20):
            yield b"x" * 8192

    r = client.post("/query", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # The server is still fine afterwards.
    assert client.get("/healthz").status_code == 200


def test_malformed_json_is_422(client):
    r = client.post("/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


# ---------------------------------------------------------------------- /audio
def test_audio_full_and_range(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[4]
    data = serve_catalog.audio_path(4).read_bytes()
    r = client.get(f"/audio/{tid}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"].startswith("audio/")
    r = client.get(f"/audio/{tid}", headers={"Range": "bytes=10-99"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 10-99/{len(data)}"
    assert r.content == data[10:100]
    r = client.get(f"/audio/{tid}", headers={"Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == data[-16:]
    r = client.get(f"/audio/{tid}", headers={"Range": f"bytes={len(data) + 5}-"})
    assert r.status_code == 416


def test_audio_missing_is_404(client, serve_catalog):
    assert client.get(f"/audio/{serve_catalog.labels['track_id'].iat[1]}").status_code == 404
    assert client.get("/audio/no_such_track").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/audio/..%2F..%2Fetc%2Fpasswd",
        "/audio/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/audio/%2Fetc%2Fpasswd",
        "/audio//etc/passwd",
        "/audio/etc/passwd",
        "/audio/..%5C..%5Cetc%5Cpasswd",
        "/audio/audio%2Fsyn_000000.wav",  # a registered file's own relative path
        "/audio/%2E%2E/%2E%2E/etc/passwd",
    ],
)
def test_audio_never_serves_paths_from_the_request(client, serve_catalog, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"root:" not in r.content and b"RIFF" not in r.content


def test_audio_absolute_path_of_a_real_file_is_refused(client, serve_catalog):
    absolute = str(serve_catalog.audio_path(0))
    r = client.get("/audio/" + absolute.replace("/", "%2F"))
    assert r.status_code == 404 and b"RIFF" not in r.content


# ---------------------------------------------------------------------- /metrics
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+$')


def test_metrics_prometheus_format(client):
    client.post("/query", json={"track_id": "syn_000002", "target_mood": "calm"})
    client.post("/query", json={"track_id": "syn_000002", "target_mood": "nope"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.strip().splitlines()
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _SAMPLE.match(line), line
    text = r.text
    assert "# TYPE moodshift_requests_total counter" in text
    assert "# TYPE moodshift_request_duration_seconds histogram" in text
    ok = re.search(r'requests_total\{method="POST",route="/query",status="200"\} (\d+)', text)
    bad = re.search(r'requests_total\{method="POST",route="/query",status="422"\} (\d+)', text)
    assert ok and int(ok.group(1)) >= 1 and bad and int(bad.group(1)) >= 1
    buckets = [
        int(v)
        for v in re.findall(r'duration_seconds_bucket\{route="/query",le="[^"]+"\} (\d+)', text)
    ]
    assert buckets == sorted(buckets) and len(buckets) >= 5
    count = re.search(r'duration_seconds_count\{route="/query"\} (\d+)', text)
    assert count and int(count.group(1)) == buckets[-1]
    # Arbitrary unmatched paths do not create new series.
    client.get("/definitely/not/a/route")
    assert "/definitely" not in client.get("/metrics").text


def test_threadpool_route_answers_like_the_fast_path(client, serve_catalog, serve_model):
    """With ``inline=False`` queries go through FastAPI's route: same answers."""
    import asyncio

    from moodshift.serving.app import create_app

    app = create_app(catalog=serve_catalog, model=serve_model, max_k=MAX_K, inline=False)
    bodies = [
        {"track_id": "syn_000004", "target_mood": "happy", "k": 5, "strength": 0.6},
        {"track_id": "syn_000004", "target_mood": "sad", "filters": {"genre": "genre1"}},
        {"track_id": "nope", "target_mood": "happy"},
        {"track_id": "syn_000004", "target_mood": "ecstatic"},
        {"track_id": "syn_000004", "target_mood": "happy", "k": MAX_K + 1},
        {"embedding": [0.1] * 31, "source_mood": "sad", "target_mood": "happy"},
    ]

    async def in_process() -> tuple[list[httpx.Response], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as slow:
            answers = [await slow.post("/query", json=body) for body in bodies]
            return answers, (await slow.get("/metrics")).text

    answers, metrics = asyncio.run(in_process())
    for body, b in zip(bodies, answers, strict=True):
        a = client.post("/query", json=body)
        assert a.status_code == b.status_code, body
        ja, jb = a.json(), b.json()
        if a.status_code == 200:
            ja.pop("took_ms"), jb.pop("took_ms")
        assert ja == jb, body
    assert 'route="/query",status="200"' in metrics


def test_tracks_search_by_label_text(client, serve_catalog):
    r = client.get("/tracks", params={"q": "inst7", "page_size": 100}).json()
    expected = int(serve_catalog.labels["instruments"].str.contains("inst7").sum())
    assert r["total"] == expected > 0
    assert all("inst7" in it["instruments"] for it in r["items"])


def test_stale_index_is_refused_at_startup(tmp_path, serve_model):
    from moodshift.data.catalog import Catalog
    from moodshift.errors import StaleArtifactError
    from moodshift.retrieval.index import build_catalog_index
    from moodshift.serving.app import create_app
    from moodshift.serving.launch import serve
    from moodshift.synthetic import make_catalog

    make_catalog(n=300, dim=32, seed=11, groups=True).save(tmp_path / "cat")
    build_catalog_index(tmp_path / "cat", progress=False)
    other = make_catalog(n=300, dim=32, seed=12, groups=True)  # same size, other vectors
    with pytest.raises(StaleArtifactError, match="moodshift index --catalog"):
        create_app(catalog=other, model=serve_model, index=tmp_path / "cat" / "index")
    app = create_app(
        catalog=Catalog.load(tmp_path / "cat"), model=serve_model, index=tmp_path / "cat" / "index"
    )
    assert app.state.moodshift.index_kind == "flat"
    with pytest.raises(InputError, match="folders"):
        serve(catalog=other, model=serve_model, workers=2)


@pytest.mark.slow
def test_serve_benchmark_runs_end_to_end(tmp_path):
    """The load benchmark on a tiny catalogue: it works and counts (no timing asserted)."""
    from moodshift.bench.serve import run_serve_bench

    out = run_serve_bench(
        n=3000, dim=32, clients=(1, 4), requests=60, duration_s=20, epochs=1, warmup=10,
        workdir=tmp_path, progress=False,
    )  # fmt: skip
    assert out["setup"]["index"]["kind"] == "flat"
    assert [r["clients"] for r in out["runs"]] == [1, 4]
    for r in out["runs"]:
        assert r["errors"] == 0, r["error_examples"]
        assert r["requests"] == 60 and r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["unfiltered"]["requests"] + r["filtered"]["requests"] == 60
    assert sum(out["server_histogram_query"].values()) > 0
    cost = out["in_process"]
    for key in ("ms_per_query", "ms_per_query_unfiltered", "ms_per_query_filtered"):
        assert set(cost[key]) == {"1", "32"} and min(cost[key].values()) > 0, cost


def test_the_server_process_moves_its_startup_state_out_of_the_collector(tmp_path, serve_model):
    """A full collection over the serving state costs ~0.1 s at 100k tracks; it is frozen."""
    import gc

    from moodshift.serving.launch import _load_app
    from moodshift.synthetic import make_catalog

    make_catalog(n=300, dim=32, seed=11, groups=True).save(tmp_path / "cat")
    gc.unfreeze()
    try:
        app = _load_app(catalog=tmp_path / "cat", model=serve_model, index=None, max_k=10)
        assert gc.get_freeze_count() > 0
        assert app.state.moodshift.n == 300
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------------- /label
@pytest.fixture
def label_folder(serve_catalog, tmp_path):
    """``serve_catalog`` saved as a folder, its first 40 tracks untagged (a music folder)."""
    lib = serve_catalog.subset(np.arange(len(serve_catalog)))
    labels = lib.labels.copy()
    labels.loc[labels.index[:40], "mood"] = ""
    lib.labels = labels
    lib.save(tmp_path / "lib")
    return tmp_path / "lib"


def test_label_suggest_then_label_serves_and_saves_it(label_folder, serve_model):
    from helpers import running

    from moodshift.data.catalog import Catalog
    from moodshift.serving.app import create_app

    cat = Catalog.load(label_folder, mmap=True)
    app = create_app(catalog=cat, model=serve_model, max_k=50, catalog_dir=label_folder)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        first = c.get("/label/next", params={"n": 3}).json()
        assert first["refusal"] is None and first["labelled"] == 360
        tracks = first["tracks"]
        assert len(tracks) == 3 and len({t["track_id"] for t in tracks}) == 3
        for t in tracks:  # only untagged tracks, each with the tagger's guess
            row = cat.index_of(t["track_id"])
            assert row < 40 and t["mood_source"] == "predicted"
            p = t["probabilities"]
            assert abs(sum(p.values()) - 1) < 1e-3 and t["mood"] == max(p, key=p.get)
            assert t["mood_probability"] == p[t["mood"]]
        tid, row = tracks[0]["track_id"], cat.index_of(tracks[0]["track_id"])
        # Its label: a mood the tagger did not guess, so that using it is visible.
        mood = next(m for m in serve_model.classes if m != tracks[0]["mood"])
        before = c.post("/query", json={"track_id": tid, "target_mood": mood}).json()
        assert before["source_mood_source"] == "predicted"
        assert before["source_mood"] == tracks[0]["mood"]
        assert before["source_mood_probability"] == tracks[0]["mood_probability"]

        r = c.post("/label", json={"track_id": tid, "mood": mood})
        assert r.status_code == 200, r.text
        assert r.json()["track"]["mood_source"] == "label" and r.json()["labelled"] == 361
        # On disk (atomically rewritten), in /tracks/{id}, as a seed and in a query's results.
        assert Catalog.load(label_folder).labels["mood"].iat[row] == mood
        one = c.get(f"/tracks/{tid}").json()
        assert (one["mood"], one["mood_source"], one["mood_probability"]) == (mood, "label", None)
        seed = c.post("/query", json={"track_id": tid, "target_mood": mood}).json()
        assert (seed["source_mood"], seed["source_mood_source"]) == (mood, "label")
        assert seed["source_mood_probability"] is None
        emb = [float(v) for v in cat.embeddings[row]]
        hit = c.post("/query", json={"embedding": emb, "source_mood": mood, "target_mood": mood,
                                     "strength": 0.0, "k": 3}).json()["results"][0]  # fmt: skip
        assert (hit["track_id"], hit["mood"], hit["mood_source"]) == (tid, mood, "label")
        # The mood filter's postings know it too, and the next suggestions skip it.
        found = c.get("/tracks", params={"q": tid, "mood": mood}).json()
        assert found["total"] == 1 and found["items"][0]["mood_source"] == "label"
        after = c.get("/label/next", params={"n": 3}).json()
        assert tid not in {t["track_id"] for t in after["tracks"]} and after["labelled"] == 361

        # Strict: an unknown mood names the known ones; an unknown track is 404.
        r = c.post("/label", json={"track_id": tid, "mood": "melancholic"})
        assert r.status_code == 422 and r.json()["known_moods"] == serve_model.classes
        assert "melancholic" in r.json()["detail"][0]["msg"]
        r = c.post("/label", json={"track_id": "no_such_track", "mood": mood})
        assert r.status_code == 404 and "no_such_track" in r.text
        assert c.post("/label", json={"track_id": tid, "mood": mood, "x": 1}).status_code == 422
        assert c.post("/label", json={"track_id": tid, "mood": 3}).status_code == 422
        assert c.get("/label/next", params={"n": 0}).status_code == 422
    assert Catalog.load(label_folder).labels["mood"].ne("").sum() == 361


@pytest.mark.parametrize("why", ["workers", "object"])
def test_label_refused_when_it_cannot_be_saved(label_folder, serve_model, why):
    from helpers import running

    from moodshift.data.catalog import Catalog
    from moodshift.serving.app import create_app

    cat = Catalog.load(label_folder, mmap=True)
    opts = {"workers": 2, "catalog_dir": label_folder} if why == "workers" else {}
    app = create_app(catalog=cat, model=serve_model, **opts)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        tid = cat.labels["track_id"].iat[0]
        r = c.post("/label", json={"track_id": tid, "mood": serve_model.classes[0]})
        expected = "one server process" if why == "workers" else "not its folder"
        assert r.status_code == 409 and expected in r.json()["detail"]
        assert c.get("/label/next").json()["refusal"] == r.json()["detail"]
        assert c.get("/api/info").json()["labelling"] is False
    assert Catalog.load(label_folder).labels["mood"].iat[0] == ""


def test_serve_labels_into_the_folder_it_loaded_and_never_with_workers(label_folder, serve_model):
    """``serve`` hands the catalogue folder to the app; each of several workers refuses."""
    import gc

    from moodshift.serving.launch import _load_app

    try:
        one = _load_app(catalog=label_folder, model=serve_model, index=None, max_k=10)
        assert one.state.moodshift.catalog_dir == label_folder
        assert one.state.moodshift.label_refusal() is None
        many = _load_app(catalog=str(label_folder), model=serve_model, index=None, max_k=10,
                         workers=3)  # fmt: skip
        assert "runs 3" in many.state.moodshift.label_refusal()
    finally:
        gc.unfreeze()
