"""The built-in labelled audio corpus.

Real tunes from music21's corpus, arranged in eight genres with over thirty
General MIDI lead instruments, performed in four moods (energetic, calm, happy,
sad) and rendered with FluidSynth. Each *group* is one piece (melody, genre,
instruments, soundfont) rendered in several moods, so "the same piece in the
target mood" is known.

>>> from moodshift.audio.corpus import build_corpus
>>> labels_csv = build_corpus("demo_out/corpus", n=100, clip_seconds=(10, 10))  # doctest: +SKIP
"""

from moodshift.audio.corpus.arrange import GroupPlan, MoodParams, arrange, plan_groups
from moodshift.audio.corpus.build import (
    LABEL_COLUMNS,
    META_COLUMNS,
    Clip,
    build_corpus,
    plan_corpus,
)
from moodshift.audio.corpus.melodies import Melody, load_melodies
from moodshift.audio.corpus.render import default_soundfonts, render_clip, resolve_soundfonts
from moodshift.audio.corpus.styles import FAMILIES, GENRES, MOODS, STYLES, family, instrument_name

__all__ = [
    "FAMILIES",
    "GENRES",
    "LABEL_COLUMNS",
    "META_COLUMNS",
    "MOODS",
    "STYLES",
    "Clip",
    "GroupPlan",
    "Melody",
    "MoodParams",
    "arrange",
    "build_corpus",
    "default_soundfonts",
    "family",
    "instrument_name",
    "load_melodies",
    "plan_corpus",
    "plan_groups",
    "render_clip",
    "resolve_soundfonts",
]
