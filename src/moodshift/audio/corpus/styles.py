"""Instruments, genres and moods of the built-in corpus: one :class:`Style` per genre.

Programs are General MIDI numbers (0-based). Each genre lists leads that
suit it; across genres the leads span eleven GM families so that instrument
identity varies independently of mood.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from moodshift.audio.corpus import patterns
from moodshift.audio.corpus.patterns import BarContext

MOODS: tuple[str, ...] = ("energetic", "calm", "happy", "sad")

# GM families, one per block of eight programs.
FAMILIES: tuple[str, ...] = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
)

DRUMS = "drums"

# Comfortable sounding range (MIDI pitch) of each lead, so that a mood's
# register shift never pushes a tuba-low or piccolo-high line into mud or squeak.
LEAD_RANGE: dict[int, tuple[int, int]] = {
    0: (48, 96),
    1: (48, 96),
    4: (48, 88),
    8: (60, 96),
    9: (72, 100),
    11: (53, 89),
    12: (48, 91),
    18: (48, 91),
    21: (53, 89),
    22: (60, 86),
    24: (48, 84),
    26: (48, 84),
    27: (48, 86),
    29: (48, 86),
    30: (48, 86),
    40: (57, 96),
    42: (40, 74),
    48: (48, 88),
    52: (52, 79),
    56: (55, 84),
    57: (43, 72),
    59: (55, 84),
    60: (45, 77),
    61: (50, 82),
    62: (48, 88),
    64: (58, 88),
    65: (50, 81),
    66: (45, 76),
    68: (58, 89),
    71: (52, 89),
    72: (74, 100),
    73: (60, 96),
    74: (60, 93),
    75: (60, 93),
    78: (64, 96),
    80: (48, 91),
    81: (48, 91),
    82: (55, 91),
    85: (52, 86),
    105: (50, 84),
    107: (55, 91),
    108: (60, 91),
    109: (60, 84),
    110: (55, 93),
}


@dataclass(frozen=True)
class Style:
    """A genre: meter, tempo tendency, the instruments that may play it, its bar pattern."""

    name: str
    bar_beats: int  # quarter-note beats per bar
    leads: tuple[int, ...]
    comps: tuple[int, ...]
    basses: tuple[int, ...]
    drums_p: float  # share of this genre's groups that have a drum kit
    tempo_factor: float  # genre tempo tendency, multiplies the mood's tempo
    pattern: Callable[[BarContext], None]  # writes one bar's bass, comping and drums
    swing: bool = False

    @property
    def meter_class(self) -> str:
        return "triple" if self.bar_beats == 3 else "duple"


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            "rock",
            4,
            leads=(29, 30, 27, 81, 18, 1, 65, 22),
            comps=(30, 29, 27, 18, 1),
            basses=(34, 33),
            drums_p=1.0,
            tempo_factor=1.0,
            pattern=patterns.rock_bar,
        ),
        Style(
            "waltz",
            3,
            leads=(40, 21, 73, 0, 71, 11, 8, 60, 48, 68),
            comps=(0, 21, 48, 24, 46),
            basses=(32, 58),
            drums_p=0.0,
            tempo_factor=1.15,
            pattern=patterns.waltz_bar,
        ),
        Style(
            "swing",
            4,
            leads=(66, 65, 56, 57, 71, 11, 26, 0, 59),
            comps=(0, 26, 4),
            basses=(32,),
            drums_p=1.0,
            tempo_factor=1.1,
            pattern=patterns.swing_bar,
            swing=True,
        ),
        Style(
            "bossa",
            4,
            leads=(73, 24, 65, 66, 11, 4, 75, 12),
            comps=(24, 4, 0),
            basses=(32, 35),
            drums_p=0.85,
            tempo_factor=0.9,
            pattern=patterns.bossa_bar,
        ),
        Style(
            "march",
            2,
            leads=(56, 72, 73, 61, 71, 57, 9, 60),
            comps=(61, 60, 57),
            basses=(58,),
            drums_p=1.0,
            tempo_factor=0.95,
            pattern=patterns.march_bar,
        ),
        Style(
            "electronic",
            4,
            leads=(80, 81, 82, 85, 4, 108, 62, 12),
            comps=(89, 88, 90, 50),
            basses=(38, 39),
            drums_p=1.0,
            tempo_factor=1.0,
            pattern=patterns.electronic_bar,
        ),
        Style(
            "folk",
            4,
            leads=(110, 40, 78, 73, 21, 105, 109, 22, 74),
            comps=(25, 24, 21, 46),
            basses=(32, 42),
            drums_p=0.6,
            tempo_factor=1.05,
            pattern=patterns.folk_bar,
        ),
        Style(
            "ballad",
            4,
            leads=(0, 42, 40, 73, 60, 68, 48, 52, 4, 64, 107),
            comps=(0, 24, 25, 46, 48, 49),
            basses=(32, 35, 42),
            drums_p=0.5,
            tempo_factor=0.85,
            pattern=patterns.ballad_bar,
        ),
    )
}

GENRES: tuple[str, ...] = tuple(STYLES)


def instrument_name(program: int, *, is_drum: bool = False) -> str:
    """Readable snake_case GM name, e.g. 0 -> ``acoustic_grand_piano``."""
    if is_drum:
        return DRUMS
    import pretty_midi  # pretty_midi is heavy: load on use

    name = pretty_midi.program_to_instrument_name(program).lower()
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def family(program: int) -> str:
    """GM family of a program, e.g. 73 (flute) -> ``pipe``."""
    return FAMILIES[program // 8]
