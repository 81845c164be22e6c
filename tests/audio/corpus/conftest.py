"""Fixtures for the corpus tests: a shared melody cache and one small rendered corpus."""

from __future__ import annotations

import shutil

import pytest

from moodshift.audio.corpus.render import APT_FIX, default_soundfonts

HAS_SYNTH = shutil.which("fluidsynth") is not None and bool(default_soundfonts())

# Short clips keep rendering to a few seconds on two busy cores.
SMALL = dict(n=16, seed=5, clip_seconds=(3.0, 5.0), progress=False)


@pytest.fixture(scope="session")
def small_args() -> dict:
    """Arguments of the small corpus build (a copy, safe to modify)."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def melody_cache(tmp_path_factory):
    """One melody cache for the whole session: music21 parsing is the slow part."""
    return tmp_path_factory.mktemp("melody_cache")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, melody_cache):
    """A 16-clip corpus (4 groups x 4 moods), built once."""
    if not HAS_SYNTH:
        pytest.skip(f"fluidsynth binary or GM soundfonts missing (install with `{APT_FIX}`)")
    from moodshift.audio.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus_a")
    return build_corpus(out, cache_dir=melody_cache, **SMALL)
