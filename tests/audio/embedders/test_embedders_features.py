"""The handcrafted ``features`` embedder."""

from __future__ import annotations

import numpy as np

from moodshift.audio.embedders import get_embedder
from moodshift.audio.embedders.features import FEATURE_NAMES, FeaturesEmbedder, key_profile_scores

MAJOR = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]]  # C  F  G  C
MINOR = [[0, 3, 7], [5, 8, 12], [7, 11, 14], [0, 3, 7]]  # Cm Fm G  Cm


def test_finite_vector_with_names(make_noise) -> None:
    emb = get_embedder("features")
    assert isinstance(emb, FeaturesEmbedder)
    assert emb.dim == len(FEATURE_NAMES) == 72 and len(set(FEATURE_NAMES)) == 72
    assert emb.needs_standardization
    for y, sr in [(make_noise(3.0, sr=44100), 44100), (make_noise(0.05, sr=8000), 8000)]:
        v = emb.embed(y, sr)
        assert v.shape == (72,) and v.dtype == np.float32 and np.isfinite(v).all()


def test_mode_separates_major_from_minor(make_chords) -> None:
    emb = FeaturesEmbedder()
    mode = FEATURE_NAMES.index("mode")
    major = emb.embed(make_chords(MAJOR * 2), 22050)
    minor = emb.embed(make_chords(MINOR * 2), 22050)
    assert major[mode] > 0.05 > -0.05 > minor[mode]
    # same tonic (C): key position on the circle of fifths, C major vs relative major Eb
    assert major[FEATURE_NAMES.index("key_fifths_cos")] > 0.5


def test_key_profiles_find_the_key() -> None:
    chroma = np.zeros(12)
    chroma[[9, 0, 4]] = 1.0  # A minor triad
    major, minor = key_profile_scores(chroma)
    assert minor.argmax() == 9 and minor.max() > major.max()
    assert key_profile_scores(np.ones(12))[0].tolist() == [0.0] * 12
