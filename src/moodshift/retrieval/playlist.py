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

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moodshift._atomic import write_text
from moodshift.data.catalog import file_inside
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


def m3u_text(value: Any) -> str:
    """``value`` as one line of ``#EXTINF`` text: control characters become spaces.

    A newline (or CR, NEL, U+2028/U+2029, any C0/C1 control) in a title or artist would
    start a new playlist line that a player follows, e.g. ``http://evil.example/pwn.mp3``.
    """
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(value))


def check_m3u_target(path: str | os.PathLike[str]) -> Path:
    """Refuse an ``--m3u`` path that cannot be a new or replaced playlist file.

    Checked before any work, so that a refused path creates nothing.

    Raises
    ------
    InputError
        The path is a folder (or ends with a separator), or its folder does not exist.
    """
    raw = os.fspath(path)
    p = Path(raw)
    if not raw or raw.endswith(("/", os.sep)) or p.is_dir():
        raise InputError(
            f"--m3u {raw!r} is a folder; give a file name, e.g. {str(p / 'playlist.m3u8')!r}."
        )
    if not p.parent.is_dir():
        raise InputError(
            f"--m3u {raw!r}: the folder {str(p.parent)!r} does not exist; create it first or "
            f"write the playlist elsewhere."
        )
    return p


def write_m3u(
    path: str | os.PathLike[str], entries: list[dict[str, Any]], *, roots: Sequence[str | Path]
) -> tuple[Path, int]:
    """Write an extended M3U8 playlist (UTF-8) of the entries' ``audio_path`` (atomically).

    Titles read ``artist - title`` with control characters replaced (:func:`m3u_text`).
    An entry is written only when its ``audio_path`` is a regular file whose real path
    lies inside one of ``roots`` (the catalogue's audio root) and holds no control
    character; the others are left out and counted. Entries without an audio file are
    skipped silently.

    Parameters
    ----------
    path : str or PathLike
        The playlist file; its folder must exist (:func:`check_m3u_target`).
    entries : list of dict
        ``track_id``, ``audio_path`` and optionally ``artist``, ``title`` per item.
    roots : sequence of folders
        Where playable files may lie.

    Returns
    -------
    path : Path
    left_out : int
        Entries whose ``audio_path`` was refused.

    Raises
    ------
    InputError
        ``path`` is a folder or its folder does not exist (nothing is written).
    """
    target = check_m3u_target(path)
    lines, left_out = ["#EXTM3U"], 0
    for e in entries:
        if not e.get("audio_path"):
            continue
        real = file_inside(str(e["audio_path"]), roots=roots)
        if real is None or m3u_text(real) != str(real):
            left_out += 1
            continue
        name = " - ".join(m3u_text(v) for v in (e.get("artist"), e.get("title") or e["track_id"])
                          if v)  # fmt: skip
        lines += [f"#EXTINF:-1,{name}", str(real)]
    write_text(target, "\n".join(lines) + "\n")
    return target, left_out
