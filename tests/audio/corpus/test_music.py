"""Musical checks on generated MIDI and label draws (no audio rendering)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest
from music21 import corpus as m21corpus

from moodshift.audio.corpus import FAMILIES, GENRES, MOODS, STYLES, family, plan_corpus, plan_groups
from moodshift.audio.corpus.arrange import SCALES, map_pitch_class
from moodshift.audio.corpus.melodies import Candidate, estimate_key, extract_melody
from moodshift.audio.corpus.styles import LEAD_RANGE


@pytest.fixture(scope="module")
def clips(melody_cache):
    """160 clips (40 groups x 4 moods), MIDI only."""
    return plan_corpus(n=160, seed=1, clip_seconds=(8.0, 12.0), cache_dir=melody_cache)


def _by_mood(clips, fn):
    out = defaultdict(list)
    for c in clips:
        out[c.labels["mood"]].append(fn(c))
    return {m: float(np.mean(v)) for m, v in out.items()}


def _lead_velocity(clip) -> float:
    return float(np.mean([n.velocity for n in clip.midi.instruments[0].notes]))


def _tempo(clip) -> float:
    _, tempi = clip.midi.get_tempo_changes()
    return float(tempi[0])


def test_sad_and_calm_are_slower_and_softer_than_energetic(clips):
    tempo = _by_mood(clips, _tempo)
    velocity = _by_mood(clips, _lead_velocity)
    for mood in ("sad", "calm"):
        assert tempo[mood] < tempo["energetic"] - 20, tempo
        assert velocity[mood] < velocity["energetic"] - 15, velocity
    assert tempo["happy"] > tempo["sad"], tempo


def test_cues_overlap_between_moods(clips):
    """No single cue separates the moods: ranges overlap across neighbours."""
    tempo = defaultdict(list)
    for c in clips:
        tempo[c.labels["mood"]].append(_tempo(c))
    assert max(tempo["sad"]) > min(tempo["happy"])
    assert max(tempo["happy"]) > min(tempo["energetic"])
    modes = Counter((c.labels["mood"], c.labels["meta_mode"]) for c in clips)
    assert modes[("energetic", "major")] > 0 and modes[("energetic", "minor")] > 0


def test_happy_mostly_major_sad_mostly_minor(clips):
    def share(mood, modes):
        rows = [c for c in clips if c.labels["mood"] == mood]
        return sum(c.labels["meta_mode"] in modes for c in rows) / len(rows)

    assert share("happy", {"major", "mixolydian", "lydian"}) > 0.75
    assert share("sad", {"minor", "dorian", "phrygian"}) > 0.7
    assert share("happy", {"major"}) > 0.6
    assert share("sad", {"minor"}) > 0.55


def test_happy_lead_sits_higher_than_sad(clips):
    register = _by_mood(
        clips, lambda c: float(np.median([n.pitch for n in c.midi.instruments[0].notes]))
    )
    assert register["happy"] > register["sad"] + 3, register


def _legato(clip) -> float:
    """Mean sounding length of lead notes relative to the time to the next onset."""
    notes = sorted(clip.midi.instruments[0].notes, key=lambda n: n.start)
    ratios = [
        (a.end - a.start) / (b.start - a.start)
        for a, b in itertools.pairwise(notes)
        if b.start - a.start > 0.05
    ]
    return float(np.median(ratios))


def test_sad_and_calm_are_legato_happy_detached(clips):
    legato = _by_mood(clips, _legato)
    assert legato["sad"] > legato["happy"] + 0.15, legato
    assert legato["calm"] > legato["happy"] + 0.15, legato


def test_mode_change_reaches_the_notes(clips):
    """A minor-mode clip's lead uses the minor third, a major one the major third."""
    names = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
    for c in clips:
        if c.labels["meta_mode"] not in ("minor", "major"):
            continue
        tonic = names.index(str(c.labels["meta_key"]))
        pcs = Counter((n.pitch - tonic) % 12 for n in c.midi.instruments[0].notes)
        if c.labels["meta_mode"] == "minor":
            assert pcs[4] <= pcs[3], (c.labels["track_id"], pcs)
        else:
            assert pcs[3] <= pcs[4], (c.labels["track_id"], pcs)


def test_melodies_come_from_music21_corpus(clips):
    sources = {c.labels["meta_source"] for c in clips}
    assert len(sources) >= 10
    for src in sources:
        path = src.split("#")[0]
        assert m21corpus.getWork(path), src
    # Every rendering of one melody shares an artist id, and only that melody.
    artist_src = {(c.labels["artist"], c.labels["meta_source"]) for c in clips}
    assert len(artist_src) == len({a for a, _ in artist_src}) == len(sources)


def test_label_draw_covers_families_and_genres():
    plans = plan_groups(n_groups=200, seed=0, soundfonts=["FluidR3_GM", "TimGM6mb"])
    families = {family(p.lead) for p in plans}
    assert len(families) >= 10, families
    genres = Counter(p.genre for p in plans)
    assert set(genres) == set(GENRES) and len(GENRES) >= 6
    assert max(genres.values()) - min(genres.values()) <= 1
    fonts = Counter(p.soundfont for p in plans)
    assert abs(fonts["FluidR3_GM"] - fonts["TimGM6mb"]) <= 1
    assert len({p.lead for p in plans}) >= 25
    moods = Counter(m for p in plans for m in p.moods)
    assert set(moods.values()) == {200}


def test_moods_balanced_with_fewer_moods_per_group():
    plans = plan_groups(n_groups=50, seed=2, soundfonts=["x"], moods_per_group=2, n_clips=99)
    moods = Counter(m for p in plans for m in p.moods)
    assert sum(moods.values()) == 99
    assert max(moods.values()) - min(moods.values()) <= 1
    assert all(len(set(p.moods)) == len(p.moods) for p in plans)


def test_plan_is_deterministic():
    a = plan_groups(n_groups=30, seed=4, soundfonts=["a", "b"])
    b = plan_groups(n_groups=30, seed=4, soundfonts=["a", "b"])
    c = plan_groups(n_groups=30, seed=5, soundfonts=["a", "b"])
    assert a == b and a != c


def test_style_tables_are_consistent():
    for style in STYLES.values():
        for lead in style.leads:
            assert lead in LEAD_RANGE, (style.name, lead)
    assert set(FAMILIES[p // 8] for s in STYLES.values() for p in s.leads) >= {
        "piano",
        "guitar",
        "strings",
        "brass",
        "reed",
        "pipe",
        "organ",
        "synth_lead",
        "chromatic_percussion",
        "ethnic",
    }
    assert set(MOODS) == {"energetic", "calm", "happy", "sad"}


def test_mode_mapping_by_scale_degree():
    major, minor = SCALES["major"], SCALES["minor"]
    assert [map_pitch_class(pc, major, minor) for pc in major] == list(minor)
    assert [map_pitch_class(pc, minor, major) for pc in minor] == list(major)
    assert map_pitch_class(11, minor, major) == 11  # raised 7th of minor -> major 7th
    assert map_pitch_class(10, major, minor) == 10  # flat 7th stays a flat 7th
    assert map_pitch_class(6, major, minor) == 6  # sharp 4th keeps its alteration


def test_key_estimate_and_extraction():
    c_major = [(p, float(i), 1.0) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 60])]
    assert estimate_key(c_major) == (0, "major")
    a_minor = [(p, float(i), 1.0) for i, p in enumerate([69, 71, 72, 74, 76, 72, 71, 69, 64, 69])]
    assert estimate_key(a_minor) == (9, "minor")
    mel = extract_melody(Candidate(path="bach/bwv10.7.mxl", number=None, meter="4/4"))
    assert not isinstance(mel, str), mel
    assert mel.beats_per_bar == 4 and len(mel.notes) > 30
    onsets = [o for _, o, _ in mel.notes]
    assert onsets == sorted(onsets) and len(set(onsets)) == len(onsets)  # monophonic
    assert (mel.tonic_pc, mel.mode) == (7, "minor")  # G minor chorale


def test_a_genre_is_one_style_with_its_own_bar_pattern():
    # One registry: a genre's instruments, meter and accompaniment all sit in its Style.
    assert all(s.name == name and s.pattern.__name__ == f"{name}_bar"
               for name, s in STYLES.items())  # fmt: skip
    assert len({s.pattern for s in STYLES.values()}) == len(GENRES)
