"""Real audio through a real pretrained model: corpus -> musicnn -> catalogue -> train."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from moodshift.audio.embed import embed_catalog
from moodshift.data.catalog import Catalog
from moodshift.errors import DataError, EmbedderMismatchError, InputError
from moodshift.evaluation.evaluate import evaluate_catalog
from moodshift.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from moodshift.audio.corpus.render import default_soundfonts

    if shutil.which("fluidsynth") is None or not default_soundfonts():
        pytest.skip("fluidsynth/soundfonts missing: apt-get install fluidsynth fluid-soundfont-gm")
    from moodshift.audio.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    return build_corpus(out, n=48, seed=11, clip_seconds=(3.0, 3.5), progress=False)


@pytest.fixture(scope="module")
def audio_catalog(corpus):
    cat, failures = embed_catalog(labels=corpus, embedder="musicnn", progress=False)
    return cat, failures


@pytest.mark.slow
def test_embed_catalog_from_rendered_audio(audio_catalog, corpus, tmp_path):
    cat, failures = audio_catalog
    assert failures == []
    assert len(cat) == 48 and cat.dim == 200
    assert cat.provenance["name"] == "musicnn-msd"
    assert np.isfinite(cat.embeddings).all()
    # Different pieces must not collapse onto one vector.
    assert np.linalg.matrix_rank(cat.embeddings) > 20
    assert set(cat.split) == {"train", "val", "test"}
    cat.save(tmp_path / "c")
    back = Catalog.load(tmp_path / "c")
    assert back.audio_path(0).is_file()


def test_a_broken_file_is_skipped_and_reported(corpus, tmp_path):
    import pandas as pd

    df = pd.read_csv(corpus)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    df.loc[0, "audio_path"] = str(bad)
    df.to_csv(tmp_path / "labels.csv", index=False)
    # audio paths are relative to the original corpus folder
    df["audio_path"] = [p if p.startswith("/") else str(corpus.parent / p) for p in df.audio_path]
    df.to_csv(tmp_path / "labels.csv", index=False)
    cat, failures = embed_catalog(
        labels=tmp_path / "labels.csv",
        embedder="musicnn",
        cache_dir=corpus.parent / ".embed_cache",
        progress=False,
    )
    assert len(cat) == 47
    assert failures and failures[0][0] == str(bad)


@pytest.mark.slow
def test_train_and_evaluate_on_audio(audio_catalog):
    cat, _ = audio_catalog
    model = train(cat, config=TrainConfig(epochs=3, batch_size=32), progress=False)
    r = evaluate_catalog(cat, model=model, part="train", ks=(1,), big_k=10)
    assert set(r.methods) >= {"model", "seed_nn", "oracle_top1"}
    assert r.methods["oracle_top1"]["mood_p@1"] == 1.0
    assert "cf@1" in r.methods["model"]


def test_models_refuse_another_embedder(audio_catalog):
    cat, _ = audio_catalog
    model = train(cat, config=TrainConfig(epochs=1, batch_size=32), progress=False)
    other = Catalog(embeddings=cat.embeddings, labels=cat.labels.copy(),
                    provenance={"name": "features", "version": "1", "dim": cat.dim})  # fmt: skip
    with pytest.raises(EmbedderMismatchError, match="re-embed the catalogue or retrain"):
        evaluate_catalog(other, model=model)


def test_embed_needs_labels_and_paths(tmp_path):
    with pytest.raises(InputError):
        embed_catalog(audio_dir=tmp_path)
    (tmp_path / "labels.csv").write_text("track_id,mood\na,happy\nb,sad\n")
    with pytest.raises(DataError, match="no file in"):
        embed_catalog(labels=tmp_path / "labels.csv", audio_dir=tmp_path)
