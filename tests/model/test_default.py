"""The default model shipped in the package: present, small, described, used without --model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moodshift.cli import main
from moodshift.model.default import TRAINED_ON, default_model_dir, trained_on
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.request import open_artifacts
from moodshift.retrieval.search import Searcher
from moodshift.serving.launch import _load_app
from moodshift.synthetic import make_catalog

ROOT = Path(__file__).parents[2]


def test_the_default_model_ships_as_package_data_and_says_what_it_learned():
    folder = default_model_dir()
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 5_000_000
    # Python 3.10 has no tomllib: read the package-data line as text.
    line = next(x for x in (ROOT / "pyproject.toml").read_text().splitlines()
                if x.startswith("moodshift = ["))  # fmt: skip
    assert '"model/default/*"' in line
    info = trained_on()
    assert (folder / TRAINED_ON).is_file()
    assert {r["variety"] for r in info["corpus"]["renders"]} == {"classic", "wide"}
    model = MoodshiftModel.load(folder)
    assert model.embedder["name"] == "musicnn-msd" and model.evidence is not None
    assert model.evidence.taghead is not None  # musicnn's own tags are one of its sources


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A catalogue in the default model's embedding space (its provenance), saved."""
    model = MoodshiftModel.load(default_model_dir())
    cat = make_catalog(n=160, dim=model.dim, seed=4, groups=True)
    cat.provenance = dict(model.embedder)
    path = tmp_path_factory.mktemp("lib") / "lib"
    cat.save(path)
    return path, cat


def test_query_and_playlist_without_model_use_the_default_and_say_so(library, capsys):
    path, cat = library
    seed = str(cat.labels["track_id"].iloc[0])
    assert main(["query", "--catalog", str(path), "--track", seed, "--mood", "happy",
                 "--json"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "the default model" in out.err and str(default_model_dir()) in out.err
    assert len(json.loads(out.out)["results"]) == 10
    assert main(["playlist", "--catalog", str(path), "--track", seed, "--to", "calm",
                 "--length", "4", "--json"]) == 0  # fmt: skip
    out = capsys.readouterr()
    # Up to --length tracks (fewer when the one-per-artist rule runs out of candidates).
    assert "the default model" in out.err and 1 <= len(json.loads(out.out)["tracks"]) <= 4


def test_the_default_model_answers_through_the_request_layer(library):
    # The shipped model carries the ranking space chosen on validation (TRAINED_ON.json
    # says which); evidence "none" still ranks by the plain cosine of raw embeddings.
    path, cat = library
    folder = default_model_dir()
    trained_on = json.loads((folder / "TRAINED_ON.json").read_text())
    searcher = Searcher.open(catalog=path)  # no model: the shipped one, as the CLI opens it
    art = searcher.artifacts
    assert art.default_model and art.model_source.startswith(f"the default model {folder}")
    assert searcher.model.evidence is not None
    space = searcher.model.ranking
    assert (space.info if space is not None else {"kind": "none"}) == trained_on["ranking_space"]
    seed = str(cat.labels["track_id"].iloc[0])
    # Strength 0 without mood evidence: the seed's own cosine neighbours, in order.
    near = searcher.query(track_id=seed, target_mood="happy", k=5, evidence="none", strength=0.0)
    sims = cat.normalized @ cat.normalized[0]
    sims[0] = -np.inf
    top = np.argsort(-sims, kind="stable")[:5]
    assert [r.track_id for r in near.results] == cat.labels["track_id"].iloc[top].tolist()
    np.testing.assert_allclose([r.score for r in near.results], sims[top], atol=1e-5)
    answer = searcher.query(track_id=seed, target_mood="happy", k=5)
    assert answer.index == "exact" and len(answer.results) == 5
    assert all(r.mood == "happy" for r in answer.results)  # the seed's catalogue has labels
    # A given model is named as given; the server's start-up names the default one.
    given = open_artifacts(catalog=path, model=folder)
    assert not given.default_model and given.model_source == str(folder)
    app = _load_app(catalog=path, model=None, index=None, max_k=10)
    assert app.state.model_source == art.model_source


def test_a_catalogue_of_another_embedder_gets_a_clear_error(tmp_path, capsys):
    model = MoodshiftModel.load(default_model_dir())
    cat = make_catalog(n=80, dim=model.dim, seed=4)
    cat.provenance = {"name": "features", "version": "1", "dim": model.dim}
    cat.save(tmp_path / "lib")
    seed = str(cat.labels["track_id"].iloc[0])
    assert main(["query", "--catalog", str(tmp_path / "lib"), "--track", seed,
                 "--mood", "happy"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "default model needs musicnn-msd" in err and "--model" in err
