"""The one request path: the library, the CLI and the server check and answer alike."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moodshift.cli import main
from moodshift.errors import InputError, UnknownLabelError
from moodshift.retrieval.index import build_catalog_index
from moodshift.retrieval.request import (
    BodyFieldError,
    QueryRequest,
    Retriever,
    UnknownFilterError,
    UnknownMoodError,
)
from moodshift.retrieval.search import Searcher
from moodshift.serving.state import ServingState


@pytest.fixture(scope="module")
def retriever(serve_catalog, serve_model):
    return Retriever(catalog=serve_catalog, model=serve_model)


def _tid(cat, i=3):
    return str(cat.labels["track_id"].iat[i])


@pytest.mark.parametrize(
    ("request_", "field", "match"),
    [
        (QueryRequest(target_mood="happy"), "body", "exactly one of track_id or embedding"),
        (QueryRequest(target_mood="happy", track_id="t", embedding=[0.0] * 32), "body",
         "exactly one"),
        (QueryRequest(target_mood="bliss", track_id="x"), "target_mood", "unknown target mood"),
        (QueryRequest(target_mood="happy", embedding=[1.0] * 5), "embedding", "dimension"),
        (QueryRequest(target_mood="happy", embedding=[0.0] * 32), "embedding", "all zeros"),
        (QueryRequest(target_mood="happy", embedding=[1.0] * 32, strength=1.5), "strength",
         r"\[0, 1\]"),
        (QueryRequest(target_mood="happy", embedding=[1.0] * 32, evidence="vibes"), "evidence",
         "evidence must be one of"),
        (QueryRequest(target_mood="happy", embedding=[1.0] * 32, k=0), "k", "k must be >= 1"),
    ],
)  # fmt: skip
def test_bad_requests_name_their_field(retriever, request_, field, match):
    with pytest.raises((BodyFieldError, UnknownMoodError), match=match) as info:
        retriever.prepare(request_)
    assert info.value.field == field


def test_an_unknown_filter_value_is_one_error_everywhere(retriever, serve_catalog, serve_model):
    tid = _tid(serve_catalog)
    request = QueryRequest(target_mood="happy", track_id=tid, filters={"genre": "polka"})
    # The request layer: an UnknownLabelError naming the value and the known ones.
    with pytest.raises(UnknownFilterError, match="unknown genre 'polka'; known values: genre0"):
        retriever.prepare(request)
    # The library says the same (it was an empty answer before).
    searcher = Searcher(catalog=serve_catalog, model=serve_model)
    with pytest.raises(UnknownLabelError, match="'polka'; known values: genre0"):
        searcher.query(track_id=tid, target_mood="happy", filters={"genre": "polka"})
    with pytest.raises(UnknownLabelError, match="unknown filter column 'era'"):
        searcher.query(track_id=tid, target_mood="happy", filters={"era": "1970s"})
    # The catalogue's label sets refuse an unknown column the same way.
    with pytest.raises(UnknownLabelError, match="no label column 'era'"):
        serve_catalog.value_sets("era")
    # The server: the same error, kept with its own request.
    state = ServingState(catalog=serve_catalog, model=serve_model, index=None, max_k=20)
    out = state.query_batch([{"track_id": tid, "target_mood": "happy", "k": 3,
                              "filters": {"genre": "polka"}},
                             {"track_id": tid, "target_mood": "happy", "k": 3}])  # fmt: skip
    assert isinstance(out[0], UnknownFilterError) and out[0].field == "filters"
    assert len(out[1]["results"]) == 3


def test_library_and_server_give_one_answer(serve_catalog, serve_model):
    tid = _tid(serve_catalog, 7)
    state = ServingState(catalog=serve_catalog, model=serve_model, index=None, max_k=20)
    body = {"track_id": tid, "target_mood": "sad", "k": 6, "filters": {"genre": "genre1"},
            "strength": 0.7}  # fmt: skip
    served = state.query(body)
    answer = Searcher(catalog=serve_catalog, model=serve_model).query(
        track_id=tid, target_mood="sad", k=6, filters={"genre": "genre1"}, strength=0.7
    )
    assert [r.track_id for r in answer.results] == [r["track_id"] for r in served["results"]]
    assert answer.source_mood == served["source_mood"] == serve_catalog.labels["mood"].iat[7]
    assert answer.source_mood_source == served["source_mood_source"] == "label"
    assert answer.strength == served["strength"] == 0.7
    assert all("genre1" in r.labels["genre"] for r in answer.results)


def test_an_unknown_mood_names_the_known_ones(retriever, serve_catalog):
    with pytest.raises(UnknownMoodError, match="known: calm") as info:
        retriever.prepare(QueryRequest(target_mood="happy", track_id=_tid(serve_catalog),
                                       source_mood="grumpy"))  # fmt: skip
    assert info.value.field == "source_mood" and isinstance(info.value, InputError)


def test_from_body_keeps_defaults_for_null_fields():
    r = QueryRequest.from_body({"target_mood": "happy", "track_id": "a", "k": 4,
                                "evidence": None, "strength": None, "other": 1})  # fmt: skip
    assert (r.k, r.evidence, r.strength, r.embedding) == (4, "auto", None, None)


def test_cli_query_and_playlist_answer_through_the_catalogues_index(
    tmp_path, serve_catalog, serve_model, capsys, monkeypatch
):
    cat_dir, model_dir = tmp_path / "cat", tmp_path / "model"
    serve_catalog.save(cat_dir)
    serve_model.save(model_dir)
    tid = _tid(serve_catalog, 5)
    args = ["--catalog", str(cat_dir), "--model", str(model_dir), "--track", tid]
    assert main(["query", *args, "--mood", "sad", "-k", "4", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["index"] == "exact"
    assert exact["source"] == {"mood": serve_catalog.labels["mood"].iat[5], "mood_source": "label"}

    build_catalog_index(cat_dir, kind="flat", model=serve_model, progress=False)
    # The tagger is not run over the catalogue: its stored p(mood | track) serves.
    calls = []
    predict = type(serve_model.tagger).predict_proba
    monkeypatch.setattr(type(serve_model.tagger), "predict_proba",
                        lambda self, x: calls.append(len(x)) or predict(self, x))  # fmt: skip
    assert main(["query", *args, "--mood", "sad", "-k", "4", "--json"]) == 0
    indexed = json.loads(capsys.readouterr().out)
    assert indexed["index"] == "flat" and calls == []
    assert [r["track_id"] for r in indexed["results"]] == [r["track_id"] for r in exact["results"]]
    np.testing.assert_allclose([r["score"] for r in indexed["results"]],
                               [r["score"] for r in exact["results"]], atol=1e-4)  # fmt: skip
    assert main(["playlist", *args, "--to", "happy", "--length", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index"] == "flat" and len(out["tracks"]) == 4 and calls == []
