"""The bar patterns of the built-in corpus's genres: how each accompanies one bar.

Each genre of :data:`moodshift.audio.corpus.styles.STYLES` names its pattern; a
pattern writes the bass, comping and drum events of one bar into a :class:`BarContext`
(:func:`moodshift.audio.corpus.arrange.arrange` calls it bar by bar).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Sustained comping instruments play held chords rather than strummed hits.
SUSTAINED = frozenset({48, 49, 50, 88, 89, 90, 91, 92, 94, 95, 52, 61, 60, 57, 21})
POWER_CHORD_GUITARS = frozenset({29, 30})

# General MIDI percussion keys.
KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
LOW_TOM, CRASH, RIDE, TAMBOURINE, SHAKER = 45, 49, 51, 54, 70


@dataclass(frozen=True)
class Chord:
    root: int  # absolute pitch class
    tones: tuple[int, ...]  # semitones above the root, root (0) first

    def pcs(self) -> set[int]:
        return {(self.root + t) % 12 for t in self.tones}


Event = tuple[float, float, int, float]  # (onset beats, duration beats, pitch, velocity)


@dataclass
class BarContext:
    """What an accompaniment pattern needs to write one bar."""

    bar: int
    start: float
    beats: int
    chords: list[tuple[float, float, Chord]]
    next_root: int
    density: int
    rng: np.random.Generator
    comp_program: int
    comp_low: int
    bass_low: int
    vel_comp: float
    vel_bass: float
    vel_drums: float
    accent: float
    art: float
    bass: list[Event] = field(default_factory=list)
    comp: list[Event] = field(default_factory=list)
    drums: list[Event] = field(default_factory=list)

    def chord_at(self, off: float) -> Chord:
        for lo, hi, ch in self.chords:
            if lo <= off < hi:
                return ch
        return self.chords[-1][2]

    def span_end(self, off: float) -> float:
        for lo, hi, _ in self.chords:
            if lo <= off < hi:
                return hi
        return float(self.beats)

    def bass_note(self, off: float, dur: float, which: int = 0, vel: float = 0.0) -> None:
        ch = self.chord_at(off)
        pc = (ch.root + (ch.tones[which] if which < len(ch.tones) else 7)) % 12
        pitch = self.bass_low + (pc - self.bass_low) % 12
        self.bass.append((self.start + off, dur * self.art, pitch, self.vel_bass + vel))

    def voicing(self, ch: Chord, *, power: bool = False) -> list[int]:
        if power:
            root = self.comp_low - 12 + (ch.root - self.comp_low) % 12
            return [root, root + 7, root + 12]
        return sorted(self.comp_low + (ch.root + t - self.comp_low) % 12 for t in ch.tones)

    def hit(
        self,
        off: float,
        dur: float,
        vel: float = 0.0,
        *,
        power: bool = False,
        roll: float = 0.0,
        full: bool = False,
    ) -> None:
        """A chord at ``off``; ``full`` lets it ring to the end of its chord span."""
        ch = self.chord_at(off)
        if full:
            dur = self.span_end(off) - off
        for k, p in enumerate(self.voicing(ch, power=power)):
            self.comp.append((self.start + off + k * roll, dur * self.art, p, self.vel_comp + vel))

    def drum(self, off: float, key: int, vel: float = 0.0) -> None:
        self.drums.append((self.start + off, 0.2, key, self.vel_drums + vel))

    def downbeat_accent(self, off: float) -> float:
        return self.accent if off == 0 else 0.0


def rock_bar(c: BarContext) -> None:
    d, B = c.density, c.beats
    steps = {0: [0, 2], 1: [0, 1, 2, 3], 2: [x / 2 for x in range(8)]}[d]
    for off in steps:
        c.bass_note(
            off,
            {0: 2.0, 1: 1.0, 2: 0.5}[d] * 0.95,
            2 if d == 2 and off == 3.5 else 0,
            c.downbeat_accent(off),
        )
    power = c.comp_program in POWER_CHORD_GUITARS
    if d == 0:
        c.hit(0, B, full=True, power=power)
    elif d == 1:
        for off in (0, 1.5, 2, 3.5) if power else (0, 1, 2, 3):
            c.hit(off, 0.9 if off % 1 == 0 else 0.45, c.downbeat_accent(off), power=power)
    else:
        for off in [x / 2 for x in range(8)]:
            c.hit(off, 0.45, c.accent if off % 1 == 0 else -6, power=power)
    kicks = {0: [0, 2], 1: [0, 2, 2.5], 2: [0, 0.75, 2, 2.5]}[d]
    for off in kicks:
        c.drum(off, KICK, c.downbeat_accent(off))
    for off in (1, 3):
        c.drum(off, SNARE if d else SIDE_STICK, 4 if d == 2 else 0)
    hats = {0: [0, 1, 2, 3], 1: [x / 2 for x in range(8)], 2: [x / 2 for x in range(8)]}[d]
    for off in hats:
        c.drum(off, OPEN_HAT if d == 2 and off == 3.5 else CLOSED_HAT, -14 if off % 1 else -8)
    if d == 2 and c.bar % 4 == 0:
        c.drum(0, CRASH)
    if d == 2 and c.bar % 4 == 3:
        for k in range(4):
            c.drum(3 + k / 4, SNARE, -10 + 3 * k)


def waltz_bar(c: BarContext) -> None:
    d = c.density
    c.bass_note(0, 2.7 if d == 0 else 0.95, 2 if c.bar % 2 else 0, c.downbeat_accent(0))
    if d == 0:
        c.hit(0, 3, -6, full=True)
    else:
        for off in (1, 2) if d == 1 else (1, 2, 2.5):
            c.hit(off, 0.8 if off % 1 == 0 else 0.4, -4)


def swing_bar(c: BarContext) -> None:
    d, rng = c.density, c.rng
    if d == 0:
        c.bass_note(0, 1.9, 0, c.downbeat_accent(0))
        c.bass_note(2, 1.9, 2)
    else:
        # Walking bass: root, chord tones, then a chromatic approach to the next root.
        c.bass_note(0, 0.95, 0, c.downbeat_accent(0))
        c.bass_note(1, 0.95, int(rng.choice([1, 2])))
        c.bass_note(2, 0.95, 2 if c.chord_at(2) == c.chord_at(0) else 0)
        target = c.bass_low + (c.next_root - c.bass_low) % 12
        step = int(rng.choice([-1, 1]))
        c.bass.append((c.start + 3, 0.95 * c.art, target + step, c.vel_bass - 4))
    if c.comp_program == 26:  # Freddie Green style guitar on every beat
        for off in (0, 1, 2, 3) if d else (0, 2):
            c.hit(off, 0.5 if d else 1.8, -4 if off % 2 else 0)
    elif d == 0:
        c.hit(0, 4, -6, full=True)
    else:
        c.hit(0, 1.0, c.downbeat_accent(0))
        c.hit(1.5, 0.4, -4)
        if d == 2 and rng.random() < 0.5:
            c.hit(3.5, 0.4, -6)
    for off in (0, 1, 2, 3) if d == 0 else (0, 1, 1.5, 2, 3, 3.5):
        c.drum(off, RIDE, -8 if off % 1 else 0)
    for off in (1, 3):
        c.drum(off, PEDAL_HAT, -10)
    if d == 2:
        for off in (0, 1, 2, 3):
            c.drum(off, KICK, -22)
        for off in (0.5, 1.5, 2.5, 3.5):
            if rng.random() < 0.2:
                c.drum(off, SNARE, -16)


def bossa_bar(c: BarContext) -> None:
    d = c.density
    if d == 0:
        c.bass_note(0, 1.9, 0)
        c.bass_note(2, 1.9, 2)
    else:
        for off, dur, which in ((0, 1.5, 0), (1.5, 0.5, 2), (2, 1.5, 2), (3.5, 0.5, 0)):
            c.bass_note(off, dur * 0.95, which, c.downbeat_accent(off))
    if d == 0:
        c.hit(0, 4, -6, full=True, roll=0.03)
    else:
        # Two-bar, clave-like guitar comping.
        hits = (0, 1.5, 3) if c.bar % 2 == 0 else (1, 2.5)
        if d == 2:
            hits = (0, 1.5, 2.5, 3) if c.bar % 2 == 0 else (0.5, 1, 2.5, 3.5)
        for off in hits:
            c.hit(off, 0.45, -2, roll=0.02)
    clave = (0, 1.5, 3) if c.bar % 2 == 0 else (1, 2.5)
    for off in clave:
        c.drum(off, SIDE_STICK, -6)
    for off in (0, 1.5, 2, 3.5) if d else (0, 2):
        c.drum(off, KICK, -12)
    if d:
        for k in range(8 if d == 1 else 16):
            off = k * (0.5 if d == 1 else 0.25)
            c.drum(off, SHAKER if d == 2 else CLOSED_HAT, -18 if off % 1 else -10)


def march_bar(c: BarContext) -> None:
    d = c.density
    c.bass_note(0, 0.9, 0, c.downbeat_accent(0))
    if d:
        c.bass_note(1, 0.9, 2)
        for off in (0.5, 1.5):
            c.hit(off, 0.35, -4)
    else:
        c.hit(1, 0.9, -6)
    c.drum(0, KICK, c.downbeat_accent(0))
    if d:
        c.drum(1, KICK, -6)
        for off in (0, 0.5, 0.75, 1, 1.5):
            c.drum(off, SNARE, 0 if off in (0, 1) else -10)
    else:
        c.drum(1, SNARE, -10)
    if d == 2 and c.bar % 4 == 3:
        for k in range(8):  # closing snare roll
            c.drum(1 + k / 8, SNARE, -14 + 2 * k)
    if d == 2 and c.bar % 4 == 0:
        c.drum(0, CRASH, -4)


def electronic_bar(c: BarContext) -> None:
    d = c.density
    if d == 0:
        c.bass_note(0, 1.9, 0)
        c.bass_note(2, 1.9, 0)
    elif d == 1:
        for off in (0.5, 1.5, 2.5, 3.5):
            c.bass_note(off, 0.45, 0)
    else:
        for k in range(8):
            off = k / 2
            c.bass.append(
                (
                    c.start + off,
                    0.4 * c.art,
                    c.bass_low + (c.chord_at(off).root - c.bass_low) % 12 + 12 * (k % 2),
                    c.vel_bass + (c.accent if k == 0 else -4),
                )
            )
    if d < 2:
        c.hit(0, 4, -8, full=True)
    else:
        for off in (0, 0.75, 1.5, 2.5, 3.25):
            c.hit(off, 0.5, -6)
    for off in (0, 2) if d == 0 else (0, 1, 2, 3):
        c.drum(off, KICK, c.downbeat_accent(off) - (10 if d == 0 else 0))
    if d:
        for off in (1, 3):
            c.drum(off, CLAP, -4)
        for off in (0.5, 1.5, 2.5, 3.5):
            c.drum(off, OPEN_HAT, -14)
    else:
        for off in (1, 3):
            c.drum(off, CLOSED_HAT, -18)
    if d == 2:
        for k in range(16):
            c.drum(k / 4, CLOSED_HAT, -20 if k % 2 else -14)
        if c.bar % 4 == 0:
            c.drum(0, CRASH, -6)


def folk_bar(c: BarContext) -> None:
    d = c.density
    if d == 0:  # drone: root and fifth held all bar
        c.bass_note(0, 4, 0)
        c.bass_note(0, 4, 2, -8)
    elif d == 1:
        c.bass_note(0, 1.9, 0, c.downbeat_accent(0))
        c.bass_note(2, 1.9, 2)
    else:
        for off in (0, 1, 2, 3):
            c.bass_note(off, 0.9, 0 if off % 2 == 0 else 2, c.downbeat_accent(off))
    if c.comp_program in SUSTAINED:  # accordion: off-beat chords
        if d == 0:
            c.hit(0, 4, -6, full=True)
        else:
            for off in (0.5, 1.5, 2.5, 3.5):
                c.hit(off, 0.4, -4)
    elif c.comp_program == 46:  # harp: rolled arpeggio
        c.hit(0, 4, -4, roll=0.25 if d else 0.5, full=True)
    else:  # guitar strums
        strums = {0: (0, 2), 1: (0, 1, 1.5, 2, 3, 3.5), 2: (0, 1, 1.5, 2.5, 3, 3.5)}[d]
        for off in strums:
            c.hit(
                off, 0.45 if off % 1 else 0.9, -8 if off % 1 else c.downbeat_accent(off), roll=0.03
            )
    if d == 0:
        for off in (0, 2):
            c.drum(off, LOW_TOM, -12)
    else:
        for off in (x / 2 for x in range(8)) if d == 2 else (0, 1, 2, 3):
            c.drum(off, LOW_TOM, -4 if off % 1 == 0 else -14)
        for off in (1, 3):
            c.drum(off, TAMBOURINE, -8)


def ballad_bar(c: BarContext) -> None:
    d = c.density
    if d == 0:
        c.bass_note(0, 3.9, 0)
    elif d == 1:
        c.bass_note(0, 1.9, 0)
        c.bass_note(2, 1.9, 2)
    else:
        for off, which in ((0, 0), (1.5, 2), (2, 0), (3, 2)):
            c.bass_note(off, 0.95, which)
    if c.comp_program in SUSTAINED:
        if d == 2:
            c.hit(0, 2, -6)
            c.hit(2, 2, -8)
        else:
            c.hit(0, 4, -6, full=True)
    else:  # broken-chord arpeggio
        step = {0: 1.0, 1: 0.5, 2: 0.5}[d]
        for k in range(int(4 / step)):
            off = k * step
            voic = c.voicing(c.chord_at(off))
            seq = [voic[0], voic[-1], voic[1 % len(voic)], voic[-1] + 12 - 12 * (d == 0)]
            pitch = seq[k % len(seq)]
            c.comp.append(
                (c.start + off, step * 1.8 * c.art, pitch, c.vel_comp + (4 if off == 0 else -4))
            )
    for off in (0,) if d == 0 else (0, 2.5):
        c.drum(off, KICK, -6)
    for off in (1, 3) if d else (2,):
        c.drum(off, SNARE if d == 2 else SIDE_STICK, -8)
    for off in (0, 1, 2, 3) if d < 2 else [x / 2 for x in range(8)]:
        c.drum(off, CLOSED_HAT, -18)
    if d == 2 and c.bar % 4 == 0:
        c.drum(0, CRASH, -10)
