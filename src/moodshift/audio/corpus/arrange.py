"""Turn a corpus melody into a labelled arrangement: genre, instruments and mood.

A *group* fixes everything but the mood (melody excerpt, genre, instruments,
soundfont, key); each of its clips re-arranges the same excerpt in one mood,
following what music psychology reports about emotional expression:

* happy: major mode, fast-moderate tempo, high register, detached notes, consonant;
* sad: minor mode, slow, low register, legato, soft, some minor sevenths;
* energetic: fast, loud, accented, dense accompaniment, either mode;
* calm: slow, soft, legato, sparse, consonant added-ninth colours, major or modal.

Every cue is drawn from overlapping ranges and modes flip now and then, so no
single feature gives the mood away. All randomness comes from generators
seeded by (seed, group, mood), so the same seed always yields the same MIDI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moodshift.audio.corpus.melodies import Melody
from moodshift.audio.corpus.patterns import (
    POWER_CHORD_GUITARS,
    SUSTAINED,
    BarContext,
    Chord,
    Event,
)
from moodshift.audio.corpus.styles import (
    GENRES,
    LEAD_RANGE,
    MOODS,
    STYLES,
    family,
    instrument_name,
)
from moodshift.errors import InputError

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
MINORISH = frozenset({"minor", "dorian", "phrygian"})
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Probability of each mode per mood: mostly the textbook mode, sometimes not.
MODE_P: dict[str, dict[str, float]] = {
    "happy": {"major": 0.82, "mixolydian": 0.08, "lydian": 0.05, "minor": 0.05},
    "sad": {"minor": 0.78, "dorian": 0.08, "phrygian": 0.04, "major": 0.10},
    "energetic": {"major": 0.45, "minor": 0.38, "mixolydian": 0.09, "dorian": 0.08},
    "calm": {"major": 0.55, "lydian": 0.10, "mixolydian": 0.10, "dorian": 0.10, "minor": 0.15},
}


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class GroupPlan:
    """Everything shared by the clips of one counterfactual group."""

    index: int
    genre: str
    lead: int
    comp: int
    bass: int
    drums: bool
    soundfont: str
    clip_seconds: float
    tonic_pc: int
    moods: tuple[str, ...]
    seed: int
    variety: str = "classic"

    @property
    def group_id(self) -> str:
        return f"grp_{self.index:05d}"

    @property
    def style(self):
        return STYLES[self.genre]

    @property
    def instruments(self) -> tuple[str, ...]:
        """Every instrument heard, lead first, without repeats."""
        names = [instrument_name(p) for p in (self.lead, self.comp, self.bass)]
        if self.drums:
            names.append(instrument_name(0, is_drum=True))
        return tuple(dict.fromkeys(names))


def _balanced(items: Sequence, count: int, rng: np.random.Generator) -> list:
    """``count`` items cycling through shuffled copies of ``items``, so counts differ by <= 1."""
    out: list = []
    while len(out) < count:
        out.extend(items[i] for i in rng.permutation(len(items)))
    return out[:count]


def plan_groups(
    *,
    n_groups: int,
    seed: int,
    soundfonts: Sequence[str],
    clip_seconds: tuple[float, float] = (10.0, 30.0),
    moods_per_group: int = 4,
    n_clips: int | None = None,
    genres: Sequence[str] | None = None,
    variety: str = "classic",
) -> list[GroupPlan]:
    """Draw genre, instruments, soundfont, clip length, key and moods of each group.

    Genres and soundfonts are balanced (counts differ by at most one), each
    genre cycles through its leads, and moods are assigned so that overall
    counts stay balanced when ``moods_per_group < 4``. ``n_clips`` trims the
    last group's moods. ``genres`` restricts the genres (default all);
    ``variety`` picks how widely each mood is realised (:data:`VARIETIES`).
    """
    if n_groups < 1:
        raise InputError(f"n_groups must be >= 1, got {n_groups}")
    if not 1 <= moods_per_group <= len(MOODS):
        raise InputError(f"moods_per_group must be 1..{len(MOODS)}, got {moods_per_group}")
    if not soundfonts:
        raise InputError("at least one soundfont is needed")
    if variety not in VARIETIES:
        raise InputError(f"unknown variety {variety!r}; expected one of {', '.join(VARIETIES)}")
    pool = tuple(GENRES if genres is None else genres)
    unknown = sorted(set(pool) - set(GENRES))
    if unknown or not pool:
        raise InputError(
            f"unknown genres {unknown or 'none given'}; choose from {', '.join(GENRES)}"
        )
    rng = np.random.default_rng([seed, 11])
    genres = _balanced(pool, n_groups, rng)
    fonts = _balanced(list(soundfonts), n_groups, rng)
    lead_cycle = {g: _balanced(STYLES[g].leads, genres.count(g), rng) for g in GENRES}
    used = dict.fromkeys(GENRES, 0)
    mood_counts = dict.fromkeys(MOODS, 0)
    total = n_clips if n_clips is not None else n_groups * moods_per_group
    plans = []
    for g in range(n_groups):
        grng = np.random.default_rng([seed, 13, g])
        style = STYLES[genres[g]]
        lead = lead_cycle[style.name][used[style.name]]
        used[style.name] += 1
        comp = int(grng.choice(style.comps))
        bass = int(grng.choice(style.basses))
        drums = bool(grng.random() < style.drums_p)
        k = min(moods_per_group, total - g * moods_per_group)
        # Least-used moods first, ties broken at random, so totals stay balanced.
        tie = grng.random(len(MOODS))
        order = sorted(range(len(MOODS)), key=lambda i: (mood_counts[MOODS[i]], tie[i]))
        moods = tuple(MOODS[i] for i in sorted(order[:k]))
        for m in moods:
            mood_counts[m] += 1
        lo, hi = clip_seconds
        plans.append(
            GroupPlan(
                index=g,
                genre=style.name,
                lead=int(lead),
                comp=comp,
                bass=bass,
                drums=drums,
                soundfont=fonts[g],
                clip_seconds=round(float(grng.uniform(lo, hi)), 2),
                tonic_pc=int(grng.integers(12)),
                moods=moods,
                seed=int(grng.integers(2**31)),
                variety=variety,
            )
        )
    return plans


# --------------------------------------------------------------------------- moods


@dataclass(frozen=True)
class MoodParams:
    """Performance and harmony choices for one clip."""

    mood: str
    mode: str
    tempo: float  # quarter-note beats per minute, before genre/melody factors
    register: float  # target median MIDI pitch of the lead
    velocity: float  # mean lead velocity
    accent: float  # extra velocity on strong beats
    articulation: float  # sounding / written duration of lead notes
    acc_articulation: float  # same for the accompaniment
    density: int  # 0 sparse, 1 normal, 2 busy accompaniment
    color: str  # "triad", "sixth", "seventh", "add9"
    color_p: float  # share of chords that get the colour
    thin: bool  # merge short passing notes of the melody into their neighbours
    reverb: int
    chorus: int
    jitter_ms: float
    level_db: float  # mix level (CC7) relative to nominal


# Uniform ranges per mood. Neighbouring moods overlap on every cue. The mix
# level is set as a mastering engineer would: soft performances are partly
# turned up, so loudness overlaps while the timbre of soft or hard playing
# (velocity) remains.
MOOD_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "energetic": dict(
        tempo=(120, 172),
        register=(66, 79),
        velocity=(92, 118),
        accent=(8, 18),
        articulation=(0.55, 0.9),
        acc_articulation=(0.55, 0.85),
        reverb=(15, 60),
        level_db=(-7, 1),
    ),
    "happy": dict(
        tempo=(98, 148),
        register=(70, 82),
        velocity=(74, 102),
        accent=(4, 10),
        articulation=(0.45, 0.8),
        acc_articulation=(0.5, 0.8),
        reverb=(20, 70),
        level_db=(-5, 2),
    ),
    "calm": dict(
        tempo=(60, 102),
        register=(62, 75),
        velocity=(44, 74),
        accent=(0, 4),
        articulation=(0.92, 1.05),
        acc_articulation=(0.95, 1.05),
        reverb=(45, 100),
        level_db=(-2, 6),
    ),
    "sad": dict(
        tempo=(54, 94),
        register=(56, 69),
        velocity=(44, 78),
        accent=(0, 5),
        articulation=(0.95, 1.08),
        acc_articulation=(0.95, 1.05),
        reverb=(40, 95),
        level_db=(-2, 6),
    ),
}
DENSITY_P: dict[str, dict[int, float]] = {
    "energetic": {1: 0.2, 2: 0.8},
    "happy": {0: 0.1, 1: 0.6, 2: 0.3},
    "calm": {0: 0.7, 1: 0.3},
    "sad": {0: 0.6, 1: 0.4},
}
# Harmonic colour: sevenths add tension (energetic) or darkness (sad, minor
# sevenths); added ninths keep calm chords soft; sixths brighten happy ones.
COLOR_P: dict[str, dict[str, float]] = {
    "energetic": {"seventh": 0.5, "triad": 0.5},
    "happy": {"triad": 0.75, "sixth": 0.25},
    "calm": {"add9": 0.55, "triad": 0.45},
    "sad": {"seventh": 0.6, "triad": 0.4},
}


#: How widely each mood is realised: ``classic`` (the built-in corpus) or ``wide``.
VARIETIES: tuple[str, ...] = ("classic", "wide")
# The wide variety: each cue spans more of its scale and overlaps its
# neighbours further (a fast sad song, a soft energetic one, a minor happy
# dance), so a tagger must combine cues instead of reading one of them. The
# centres stay where music psychology puts them.
WIDE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "energetic": dict(
        tempo=(104, 184),
        register=(58, 82),
        velocity=(78, 124),
        accent=(4, 20),
        articulation=(0.4, 1.0),
        acc_articulation=(0.45, 0.95),
        reverb=(5, 80),
        level_db=(-9, 3),
    ),
    "happy": dict(
        tempo=(84, 160),
        register=(62, 86),
        velocity=(60, 110),
        accent=(2, 12),
        articulation=(0.4, 1.0),
        acc_articulation=(0.45, 0.95),
        reverb=(10, 85),
        level_db=(-7, 4),
    ),
    "calm": dict(
        tempo=(52, 112),
        register=(56, 80),
        velocity=(36, 84),
        accent=(0, 7),
        articulation=(0.75, 1.06),
        acc_articulation=(0.7, 1.05),
        reverb=(30, 110),
        level_db=(-5, 7),
    ),
    "sad": dict(
        tempo=(50, 112),
        register=(50, 74),
        velocity=(38, 92),
        accent=(0, 9),
        articulation=(0.7, 1.08),
        acc_articulation=(0.7, 1.05),
        reverb=(25, 110),
        level_db=(-5, 7),
    ),
}
WIDE_MODE_P: dict[str, dict[str, float]] = {
    "happy": {"major": 0.62, "mixolydian": 0.12, "lydian": 0.1, "dorian": 0.06, "minor": 0.1},
    "sad": {"minor": 0.6, "dorian": 0.12, "phrygian": 0.1, "major": 0.14, "mixolydian": 0.04},
    "energetic": {"major": 0.35, "minor": 0.33, "mixolydian": 0.12, "dorian": 0.12,
                  "phrygian": 0.08},
    "calm": {"major": 0.42, "lydian": 0.14, "mixolydian": 0.12, "dorian": 0.14, "minor": 0.18},
}  # fmt: skip
WIDE_DENSITY_P: dict[str, dict[int, float]] = {
    "energetic": {0: 0.05, 1: 0.35, 2: 0.6},
    "happy": {0: 0.25, 1: 0.45, 2: 0.3},
    "calm": {0: 0.55, 1: 0.35, 2: 0.1},
    "sad": {0: 0.45, 1: 0.4, 2: 0.15},
}
WIDE_COLOR_P: dict[str, dict[str, float]] = {
    "energetic": {"seventh": 0.4, "triad": 0.45, "sixth": 0.15},
    "happy": {"triad": 0.55, "sixth": 0.3, "add9": 0.15},
    "calm": {"add9": 0.45, "triad": 0.35, "sixth": 0.1, "seventh": 0.1},
    "sad": {"seventh": 0.5, "triad": 0.4, "add9": 0.1},
}


def _pick(rng: np.random.Generator, probs: dict) -> object:
    keys = list(probs)
    return keys[int(rng.choice(len(keys), p=np.array(list(probs.values())) / sum(probs.values())))]


def draw_mood(mood: str, rng: np.random.Generator, *, variety: str = "classic") -> MoodParams:
    """Draw a mood's parameters from deliberately overlapping ranges.

    ``variety="wide"`` draws from :data:`WIDE_RANGES`, :data:`WIDE_MODE_P`,
    :data:`WIDE_DENSITY_P` and :data:`WIDE_COLOR_P`: wider ranges that overlap
    more between moods, as real music does.
    """
    if mood not in MOOD_RANGES:
        raise InputError(f"unknown mood {mood!r}; expected one of {', '.join(MOODS)}")
    wide = variety == "wide"
    mode = str(_pick(rng, (WIDE_MODE_P if wide else MODE_P)[mood]))
    ranges = (WIDE_RANGES if wide else MOOD_RANGES)[mood]
    v = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ranges.items()}
    return MoodParams(
        mood=mood,
        mode=mode,
        tempo=v["tempo"],
        register=v["register"],
        velocity=v["velocity"],
        accent=v["accent"],
        articulation=v["articulation"],
        acc_articulation=v["acc_articulation"],
        density=int(_pick(rng, (WIDE_DENSITY_P if wide else DENSITY_P)[mood])),
        color=str(_pick(rng, (WIDE_COLOR_P if wide else COLOR_P)[mood])),
        color_p=float(rng.uniform(0.4, 0.9)),
        # (classic draws no number for the other moods: its corpus stays as it was)
        thin=bool(rng.random() < (0.5 if mood in ("calm", "sad") else 0.15))
        if wide or mood in ("calm", "sad")
        else False,
        reverb=int(v["reverb"]),
        chorus=int(rng.uniform(0, 40)),
        jitter_ms=float(rng.uniform(2, 9)),
        level_db=v["level_db"],
    )


# --------------------------------------------------------------------------- harmony


def map_pitch_class(pc: int, source: Sequence[int], target: Sequence[int]) -> int:
    """Map a pitch class (relative to the tonic) from one mode to another by scale degree.

    Diatonic notes keep their degree. A chromatic note that the target mode now
    holds natively (a raised 7th going to major, a flat 3rd going to minor)
    becomes that degree; other alterations are kept. The result may be 12.
    """
    s, t = [*source, 12], [*target, 12]
    if pc in s[:7]:
        return t[s.index(pc)]
    d = max(i for i in range(7) if s[i] < pc)
    if t[d + 1] < s[d + 1]:
        return t[d + 1]
    if t[d] > s[d]:
        return t[d]
    return t[d] + 1 if t[d] + 1 < t[d + 1] else t[d]


def _candidates(mode: str) -> list[tuple[int, tuple[int, ...], float, int]]:
    """(root rel. tonic, tones, prior, scale degree) of usable chords of a mode.

    Degree -1 is the harmonic-minor dominant triad, -2 the dominant seventh.
    """
    scale = SCALES[mode]
    prior = {0: 0.25, 3: 0.2, 4: 0.22, 5: 0.12, 1: 0.1, 2: 0.05, 6: 0.08}
    out = []
    for d in range(7):
        root = scale[d]
        third = (scale[(d + 2) % 7] - root) % 12
        fifth = (scale[(d + 4) % 7] - root) % 12
        if fifth != 7:  # skip diminished/augmented triads
            continue
        out.append((root, (0, third, 7), prior[d], d))
    if mode == "minor":  # harmonic-minor dominant
        out.append((7, (0, 4, 7), 0.22, -1))
    if mode in ("major", "minor"):  # dominant seventh (V7), scored with its seventh
        out.append((7, (0, 4, 7, 10), 0.2, -2))
    return out


def harmonise(
    notes: Sequence[tuple[float, float, int]],
    *,
    tonic: int,
    mode: str,
    bar_beats: int,
    n_bars: int,
    params: MoodParams,
    rng: np.random.Generator,
    jazz: bool = False,
) -> list[list[tuple[float, float, Chord]]]:
    """Choose diatonic chords that fit the melody, one per bar or half bar.

    Returns, for each bar, (start offset, end offset, chord) spans. Chord tones
    under long and on-beat notes score; notes a semitone from a chord tone are
    penalised hardest, so the harmony rarely clashes unless a colour adds it.
    """
    cands = _candidates(mode)
    scale = SCALES[mode]
    # Per candidate, what a melody pitch class is worth: chord tone +1, a
    # semitone from a chord tone -1, any other non-chord tone -0.5.
    coefs = np.full((len(cands), 12), -0.5)
    for k, (root, tones, _, _) in enumerate(cands):
        pcs = {(tonic + root + t) % 12 for t in tones}
        for pc in range(12):
            if pc in pcs:
                coefs[k, pc] = 1.0
            elif any((pc - c) % 12 in (1, 11) for c in pcs):
                coefs[k, pc] = -1.0
    priors = np.array([c[2] for c in cands])
    tonic_bonus = np.array([0.3 if c[3] == 0 else 0.0 for c in cands])
    # Notes overlapping each bar, so a window scans only its own bar's notes.
    by_bar: list[list[tuple[float, float, int]]] = [[] for _ in range(n_bars)]
    for note in notes:
        pos, dur, _ = note
        first = max(0, int(pos // bar_beats))
        last = min(n_bars - 1, int((pos + dur - 1e-9) // bar_beats))
        for b in range(first, last + 1):
            by_bar[b].append(note)

    def best(b: int, lo: float, hi: float, prev: int | None, first: bool) -> tuple[int, float]:
        w = np.zeros(12)
        for pos, dur, pitch in by_bar[b]:
            ov = min(pos + dur, hi) - max(pos, lo)
            if ov > 0:  # on-beat notes weigh more: they define the harmony
                w[pitch % 12] += ov * (1.5 if abs(pos - round(pos)) < 1e-6 and pos >= lo else 1.0)
        score = coefs @ w / (w.sum() + 1e-9) + priors
        if prev is not None:
            score[prev] += 0.1  # favour keeping the chord: fewer, steadier changes
        if first:
            score += tonic_bonus
        i = int(np.argmax(score))
        return i, float(score[i])

    bars: list[list[tuple[float, float, int]]] = []
    prev = None
    for b in range(n_bars):
        lo, hi = b * bar_beats, (b + 1) * bar_beats
        whole, s_whole = best(b, lo, hi, prev, b == 0)
        spans = [(0.0, float(bar_beats), whole)]
        if bar_beats == 4 and b > 0:
            h1, s1 = best(b, lo, lo + 2, prev, False)
            h2, s2 = best(b, lo + 2, hi, h1, False)
            if (s1 + s2) / 2 > s_whole + 0.1 and h1 != h2:
                spans = [(0.0, 2.0, h1), (2.0, 4.0, h2)]
        prev = spans[-1][2]
        bars.append(spans)

    out: list[list[tuple[float, float, Chord]]] = []
    for spans in bars:
        row = []
        for lo, hi, idx in spans:
            root, tones, _, deg = cands[idx]
            tones = list(tones)
            if len(tones) == 4:  # V7 already carries its seventh
                pass
            elif jazz or (params.color == "seventh" and rng.random() < params.color_p):
                # The harmonic-minor dominant takes a dominant (minor) seventh.
                seventh = 10 if deg < 0 else (scale[(deg + 6) % 7] - root) % 12
                if not (params.mood == "sad" and tones[1] == 4 and seventh == 11 and not jazz):
                    tones.append(seventh)
            elif params.color == "add9" and rng.random() < params.color_p:
                tones.append(14 if deg < 0 else (scale[(deg + 1) % 7] - root) % 12 + 12)
            elif params.color == "sixth" and tones[1] == 4 and rng.random() < params.color_p:
                tones.append(9)
            row.append((lo, hi, Chord(root=(tonic + root) % 12, tones=tuple(tones))))
        out.append(row)
    return out


# --------------------------------------------------------------------------- patterns


# Where the comping voicing and the bass line sit (lowest note of the window).
COMP_LOW = {"power": 52, "sustained": 55, "default": 53}
BASS_LOW = {58: 34, 42: 36, 38: 33, 39: 33}


# --------------------------------------------------------------------------- melody


def melody_timeline(
    melody: Melody, *, start_bar: int, bar_beats: int, total_beats: float
) -> list[tuple[float, float, int]]:
    """The excerpt laid out after a one-bar intro and looped to fill ``total_beats``.

    Returns (onset, duration, pitch) in beats of the arrangement. The pickup
    before the excerpt (or the last beat before it) plays at the end of the
    intro bar.
    """
    s0 = start_bar * melody.beats_per_bar
    end = math.ceil(melody.length_beats / bar_beats - 1e-6) * bar_beats
    loop = max(bar_beats, end - s0)
    # A clip too short for an intro bar (a few seconds at a slow tempo) starts on the tune.
    intro = float(bar_beats) if total_beats >= 3 * bar_beats else 0.0
    lead_in = min(intro, bar_beats if s0 == 0 else 1.0)
    out = []
    for pitch, pos, dur in melody.notes:
        if s0 - lead_in <= pos < s0:
            out.append((intro + pos - s0, dur, pitch))
    k = 0
    while intro + k * loop < total_beats:
        for pitch, pos, dur in melody.notes:
            if s0 <= pos < s0 + loop:
                t = intro + pos - s0 + k * loop
                if t < total_beats:
                    out.append((t, min(dur, s0 + loop - pos), pitch))
        k += 1
    out.sort()
    return out


# --------------------------------------------------------------------------- arrange


@dataclass
class Arrangement:
    """A clip's MIDI and the metadata that describes it."""

    midi: object  # pretty_midi.PrettyMIDI
    meta: dict[str, object]


def _swing_map(pos: float, amount: float) -> float:
    """Delay off-beat eighths: 0.5 -> ``amount`` (about 2/3 for a triplet swing)."""
    base = math.floor(pos)
    frac = pos - base
    if frac <= 0.5:
        return base + frac * 2 * amount
    return base + amount + (frac - 0.5) * 2 * (1 - amount)


def arrange(
    *,
    group: GroupPlan,
    mood: str,
    melody: Melody,
    start_bar: int = 0,
) -> Arrangement:
    """Arrange ``melody`` in ``group``'s genre and instruments, performed in ``mood``."""
    import pretty_midi  # pretty_midi is heavy: load on use

    if mood not in MOODS:
        raise InputError(f"unknown mood {mood!r}; expected one of {', '.join(MOODS)}")
    style = group.style
    if melody.meter_class != style.meter_class:
        raise InputError(
            f"a {melody.meter} melody cannot be a {style.name} ({style.bar_beats} beats a bar)"
        )
    rng = np.random.default_rng([group.seed, MOODS.index(mood)])
    params = draw_mood(mood, rng, variety=group.variety)
    B = style.bar_beats

    # Tempo: the mood's draw, the genre's tendency and the tune's note density
    # (running sixteenths get slowed, hymn-like quarter notes get pushed).
    per_beat = len(melody.notes) / max(melody.length_beats, 1.0)
    density_factor = 0.85 if per_beat > 2.2 else (1.12 if per_beat < 1.1 else 1.0)
    tempo = float(np.clip(params.tempo * style.tempo_factor * density_factor, 50, 200))
    spb = 60.0 / tempo
    total_beats = group.clip_seconds / spb
    n_bars = math.ceil(total_beats / B) + 1

    # Melody: mode change by scale degree, then octave placement for the register.
    src = SCALES[melody.mode if melody.mode in SCALES else "major"]
    tgt = SCALES[params.mode]
    raw = melody_timeline(melody, start_bar=start_bar, bar_beats=B, total_beats=total_beats)
    if not raw:
        raise InputError(f"melody {melody.source} has no notes from bar {start_bar}")
    notes: list[tuple[float, float, int]] = []
    for k, (pos, dur, pitch) in enumerate(raw):
        rel = pitch - melody.tonic_pc
        octave, pc = divmod(rel, 12)
        new_pc = map_pitch_class(pc, src, tgt)
        nxt = raw[k + 1][2] - melody.tonic_pc if k + 1 < len(raw) else None
        if params.mode == "minor" and pc == 11 and nxt is not None and nxt % 12 == 0:
            new_pc = 11  # keep the leading tone that resolves to the tonic
        notes.append((pos, dur, group.tonic_pc + 12 * octave + new_pc))
    lo, hi = LEAD_RANGE.get(group.lead, (48, 90))
    target = float(np.clip(params.register, lo + 7, hi - 7))
    median = float(np.median([p for _, _, p in notes]))
    shift = 12 * round((target - median) / 12)
    notes = [(pos, dur, p + shift) for pos, dur, p in notes]

    if params.thin:  # sparser line: fold short off-beat notes into the previous one
        thinned: list[tuple[float, float, int]] = []
        for pos, dur, p in notes:
            prev = thinned[-1] if thinned else None
            if prev and dur < 0.5 and pos % 1 > 1e-6 and abs(prev[0] + prev[1] - pos) < 1e-6:
                thinned[-1] = (prev[0], prev[1] + dur, prev[2])
            else:
                thinned.append((pos, dur, p))
        notes = thinned

    chords = harmonise(
        notes,
        tonic=group.tonic_pc,
        mode=params.mode,
        bar_beats=B,
        n_bars=n_bars,
        params=params,
        rng=rng,
        jazz=style.swing,
    )

    # Accompaniment, bar by bar.
    vel = params.velocity
    lead_median = float(np.median([p for _, _, p in notes]))
    comp_kind = (
        "power"
        if group.comp in POWER_CHORD_GUITARS
        else "sustained"
        if group.comp in SUSTAINED
        else "default"
    )
    ctx_common = dict(
        density=params.density,
        rng=rng,
        comp_program=group.comp,
        # Keep the chords below a low (sad) lead so the tune stays audible.
        comp_low=int(min(COMP_LOW[comp_kind], max(43, lead_median - 15))),
        bass_low=BASS_LOW.get(group.bass, 31),
        vel_comp=vel - rng.uniform(10, 22),
        vel_bass=vel - rng.uniform(0, 12),
        vel_drums=vel - rng.uniform(-4, 12),
        accent=params.accent,
        art=params.acc_articulation,
    )
    bass: list[Event] = []
    comp: list[Event] = []
    drums: list[Event] = []
    pattern = style.pattern
    for b in range(n_bars):
        nxt = chords[b + 1][0][2].root if b + 1 < n_bars else chords[0][0][2].root
        ctx = BarContext(bar=b, start=b * B, beats=B, chords=chords[b], next_root=nxt, **ctx_common)
        pattern(ctx)
        bass += ctx.bass
        comp += ctx.comp
        drums += ctx.drums

    # Lead performance: articulation, accents, a phrase-long swell.
    lead: list[Event] = []
    for k, (pos, dur, p) in enumerate(notes):
        nxt_pos = notes[k + 1][0] if k + 1 < len(notes) else pos + dur
        sound = dur * params.articulation
        if params.articulation >= 1.0:  # legato: tie into the next note, barely overlapping
            gap = nxt_pos - pos
            sound = min(sound, gap + 0.04) if gap >= dur - 1e-6 else sound
            if k + 1 < len(notes) and notes[k + 1][2] == p:
                sound = min(sound, gap - 0.03)
        beat_in_bar = pos % B
        accent = (
            params.accent
            if beat_in_bar < 1e-6
            else (params.accent / 2 if abs(beat_in_bar - round(beat_in_bar)) < 1e-6 else 0.0)
        )
        swell = 5.0 * math.sin(math.pi * ((pos / B) % 4) / 4)
        lead.append((pos, max(sound, 0.1), p, vel + accent + swell))

    swing = float(rng.uniform(0.6, 0.68)) if style.swing else 0.5
    jitter_s = params.jitter_ms / 1000.0
    # A MIDI tempo equal to the performance tempo keeps the file readable in a DAW.
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=tempo)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(B, 4, 0.0))
    key_number = group.tonic_pc if params.mode not in MINORISH else 12 + group.tonic_pc
    pm.key_signature_changes.append(pretty_midi.KeySignature(key_number, 0.0))
    end_s = group.clip_seconds

    def to_instrument(
        events: list[Event], program: int, name: str, *, is_drum: bool, volume: int, sd: float
    ) -> pretty_midi.Instrument:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
        # CC7 attenuates by 40*log10(value/127) dB in FluidSynth's default modulators.
        volume = min(127, round(volume * 10 ** (params.level_db / 40)))
        for cc, value in ((7, volume), (91, params.reverb), (93, 0 if is_drum else params.chorus)):
            inst.control_changes.append(pretty_midi.ControlChange(cc, int(value), 0.0))
        events = sorted(events)
        # Humanise: a few ms of timing jitter and a little velocity spread.
        jitter = rng.normal(0, sd, size=(len(events), 2)).tolist()
        spread = rng.normal(0, 4, size=len(events)).tolist()
        for (pos, dur, pitch, v), (j0, j1), dv in zip(events, jitter, spread, strict=True):
            start = max(0.0, _swing_map(pos, swing) * spb + j0)
            if start >= end_s:
                continue
            end = max(_swing_map(pos + dur, swing) * spb + j1, start + 0.05)
            velocity = min(127, max(1, round(v + dv)))
            pitch = min(127, max(0, int(pitch)))
            inst.notes.append(
                pretty_midi.Note(
                    velocity=velocity, pitch=pitch, start=round(start, 4), end=round(end, 4)
                )
            )
        return inst

    comp_volume = 56 if group.comp in SUSTAINED or group.comp in POWER_CHORD_GUITARS else 72
    if group.comp == 89:  # the warm pad is ~8 dB quieter than other comping sounds
        comp_volume = 90
    pm.instruments.append(
        to_instrument(lead, group.lead, "lead", is_drum=False, volume=100, sd=jitter_s)
    )
    pm.instruments.append(
        to_instrument(comp, group.comp, "comp", is_drum=False, volume=comp_volume, sd=jitter_s)
    )
    pm.instruments.append(
        to_instrument(bass, group.bass, "bass", is_drum=False, volume=90, sd=jitter_s)
    )
    if group.drums:
        pm.instruments.append(
            to_instrument(drums, 0, "drums", is_drum=True, volume=86, sd=jitter_s / 2)
        )

    lead_notes = pm.instruments[0].notes
    meta = {
        "meta_key": PITCH_NAMES[group.tonic_pc],
        "meta_mode": params.mode,
        "meta_tempo": round(tempo, 1),
        "meta_meter": f"{B}/4",
        "meta_velocity": round(float(np.mean([n.velocity for n in lead_notes])), 1),
        "meta_register": round(float(np.median([n.pitch for n in lead_notes])), 1),
        "meta_articulation": round(params.articulation, 3),
        "meta_density": params.density,
        "meta_reverb": params.reverb,
        "meta_level_db": round(params.level_db, 1),
        "meta_lead": instrument_name(group.lead),
        "meta_lead_family": family(group.lead),
        "meta_duration": group.clip_seconds,
        "meta_soundfont": group.soundfont,
        "meta_source": melody.source,
        "meta_source_meter": melody.meter,
        "meta_source_key": f"{PITCH_NAMES[melody.tonic_pc]} {melody.mode}",
        "meta_start_bar": start_bar,
    }
    return Arrangement(midi=pm, meta=meta)
