"""The transfer benchmark's corpus options: genres, the wide arranger, tune parts, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from moodshift.audio.corpus.arrange import MOOD_RANGES, WIDE_RANGES, draw_mood, plan_groups
from moodshift.audio.corpus.melodies import source_part
from moodshift.audio.corpus.render import augment_audio
from moodshift.errors import InputError


def test_plan_groups_keeps_to_the_given_genres_and_variety():
    plans = plan_groups(n_groups=12, seed=1, soundfonts=["A"], genres=["folk", "march"],
                        variety="wide")  # fmt: skip
    assert {p.genre for p in plans} == {"folk", "march"}
    assert all(p.variety == "wide" for p in plans)
    with pytest.raises(InputError, match="unknown genres"):
        plan_groups(n_groups=2, seed=1, soundfonts=["A"], genres=["polka"])
    with pytest.raises(InputError, match="unknown variety"):
        plan_groups(n_groups=2, seed=1, soundfonts=["A"], variety="loud")


def test_the_classic_draw_is_unchanged_by_the_wide_option():
    # The shipped corpus must stay what it was: same generator, same parameters.
    a = draw_mood("happy", np.random.default_rng(5))
    b = draw_mood("happy", np.random.default_rng(5), variety="classic")
    assert a == b
    lo, hi = MOOD_RANGES["happy"]["tempo"]
    assert lo <= a.tempo <= hi


def test_wide_ranges_contain_the_classic_ones_and_overlap_more():
    for mood, ranges in MOOD_RANGES.items():
        for cue, (lo, hi) in ranges.items():
            wlo, whi = WIDE_RANGES[mood][cue]
            assert wlo <= lo and whi >= hi, (mood, cue)

    # Sad and happy tempi overlap further in the wide arranger.
    def overlap(r: dict) -> float:
        sad, happy = r["sad"]["tempo"], r["happy"]["tempo"]
        return min(sad[1], happy[1]) - max(sad[0], happy[0])

    assert overlap(WIDE_RANGES) > overlap(MOOD_RANGES)


def test_source_part_splits_tunes_stably_and_disjointly():
    names = [f"essenFolksong/tune{i}.abc" for i in range(200)]
    parts = [source_part(s, 2) for s in names]
    assert parts == [source_part(s, 2) for s in names]
    assert 60 < sum(parts) < 140


def test_augment_audio_is_seeded_finite_and_about_as_long(rng):
    sr = 22050
    t = np.arange(2 * sr) / sr
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    a = augment_audio(audio, sample_rate=sr, rng=np.random.default_rng(3))
    b = augment_audio(audio, sample_rate=sr, rng=np.random.default_rng(3))
    c = augment_audio(audio, sample_rate=sr, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[: len(c)], c[: len(a)])
    assert np.isfinite(a).all() and abs(len(a) - len(audio)) < 0.04 * len(audio)
    assert 1e-3 < np.sqrt(np.mean(a**2)) < 1.0
