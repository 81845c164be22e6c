"""musicnn whole-track windowing: 3 s windows every 2 s, averaged."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.audio.embedders.musicnn import MusicnnEmbedder


@pytest.fixture(scope="module")
def emb() -> MusicnnEmbedder:
    return MusicnnEmbedder(model="MSD_musicnn")


def test_seven_seconds_gives_three_windows(emb: MusicnnEmbedder, make_noise) -> None:
    y = make_noise(7.0, sr=22050)  # also exercises resampling to 16 kHz
    out = emb.embed_windows(y, 22050)
    assert out["starts_s"].tolist() == [0.0, 2.0, 4.0]
    assert out["penultimate"].shape == (3, 200)
    assert out["tags"].shape == (3, 50) and out["max_pool"].shape == (3, 753)
    vec = emb.embed(y, 22050)
    assert vec.shape == (200,) and vec.dtype == np.float32
    np.testing.assert_allclose(vec, out["penultimate"].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_short_track_is_one_padded_window(emb: MusicnnEmbedder, make_noise) -> None:
    out = emb.embed_windows(make_noise(1.2), 16000)
    assert out["penultimate"].shape == (1, 200)
    patches, _ = emb.patches(make_noise(1.2), 16000)
    assert patches.shape == (1, 187, 96)
    # the zero padding shows as log10(1) = 0 in the last frames
    assert np.all(patches[0, -50:] == 0.0)


def test_batching_does_not_change_results(make_noise) -> None:
    y = make_noise(9.0, seed=3)
    a = MusicnnEmbedder(batch_size=1).embed_windows(y, 16000)["penultimate"]
    b = MusicnnEmbedder(batch_size=8).embed_windows(y, 16000)["penultimate"]
    assert a.shape == (4, 200)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_predict_tags_sorted(emb: MusicnnEmbedder, make_chords) -> None:
    tags = MusicnnEmbedder(model="MTT_musicnn").predict_tags(make_chords([[0, 4, 7]] * 4), 22050)
    scores = list(tags.values())
    assert len(tags) == 50 and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
