"""Attacks and abuse the server must refuse (issue "reliability and security"), on real servers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import httpx
import numpy as np
import pytest
from helpers import running

from audio_helpers import write_tone
from moodshift.data.catalog import Catalog
from moodshift.errors import InputError
from moodshift.serving.app import create_app


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as c:
        yield c


# ---------------------------------------------------------------------- 1. page bounds
@pytest.mark.parametrize("page", [2**31, 2**63 - 1, 10**30])
@pytest.mark.parametrize("params", [{}, {"mood": "sad"}, {"q": "syn"}])
def test_huge_page_numbers_give_an_empty_page(client, page, params):
    r = client.get("/tracks", params={**params, "page": page})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [] and r.json()["total"] > 0


# ---------------------------------------------------------------------- 3. huge vectors
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_huge_and_tiny_embeddings_rank_like_the_unit_vector(client, serve_catalog, scale):
    v = serve_catalog.normalized[10].astype(np.float64)
    body = {"source_mood": "sad", "target_mood": "happy", "k": 10, "strength": 0.0}
    ref = client.post("/query", json={**body, "embedding": v.tolist()}).json()
    r = client.post("/query", json={**body, "embedding": (v * scale).tolist()})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [x["track_id"] for x in got] == [x["track_id"] for x in ref["results"]]
    assert got[0]["score"] > 0.5  # not the zero scores of an overflowed norm


# ---------------------------------------------------------------------- 4. HEAD
def test_head_is_answered_on_every_get_route(client, serve_catalog):
    tid = serve_catalog.labels["track_id"].iat[4]  # has audio
    spec = client.get("/openapi.json").json()
    paths = [p.replace("{track_id}", tid) for p, ops in spec["paths"].items() if "get" in ops]
    paths += ["/", "/docs", "/static/app.js"]
    assert f"/audio/{tid}" in paths
    for path in paths:
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path.startswith("/audio/"):
            assert int(head.headers["content-length"]) == len(get.content)


# ---------------------------------------------------------------------- 5. audio confinement
@pytest.fixture(scope="module")
def jail(tmp_path_factory, serve_catalog, serve_model):
    """A catalogue whose audio paths try to leave the library, served for real."""
    base = tmp_path_factory.mktemp("jail")
    root, outside, extra = base / "library", base / "outside", base / "extra"
    for d in (root / "audio", outside, extra):
        d.mkdir(parents=True)
    write_tone(outside / "secret.wav", freq=330.0)
    write_tone(root / "audio" / "ok.wav", freq=440.0)
    write_tone(extra / "more.wav", freq=550.0)
    write_tone(root / "audio" / "big.wav", freq=660.0, seconds=150.0)  # 2.4 MB: streamed
    (root / "audio" / "notes.txt").write_text("not audio")
    (root / "audio" / "folder.wav").mkdir()
    os.symlink(outside / "secret.wav", root / "audio" / "escape.wav")
    os.symlink(root / "audio" / "ok.wav", root / "audio" / "alias.wav")
    cases = {
        "inside": ("audio/ok.wav", 200),
        "symlink_inside": ("audio/alias.wav", 200),
        "symlink_out": ("audio/escape.wav", 404),
        "dotdot": ("audio/../../outside/secret.wav", 404),
        "absolute_out": (str(outside / "secret.wav"), 404),
        "not_audio": ("audio/notes.txt", 404),
        "directory": ("audio/folder.wav", 404),
        "etc": ("/etc/passwd", 404),
        "extra_root": (str(extra / "more.wav"), 200),
        "big": ("audio/big.wav", 200),
    }
    labels = serve_catalog.labels.copy()
    labels["audio_path"] = ""
    rows = {}
    for i, (name, (path, _)) in enumerate(cases.items()):
        labels.loc[2 * i, "audio_path"] = path
        rows[name] = labels["track_id"].iat[2 * i]
    cat = Catalog(embeddings=serve_catalog.embeddings, labels=labels,
                  provenance=dict(serve_catalog.provenance), root=root)  # fmt: skip
    app = create_app(catalog=cat, model=serve_model, audio_roots=[extra])
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c, {name: (rows[name], status) for name, (_, status) in cases.items()}


@pytest.mark.parametrize(
    "case", ["inside", "symlink_inside", "symlink_out", "dotdot", "absolute_out", "not_audio",
             "directory", "etc", "extra_root", "big"],
)  # fmt: skip
def test_audio_is_confined_to_regular_audio_files_under_the_roots(jail, case):
    c, cases = jail
    tid, status = cases[case]
    for method in ("GET", "HEAD"):
        r = c.request(method, f"/audio/{tid}")
        assert r.status_code == status, (case, method, r.text)
    r = c.get(f"/audio/{tid}")
    if status == 200:
        assert r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
    else:
        assert b"RIFF" not in r.content and b"root:" not in r.content


# ---------------------------------------------------------------------- 6. browser hardening
def test_host_header_outside_the_allow_list_is_refused(client, live_server):
    port = live_server.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        r = client.get("/healthz", headers={"host": host})
        assert r.status_code == 400 and "allowed-hosts" in r.text, host
        r = client.post("/query", json={"track_id": "syn_000002", "target_mood": "calm"},
                        headers={"host": host})  # fmt: skip
        assert r.status_code == 400, host  # the inline fast path too
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host


def test_page_headers_forbid_third_parties_and_framing(client):
    for path in ("/", "/docs", "/healthz", "/static/app.js"):
        h = client.get(path).headers
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert "http" not in csp and "*" not in csp
        assert h["x-content-type-options"] == "nosniff"


def test_docs_page_works_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    script = client.get("/static/docs.js")
    assert script.status_code == 200 and "/openapi.json" in script.text
    for text in (page.text, script.text):
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower()


def test_cors_is_off_by_default_and_on_for_named_origins(client, serve_catalog, serve_model):
    origin = "http://192.0.2.1:5173"
    r = client.get("/healthz", headers={"origin": origin})
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/query", headers={"origin": origin,
                                          "access-control-request-method": "POST"})  # fmt: skip
    assert "access-control-allow-origin" not in r.headers
    app = create_app(catalog=serve_catalog, model=serve_model, cors_origins=[origin])
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/query", json={"track_id": "syn_000002", "target_mood": "calm"},
                   headers={"origin": origin})  # fmt: skip
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        r = c.options("/query", headers={"origin": origin,
                                         "access-control-request-method": "POST"})  # fmt: skip
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        r = c.get("/healthz", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_no_slash_redirect_is_built_from_the_host_header(client):
    r = client.get("/healthz/", headers={"host": "localhost"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


# ---------------------------------------------------------------------- 7. slow clients
def test_partial_headers_are_cut_off(serve_catalog, serve_model):
    from moodshift.serving import launch

    app = create_app(catalog=serve_catalog, model=serve_model)
    old = launch.HeaderTimeoutProtocol.header_timeout
    launch.HeaderTimeoutProtocol.header_timeout = 0.5
    try:
        with running(app, http=launch.HeaderTimeoutProtocol) as url:
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                t0 = time.monotonic()
                assert s.recv(100) == b""  # closed by the server
                assert time.monotonic() - t0 < 5
            # A complete request, then a slow second one on the same connection.
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert b"200 OK" in s.recv(4096)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: loc")
                t0 = time.monotonic()
                while s.recv(4096):
                    pass
                assert time.monotonic() - t0 < 5
            assert httpx.get(url + "/healthz").status_code == 200  # normal clients unaffected
    finally:
        launch.HeaderTimeoutProtocol.header_timeout = old


# ---------------------------------------------------------------------- 8. one validation path
BODIES = [
    b'{"track_id": "syn_000002", "target_mood": "calm", "k": true}',
    b'{"track_id": "syn_000002", "target_mood": "calm", "k": "5"}',
    b'{"track_id": "syn_000002", "target_mood": "calm", "k": 5.5}',
    b'{"track_id": "syn_000002", "target_mood": "calm", "strength": true}',
    b'{"track_id": "\\ud800", "target_mood": "calm"}',
    b'{"track_id": "syn_000002", "target_mood": "\\udfff"}',
    b'{"track_id": "syn_000002", "target_mood": "calm", "filters": '
    + b'{"a": ' * 300
    + b"1"
    + b"}" * 301,
    b"[" * 5000 + b"]" * 5000,
    b'{"track_id": 12, "target_mood": "calm"}',
    b'{"track_id": "syn_000002", "target_mood": "calm", "filters": {"genre": [1]}}',
]


def test_fast_path_and_route_give_one_answer(client, serve_catalog, serve_model):
    slow = create_app(catalog=serve_catalog, model=serve_model, max_k=50, inline=False)

    async def via_route() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=slow)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return [await c.post("/query", content=b, headers={"content-type":
                                 "application/json"}) for b in BODIES]  # fmt: skip

    routed = asyncio.run(via_route())
    for body, b in zip(BODIES, routed, strict=True):
        a = client.post("/query", content=body, headers={"content-type": "application/json"})
        assert a.status_code == b.status_code == 422, (body[:80], a.text, b.text)
        assert a.json() == b.json()
    assert "k" in client.post("/query", content=BODIES[0]).json()["detail"][0]["loc"]


def test_openapi_documents_moods_404s_and_audio(client, serve_model):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["target_mood"]["enum"] == serve_model.classes
    assert {"404", "422"} <= set(spec["paths"]["/query"]["post"]["responses"])
    assert "404" in spec["paths"]["/tracks/{track_id}"]["get"]["responses"]
    audio = spec["paths"]["/audio/{track_id}"]["get"]["responses"]
    assert "404" in audio and "audio/*" in audio["200"]["content"]
    assert "application/json" not in audio["200"]["content"]


# ---------------------------------------------------------------------- 10. unusable models
def test_unusable_models_are_refused_at_start_up(serve_catalog, serve_model, small_catalog):
    import copy

    from moodshift.evaluation.evaluate import evaluate_catalog

    bad = copy.copy(serve_model)
    bad.config = {**serve_model.config, "default_strength": 1.5}
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        create_app(catalog=serve_catalog, model=bad)
    keep = np.flatnonzero(serve_catalog.labels["mood"].to_numpy() != "sad")
    no_sad = serve_catalog.subset(keep)
    with pytest.raises(InputError, match="label no track"):
        create_app(catalog=no_sad, model=serve_model)
    with pytest.raises(InputError, match="label no track"):
        evaluate_catalog(no_sad, model=serve_model, methods=["model"])


def test_query_and_serve_cli_refuse_unusable_models(tmp_path, serve_catalog, serve_model, capsys):
    from moodshift.cli import main

    keep = np.flatnonzero(serve_catalog.labels["mood"].to_numpy() != "sad")
    serve_catalog.subset(keep).save(tmp_path / "cat")
    serve_model.save(tmp_path / "m")
    for args in (["query", "--track", "syn_000000", "--mood", "happy"], ["serve", "--port", "1"],
                 ["evaluate"]):  # fmt: skip
        rc = main([args[0], "--catalog", str(tmp_path / "cat"), "--model", str(tmp_path / "m"),
                   *args[1:]])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "label no track" in err and err.count("\n") == 1, (args, err)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["default_strength"] = -0.5
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    rc = main(["evaluate", "--catalog", str(tmp_path / "cat"), "--model", str(tmp_path / "m")])
    assert rc == 2 and "outside [0, 1]" in capsys.readouterr().err


def test_audio_large_files_and_ranges_are_exact(jail, tmp_path_factory):
    c, cases = jail
    tid, _ = cases["big"]
    whole = c.get(f"/audio/{tid}")
    data = whole.content
    assert whole.status_code == 200 and len(data) > 2 * 1024 * 1024
    assert int(whole.headers["content-length"]) == len(data)
    for lo, hi in [(0, 99), (1024 * 1024 - 10, 1024 * 1024 + 10), (5, 1024 * 1024 + 500_000)]:
        r = c.get(f"/audio/{tid}", headers={"Range": f"bytes={lo}-{hi}"})
        assert r.status_code == 206 and r.content == data[lo : hi + 1], (lo, hi)


def test_a_query_that_overflows_the_model_is_refused_never_a_200_with_nan(
    serve_catalog, serve_model
):
    """Finite but huge weights overflow float32: that request gets 422, others still 200."""
    import copy
    import json

    import torch
    from fastapi.testclient import TestClient

    from moodshift.errors import NonFiniteQueryError
    from moodshift.retrieval.search import Searcher
    from moodshift.serving.app import create_app

    model = copy.deepcopy(serve_model)
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if p.ndim == 2 and "centroid" not in name:
                p.mul_(1e30)  # finite, so loading would accept it; the products are not
    tid = str(serve_catalog.labels["track_id"].iat[0])
    with TestClient(create_app(catalog=serve_catalog, model=model),
                    base_url="http://127.0.0.1") as client:  # fmt: skip
        r = client.post("/query", json={"track_id": tid, "target_mood": "happy", "k": 3})
        assert r.status_code == 422, r.text
        assert "NaN or infinity" in r.json()["detail"][0]["msg"]
        json.loads(r.text)  # valid JSON (no NaN literal)
        r = client.post("/playlist", json={"track_id": tid, "to": "happy", "length": 3})
        assert r.status_code == 422, r.text
    with pytest.raises(NonFiniteQueryError):
        Searcher(catalog=serve_catalog, model=model).query(track_id=tid, target_mood="happy")


# ---------------------------------------------------------------------- issue 19, point 5
def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(4096)


@pytest.mark.parametrize("order", [("evil.example", "127.0.0.1"), ("127.0.0.1", "evil.example"),
                                   ("127.0.0.1", "127.0.0.1")])  # fmt: skip
def test_two_host_headers_are_refused_in_any_order(live_server, order):
    head = b"".join(b"Host: " + h.encode() + b"\r\n" for h in order)
    answer = _raw(live_server, b"GET /healthz HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


@pytest.mark.parametrize("value", [True, "1", None, [1.0]])
def test_embedding_numbers_are_json_numbers_only(client, serve_catalog, value):
    emb = serve_catalog.normalized[3].astype(float).tolist()
    emb[0] = value
    r = client.post("/query", json={"embedding": emb, "source_mood": "sad",
                                    "target_mood": "happy"})  # fmt: skip
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "embedding", "0"]
    emb[0] = 1  # an integer is a number
    ok = client.post(
        "/query", json={"embedding": emb, "source_mood": "sad", "target_mood": "happy"}
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("route", ["/query", "/playlist"])
def test_whole_floats_are_integers_as_the_schema_says(client, route):
    base = ({"track_id": "syn_000002", "target_mood": "calm", "k": 4.0} if route == "/query"
            else {"track_id": "syn_000002", "to": "calm", "length": 4.0})  # fmt: skip
    for cap, status in ((8.0, 200), (2.0, 200), (2.5, 422), (True, 422), ("2", 422)):
        r = client.post(route, json={**base, "max_per_artist": cap})
        assert r.status_code == status, (cap, r.text)


def test_an_empty_track_id_beside_an_embedding_is_invalid_by_the_schema_too(client, serve_catalog):
    import jsonschema

    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = {"track_id": "", "embedding": serve_catalog.normalized[3].astype(float).tolist(),
            "target_mood": "happy"}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, {**schema, "components": spec["components"]})
    assert client.post("/query", json=body).status_code == 422
    alone = {k: v for k, v in body.items() if k != "track_id"}
    jsonschema.validate(alone, {**schema, "components": spec["components"]})


@pytest.mark.parametrize("params", [{"genre": ""}, {"mood": ""}, {"genre": "nope"},
                                    {"mood": "nope"}])  # fmt: skip
def test_empty_or_unknown_track_filters_are_422_and_the_schema_lists_genres(client, params):
    r = client.get("/tracks", params=params)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list)
    spec = client.get("/openapi.json").json()
    declared = {p["name"]: p["schema"] for p in spec["paths"]["/tracks"]["get"]["parameters"]}
    assert "genre1" in declared["genre"]["enum"]
    assert all('"minLength": 1' in json.dumps(declared[name]) for name in ("genre", "mood"))


BAD_BODIES = [b"{oops", b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b"", b"null"]


@pytest.mark.parametrize("route", ["/query", "/playlist"])
@pytest.mark.parametrize("raw", BAD_BODIES)
def test_bodies_that_are_not_json_get_the_same_422_on_every_route(client, route, raw):
    r = client.post(route, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"][0] == "body"
    assert set(detail[0]) == {"loc", "msg", "type"}


@pytest.mark.parametrize("route", ["/query", "/playlist"])
@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_bodies_not_sent_as_json_are_refused_on_every_route(client, route, ctype):
    body = ({"track_id": "syn_000002", "target_mood": "calm"} if route == "/query"
            else {"track_id": "syn_000002", "to": "calm"})  # fmt: skip
    r = client.post(route, content=json.dumps(body), headers={"content-type": ctype})
    assert r.status_code == 415, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
    spec = client.get("/openapi.json").json()
    assert "415" in spec["paths"][route]["post"]["responses"]
