"""Human-composed melodies from music21's bundled corpus, extracted once and cached.

music21 ships thousands of public-domain tunes (Essen folk songs, O'Neill's 1850
Irish collection, Ryan's Mammoth Collection, Aird's Airs, American fife tunes and
the Bach chorales). We take the top monophonic line of each, normalise its
rhythm to *beats* (so a 6/8 jig becomes two beats of triplet eighths) and keep
only what the arranger needs. Parsing is slow enough (tens of ms per tune plus a
second of metadata loading) that every extraction is cached as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from moodshift._atomic import write_bytes
from moodshift.errors import DependencyError

# Bump when the extraction logic changes so stale cache entries are redone.
CACHE_VERSION = 6

# meter string -> (beats per bar, quarter notes per beat). Compound meters count
# dotted-quarter beats; 2/2 counts quarters so reels keep eighth-note motion.
METERS: dict[str, tuple[int, float]] = {
    "2/4": (2, 1.0),
    "4/4": (4, 1.0),
    "2/2": (4, 1.0),
    "3/4": (3, 1.0),
    "3/8": (3, 0.5),
    "3/2": (3, 2.0),
    "6/8": (2, 1.5),
    "9/8": (3, 1.5),
    "12/8": (4, 1.5),
    "6/4": (2, 3.0),
}

# Corpus folder -> share of the melody pool. Folk collections dominate because
# their tunes are singable single lines; chorales add slower, hymn-like lines.
SOURCES: dict[str, float] = {
    "essenFolksong": 0.34,
    "oneills1850": 0.20,
    "ryansMammoth": 0.14,
    "airdsAirs": 0.10,
    "bach": 0.14,
    "miscFolk": 0.08,
}

_BACH_CHORALE = re.compile(r"^bach/bwv[0-9]+\.[0-9]+\.(mxl|xml|musicxml)$")
_MIN_NOTES = 20
_MIN_BARS = 8


@dataclass(frozen=True)
class Candidate:
    """A corpus work that may yield a melody (from music21's metadata, unparsed)."""

    path: str  # relative to music21's corpus root, e.g. "essenFolksong/altdeu10.abc"
    number: int | None  # tune number inside an ABC opus
    meter: str

    @property
    def source(self) -> str:
        return self.path if self.number is None else f"{self.path}#{self.number}"

    @property
    def meter_class(self) -> str:
        return meter_class(METERS[self.meter][0])


@dataclass(frozen=True)
class Melody:
    """A monophonic tune, positions and durations in beats from the first full bar.

    Notes before beat 0 are the pickup (anacrusis).
    """

    source: str
    title: str
    meter: str
    beats_per_bar: int
    tonic_pc: int
    mode: str  # "major" or "minor", from music21's key analysis
    notes: tuple[tuple[int, float, float], ...]  # (midi pitch, onset, duration)
    length_beats: float

    @property
    def meter_class(self) -> str:
        return meter_class(self.beats_per_bar)

    @property
    def n_bars(self) -> int:
        return max(1, math.ceil(self.length_beats / self.beats_per_bar - 1e-6))


def meter_class(beats_per_bar: int) -> str:
    """``"triple"`` for 3 beats a bar (waltz-compatible), else ``"duple"``."""
    return "triple" if beats_per_bar == 3 else "duple"


# Aarden-Essen key profiles (as in music21's default key analysis), which were
# fitted on the Essen folk songs that make up most of the pool.
_MAJOR_PROFILE = np.array(
    [
        17.7661,
        0.145624,
        14.9265,
        0.160186,
        19.8049,
        11.3587,
        0.291248,
        22.062,
        0.145624,
        8.15494,
        0.232998,
        4.95122,
    ]
)
_MINOR_PROFILE = np.array(
    [
        18.2648,
        0.737619,
        14.0499,
        16.8599,
        0.702494,
        14.4362,
        0.702494,
        18.6161,
        4.56621,
        1.93186,
        7.37619,
        1.75623,
    ]
)


def estimate_key(
    notes: Sequence[tuple[int, float, float]], *, sharps: int | None = None
) -> tuple[int, str]:
    """Tonic pitch class and "major"/"minor" of a melody.

    Duration-weighted pitch-class histogram correlated with the Aarden-Essen
    profiles, plus bonuses for the last note being the tonic (folk tunes nearly
    always end there) and for agreeing with the key signature (``sharps``,
    negative for flats). Done in numpy because music21's analysis rebuilds
    interval networks and costs a quarter of the parse time.
    """
    hist = np.zeros(12)
    for pitch, _, dur in notes:
        hist[pitch % 12] += dur
    last_pc = notes[-1][0] % 12
    best = (-np.inf, 0, "major")
    for mode, profile in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(hist, np.roll(profile, tonic))[0, 1])
            r += 0.1 if tonic == last_pc else 0.0
            if sharps is not None:
                major_pc = (7 * sharps) % 12
                r += 0.1 if tonic == (major_pc if mode == "major" else (major_pc + 9) % 12) else 0
            if r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def _import_music21():
    try:
        import music21
    except ImportError as exc:  # pragma: no cover - music21 is a core dependency
        raise DependencyError(
            "music21 is needed to read the melody corpus; install it with `pip install music21`"
        ) from exc
    return music21


_ABC_METER = {"C": "4/4", "C|": "2/2"}


def _corpus_root() -> tuple[Path, list[Path]]:
    music21 = _import_music21()
    paths = [Path(p) for p in music21.corpus.corpora.CoreCorpus().getPaths()]
    if not paths:
        raise DependencyError(
            "music21's bundled corpus is missing; reinstall it with "
            "`pip install --force-reinstall music21`"
        )
    root = Path(music21.corpus.__file__).resolve().parent
    return root, paths


def _scan_abc(text: str) -> list[tuple[int, str, int]]:
    """(X number, meter, count of X: fields) for each single-meter tune of an ABC file."""
    tunes = re.split(r"(?m)^X:", text)[1:]
    out = []
    for tune in tunes:
        head, _, body = tune.partition("\nK:")
        number = re.match(r"\s*(\d+)", head)
        meters = re.findall(r"(?m)^M:\s*(\S+)", head)
        if not number or len(meters) != 1:
            continue
        meter = _ABC_METER.get(meters[0], meters[0])
        inline = re.findall(r"(?:^M:|\[M:)\s*([^\]\s]+)", body, flags=re.M)
        if any(_ABC_METER.get(m, m) != meter for m in inline):
            continue  # meter changes mid-tune
        if meter in METERS:
            out.append((int(number.group(1)), meter, len(tunes)))
    return out


@lru_cache(maxsize=1)
def list_candidates() -> tuple[Candidate, ...]:
    """Every single-meter tune of the chosen corpus folders, sorted by source.

    ABC headers are scanned as text (music21's metadata bundle takes ~15 s to
    walk); chorale meters are only known after parsing, so they are listed as
    4/4 and re-checked by :func:`extract_melody`.
    """
    root, paths = _corpus_root()
    out: list[Candidate] = []
    for path in paths:
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        folder = rel.split("/", 1)[0]
        if folder not in SOURCES:
            continue
        if folder == "bach":
            if _BACH_CHORALE.match(rel):
                out.append(Candidate(path=rel, number=None, meter="4/4"))
            continue
        if not rel.endswith(".abc"):
            continue
        text = path.read_text(encoding="latin-1")  # Essen files are not UTF-8
        for number, meter, n_tunes in _scan_abc(text):
            # music21 wants no number for a file holding a single tune.
            out.append(Candidate(path=rel, number=number if n_tunes > 1 else None, meter=meter))
    # Sorting by a stable key makes the pool depend only on the seed, not on the
    # order the file system lists the corpus in.
    out = sorted(set(out), key=lambda c: (c.path, -1 if c.number is None else c.number))
    return tuple(out)


def candidate_order(
    candidates: Sequence[Candidate], *, meter_class_: str, seed: int
) -> list[Candidate]:
    """Interleave the sources by their pool share, each source shuffled by ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    by_source: dict[str, list[Candidate]] = {s: [] for s in SOURCES}
    for c in candidates:
        if c.meter_class == meter_class_:
            by_source[c.path.split("/", 1)[0]].append(c)
    queues = {}
    for name, items in by_source.items():
        if items:
            perm = rng.permutation(len(items))
            queues[name] = [items[i] for i in perm]
    order: list[Candidate] = []
    names = sorted(queues)
    pos = dict.fromkeys(names, 0)
    while names:
        weights = np.array([SOURCES[s] for s in names])
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        order.append(queues[name][pos[name]])
        pos[name] += 1
        if pos[name] == len(queues[name]):
            names.remove(name)
    return order


def _cache_file(cache_dir: Path, cand: Candidate) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cand.source.replace("#", "__"))
    return cache_dir / f"{safe}.json"


def extract_melody(cand: Candidate) -> Melody | str:
    """Parse one corpus work; return its melody, or a reason it was rejected."""
    music21 = _import_music21()
    from music21 import (  # music21 is heavy: load on use
        chord,
        key,
        meter,
        note,
        stream,
    )

    try:
        score = (
            music21.corpus.parse(cand.path, number=cand.number)
            if cand.number is not None
            else music21.corpus.parse(cand.path)
        )
    except Exception as exc:  # music21 raises many exception types on odd files
        return f"parse failed: {type(exc).__name__}: {exc}"
    if isinstance(score, stream.Opus):
        score = score.scores[0] if score.scores else score
    parts = list(score.parts) if hasattr(score, "parts") else []
    part = parts[0] if parts else score  # soprano / the single ABC voice
    ratios = {ts.ratioString for ts in part.recurse().getElementsByClass(meter.TimeSignature)}
    # music21's ABC reader sometimes invents a 1/16 or 1/1 meter from the L: field.
    ratios = {r for r in ratios if r in METERS} or ratios
    if len(ratios) > 1:
        return f"meter changes: {sorted(ratios)}"
    meter_str = ratios.pop() if ratios else cand.meter
    if meter_str not in METERS:
        return f"unsupported meter {meter_str}"
    if meter_class(METERS[meter_str][0]) != cand.meter_class:
        return f"meter {meter_str} is not {cand.meter_class}"
    bpb, beat_q = METERS[meter_str]
    bar_q = bpb * beat_q
    measures = list(part.getElementsByClass(stream.Measure))
    pickup_q = 0.0
    if measures:
        first_q = float(measures[0].duration.quarterLength)
        if 0 < first_q < bar_q - 1e-6:
            pickup_q = first_q
    notes: list[tuple[int, float, float]] = []
    for el in part.flatten().notes:
        ql = float(el.quarterLength)
        if ql <= 0:  # grace notes
            continue
        if isinstance(el, note.Note):
            pitch = el.pitch.midi
        elif isinstance(el, chord.Chord):
            pitch = max(p.midi for p in el.pitches)  # top of a double stop
        else:
            continue
        onset = (float(el.offset) - pickup_q) / beat_q
        tie = el.tie.type if el.tie is not None else None
        # Merge tied notes by hand: music21's stripTies deep-copies the whole part.
        if tie in ("continue", "stop") and notes and notes[-1][0] == pitch:
            p0, o0, _ = notes[-1]
            notes[-1] = (p0, o0, round(onset + ql / beat_q - o0, 6))
            continue
        notes.append((int(pitch), round(onset, 6), round(ql / beat_q, 6)))
    # Keep one note per onset (the highest) so the line is strictly monophonic.
    by_onset: dict[float, tuple[int, float, float]] = {}
    for n in notes:
        if n[1] not in by_onset or n[0] > by_onset[n[1]][0]:
            by_onset[n[1]] = n
    notes = sorted(by_onset.values(), key=lambda n: n[1])
    if len(notes) < _MIN_NOTES:
        return f"too few notes ({len(notes)})"
    length = max(o + d for _, o, d in notes)
    if length < _MIN_BARS * bpb:
        return f"too short ({length:.1f} beats)"
    durs = np.array([d for _, _, d in notes])
    if not 0.2 <= float(np.median(durs)) <= 2.0:
        return f"odd note values (median {float(np.median(durs)):.2f} beats)"
    pitches = np.array([p for p, _, _ in notes])
    if int(pitches.max() - pitches.min()) > 30:
        return "range over 2.5 octaves"
    sigs = list(part.recurse().getElementsByClass(key.KeySignature))
    tonic_pc, mode = estimate_key(notes, sharps=int(sigs[0].sharps) if sigs else None)
    title = ""
    if score.metadata is not None:
        title = score.metadata.title or score.metadata.bestTitle or ""
    if not title:
        title = Path(cand.path).stem
    title = re.sub(r"\s+", " ", str(title)).strip().rstrip(".")
    if title.lower().endswith((".mxl", ".xml")) or title.lower().startswith("bwv"):
        title = "Chorale " + Path(cand.path).stem.replace("bwv", "BWV ")
    if title.isupper():  # Essen and Ryan titles are often in capitals
        title = title.title()
    return Melody(
        source=cand.source,
        title=title,
        meter=meter_str,
        beats_per_bar=bpb,
        tonic_pc=tonic_pc,
        mode=mode,
        notes=tuple(notes),
        length_beats=round(float(length), 6),
    )


def _to_json(item: Melody | str, cand: Candidate) -> str:
    if isinstance(item, str):
        data = {"version": CACHE_VERSION, "source": cand.source, "rejected": item}
    else:
        data = {
            "version": CACHE_VERSION,
            "source": item.source,
            "title": item.title,
            "meter": item.meter,
            "beats_per_bar": item.beats_per_bar,
            "tonic_pc": item.tonic_pc,
            "mode": item.mode,
            "length_beats": item.length_beats,
            "notes": [list(n) for n in item.notes],
        }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _from_json(text: str) -> Melody | str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if data.get("version") != CACHE_VERSION:
        return None
    if "rejected" in data:
        return str(data["rejected"])
    return Melody(
        source=data["source"],
        title=data["title"],
        meter=data["meter"],
        beats_per_bar=int(data["beats_per_bar"]),
        tonic_pc=int(data["tonic_pc"]),
        mode=data["mode"],
        notes=tuple((int(p), float(o), float(d)) for p, o, d in data["notes"]),
        length_beats=float(data["length_beats"]),
    )


def _load_cached(cache_dir: Path, cand: Candidate) -> Melody | str | None:
    f = _cache_file(cache_dir, cand)
    try:
        return _from_json(f.read_text(encoding="utf-8"))
    except OSError:
        return None


def _extract_and_cache(cand: Candidate, cache_dir: Path) -> Melody | str:
    item = extract_melody(cand)
    write_bytes(_cache_file(cache_dir, cand), _to_json(item, cand).encode("utf-8"))
    return item


def source_part(source: str, parts: int) -> int:
    """The share (0..parts-1) a tune belongs to: a hash stable across runs and machines."""
    return int(hashlib.sha256(source.encode("utf-8")).hexdigest()[:8], 16) % int(parts)


def load_melodies(
    *,
    counts: dict[str, int],
    seed: int,
    cache_dir: str | os.PathLike[str],
    progress: bool = False,
    melody_part: tuple[int, int] | None = None,
) -> dict[str, list[Melody]]:
    """Pick ``counts[meter_class]`` melodies per meter class ("duple"/"triple").

    ``melody_part = (k, parts)`` draws only from the k-th of ``parts`` disjoint
    shares of the tunes (by a stable hash of the source), so two corpora built
    with different ``k`` share no melody (the transfer benchmark's split).

    Candidates are tried in a seed-determined order; rejected ones (too short,
    meter changes...) are skipped, so the result depends only on ``seed`` and
    ``counts``. Extractions, including rejections, are cached under
    ``cache_dir``. Parsing runs in this process: on two shared cores, worker
    processes lost more to importing music21 than they gained.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    candidates = list_candidates()
    out: dict[str, list[Melody]] = {}
    bar = None
    if progress:
        bar = tqdm(total=sum(counts.values()), desc="melodies", unit="tune")
    try:
        for cls in sorted(counts):
            want = counts[cls]
            order = candidate_order(candidates, meter_class_=cls, seed=seed)
            if melody_part is not None:
                k, parts = melody_part
                order = [c for c in order if source_part(c.source, parts) == k]
            got: list[Melody] = []
            for cand in order:
                if len(got) == want:
                    break
                item = _load_cached(cache, cand)
                if item is None:
                    item = _extract_and_cache(cand, cache)
                if isinstance(item, Melody):  # else a cached rejection reason
                    got.append(item)
                    if bar is not None:
                        bar.update(1)
            # The corpus is finite: a short list is returned and callers cycle it.
            out[cls] = got
    finally:
        if bar is not None:
            bar.close()
    return out
