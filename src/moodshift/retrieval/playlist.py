"""Mood-journey playlists: from a seed track's mood to a target mood, gradually.

Item ``i`` of ``L`` answers the query "like the seed, but <target>" at strength
``i / L``, so the list starts beside the seed and ends in the target mood. Three
rules keep it a journey rather than a jump:

* **monotone mood**: each item's tagger probability of the target mood,
  ``p(target | track)``, is at least the previous item's (without a tagger: its
  label, 1 for the target and 0 otherwise);
* **no repeats**, the seed included, and at most ``max_per_artist`` items per
  artist (tracks without an artist count as their own);
* **arrival**: the last item's evidence names the target mood when any
  remaining track's does.

Within the rules, step ``i`` takes the candidate maximising its similarity to
the step's query minus ``3 (p - aim_i)`` above the aim or ``aim_i - p`` below
it, where ``aim_i`` rises evenly from the seed's ``p(target)`` to 1: the list
moves gradually instead of jumping.

With ``via``, the first half travels from the seed to ``via`` and the second
half from the last item of the first half to the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moodshift._atomic import write_text
from moodshift.errors import InputError, NonFiniteQueryError
from moodshift.retrieval.engine import QueryEngine

#: Candidates examined per step (deeper when the rules exhaust them).
DEPTH = 200


@dataclass
class JourneyItem:
    """One playlist entry (a catalogue row) and how it was chosen."""

    row: int
    strength: float
    target: int
    p_target: float
    score: float


def describe_journey(engine: QueryEngine, items: list[JourneyItem]) -> list[dict[str, Any]]:
    """What every playlist shows of each entry, besides the track itself.

    Returns
    -------
    list of dict
        Per item: ``mood, mood_source, mood_probability`` (its evidence),
        ``strength``, ``toward`` (the mood of the leg) and ``p_target``.
    """
    rows = np.array([it.row for it in items], dtype=np.int64)
    moods = engine.evidence.describe(rows, classes=engine.classes)
    return [
        {**m, "strength": round(it.strength, 4), "toward": engine.classes[it.target],
         "p_target": round(it.p_target, 4)}
        for it, m in zip(items, moods, strict=True)
    ]  # fmt: skip


def _p_target(engine: QueryEngine, rows: np.ndarray, target: int) -> np.ndarray:
    """How much each row is in ``target``: the tagger's p, else its label (1 or 0)."""
    ev = engine.evidence
    if ev.proba is not None:
        return np.asarray(ev.proba[rows, target], dtype=np.float64)
    return (ev.labels[rows] == target).astype(np.float64)


def _leg(
    engine: QueryEngine,
    *,
    seed_row: int,
    source: int,
    target: int,
    length: int,
    used: set[int],
    per_artist: dict[int, int],
    max_per_artist: int | None,
) -> list[JourneyItem]:
    seed = np.asarray(engine.vectors[[seed_row]], dtype=np.float32)
    candidate, _, _ = engine.evidence.tiers("auto")
    items: list[JourneyItem] = []
    start = floor = float(_p_target(engine, np.array([seed_row]), target)[0])
    for i in range(1, length + 1):
        strength = i / length
        last = i == length
        depth = DEPTH
        chosen = None
        while chosen is None:
            rows, scores, query = engine.search(
                seed, source=np.array([source]), target=np.array([target]),
                k=min(depth, engine.n), evidence="auto" if last else "none", strength=strength,
                exclude=np.array([seed_row]),
            )  # fmt: skip
            if not np.isfinite(query).all():
                raise NonFiniteQueryError()
            rows, scores = rows[0], scores[0]
            ok = rows >= 0
            rows, scores = rows[ok], scores[ok]
            p = _p_target(engine, rows, target)
            # Aim each step at an even share of the way from the seed's p to 1, so an
            # early jump to a very-target track does not leave nothing for later steps.
            aim = start + (1.0 - start) * i / length
            best = -np.inf
            for r, sc, pr in zip(rows.tolist(), scores.tolist(), p.tolist(), strict=True):
                if r in used or pr < floor:
                    continue
                if max_per_artist is not None and engine.artists is not None:
                    a = int(engine.artists[r])
                    if a >= 0 and per_artist.get(a, 0) >= max_per_artist:
                        continue
                if last and candidate[r] != target and (candidate == target).any():
                    continue
                # Overshooting the aim costs more: it raises the floor for every later step.
                key = sc - 3.0 * max(0.0, pr - aim) - max(0.0, aim - pr)
                if key > best:
                    best = key
                    chosen = JourneyItem(row=r, strength=strength, target=target, p_target=pr,
                                         score=sc)  # fmt: skip
            if chosen is None:
                if depth >= engine.n:
                    break
                depth *= 4
        if chosen is None:
            break  # the rules leave no track: a shorter journey
        items.append(chosen)
        used.add(chosen.row)
        floor = chosen.p_target
        if engine.artists is not None and engine.artists[chosen.row] >= 0:
            a = int(engine.artists[chosen.row])
            per_artist[a] = per_artist.get(a, 0) + 1
    return items


def mood_journey(
    engine: QueryEngine,
    *,
    seed_row: int,
    target: int,
    length: int = 12,
    via: int | None = None,
    max_per_artist: int | None = 1,
) -> list[JourneyItem]:
    """A playlist that moves from the seed's mood to ``target``.

    Parameters
    ----------
    engine : QueryEngine
        Over the catalogue the playlist draws from.
    seed_row : int
        The seed track's row (never in the list).
    target : int
        Target mood (class index).
    length : int
        Items wanted (fewer when the rules exhaust the catalogue).
    via : int, optional
        A mood to pass through half-way.
    max_per_artist : int or None
        At most this many items per artist (None: no cap).

    Returns
    -------
    list of JourneyItem

    Raises
    ------
    InputError
        If ``length`` < 1 or ``max_per_artist`` < 1.
    """
    if length < 1:
        raise InputError(f"length must be >= 1, got {length}")
    if max_per_artist is not None and max_per_artist < 1:
        raise InputError(f"max_per_artist must be >= 1, got {max_per_artist}")
    used = {seed_row}
    per_artist: dict[int, int] = {}
    if engine.artists is not None and engine.artists[seed_row] >= 0:
        per_artist[int(engine.artists[seed_row])] = 1
    source = int(engine.source_of(np.array([seed_row]))[0][0])
    common = {"used": used, "per_artist": per_artist, "max_per_artist": max_per_artist}
    if via is None:
        return _leg(engine, seed_row=seed_row, source=source, target=target, length=length,
                    **common)  # fmt: skip
    first = _leg(engine, seed_row=seed_row, source=source, target=via, length=length // 2,
                 **common)  # fmt: skip
    start = first[-1].row if first else seed_row
    start_src = via if first else source
    return first + _leg(engine, seed_row=start, source=start_src, target=target,
                        length=length - len(first), **common)  # fmt: skip


def write_m3u(path: str | Path, entries: list[dict[str, Any]]) -> Path:
    """Write an extended M3U8 playlist (UTF-8) of the entries' ``audio_path`` (atomically).

    Entries without an audio file are left out; titles read ``artist - title``.
    """
    lines = ["#EXTM3U"]
    for e in entries:
        if not e.get("audio_path"):
            continue
        name = " - ".join(str(v) for v in (e.get("artist"), e.get("title") or e["track_id"]) if v)
        lines += [f"#EXTINF:-1,{name}", str(e["audio_path"])]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)
