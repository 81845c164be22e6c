"""Fitting the evidence fusion, and attributes taken from the embedder's tag head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moodshift.audio.embedders.musicnn import MusicnnEmbedder
from moodshift.errors import InputError
from moodshift.synthetic import make_catalog
from moodshift.training.fusion import add_tag_attribute, embedder_tag_layer

MUSICNN = {"name": "musicnn-msd", "version": MusicnnEmbedder.version, "dim": 200,
           "options": {"model": "MSD_musicnn", "output": "penultimate"}}  # fmt: skip


def _catalog(**provenance):
    cat = make_catalog(n=300, dim=200, seed=3, split=False)
    cat.provenance = {**MUSICNN, **provenance}
    return cat


def test_only_an_embedder_whose_output_feeds_its_tags_has_a_tag_layer():
    w, b, names, name = embedder_tag_layer(MUSICNN)
    assert w.shape == (50, 200) and b.shape == (50,) and "happy" in names and name == "musicnn-msd"
    pooled = {**MUSICNN, "dim": 753, "options": {"model": "MSD_musicnn", "output": "max_pool"}}
    assert embedder_tag_layer(pooled) is None


def test_a_tag_becomes_an_attribute_with_its_top_and_bottom_thirds_labelled():
    cat = _catalog()
    classes = add_tag_attribute(cat, "Acoustic")
    assert classes == ["acoustic", "not acoustic"]
    col = cat.labels["Acoustic"].to_numpy()
    counts = {c: int((col == c).sum()) for c in (*classes, "")}
    assert all(95 <= v <= 105 for v in counts.values())  # thirds
    w, b, names, _ = embedder_tag_layer(MUSICNN)
    p = cat.embeddings @ w[names.index("acoustic")] + b[names.index("acoustic")]
    assert p[col == "acoustic"].min() > p[col == "not acoustic"].max()
    assert cat.split is not None  # an unsplit catalogue gets a split by the new column


def test_unknown_tags_and_tagless_embedders_are_clear_errors():
    with pytest.raises(InputError, match="tags: rock, pop"):
        add_tag_attribute(_catalog(), "polka")
    cat = make_catalog(n=60, dim=16, seed=1)
    with pytest.raises(InputError, match="has no tag head"):
        add_tag_attribute(cat, "acoustic")


def test_train_with_a_tag_attribute_serves_like_this_but_more_acoustic(tmp_path, capsys):
    from moodshift.cli import main

    cat = _catalog()
    cat.save(tmp_path / "lib")
    lib, out = str(tmp_path / "lib"), str(tmp_path / "m")
    assert main(["train", "--catalog", lib, "--attribute", "acoustic", "--out", out,
                 "--epochs", "2", "--batch-size", "128"]) == 0  # fmt: skip
    assert "from the embedder's tag head" in capsys.readouterr().out
    seed = str(cat.labels["track_id"].iloc[0])
    assert main(["query", "--catalog", lib, "--model", out, "--track", seed, "--mood",
                 "acoustic", "--json"]) == 0  # fmt: skip

    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 10 and all(r["mood_source"] == "predicted" for r in results)
    assert np.mean([r["mood"] == "acoustic" for r in results]) >= 0.5
