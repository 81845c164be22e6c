"""Build the labelled corpus: plan groups, arrange MIDI, render audio, write labels.csv."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from moodshift._atomic import atomic_file
from moodshift.audio.corpus.arrange import GroupPlan, arrange, plan_groups
from moodshift.audio.corpus.melodies import Melody, load_melodies
from moodshift.audio.corpus.render import (
    clip_is_complete,
    fluidsynth_binary,
    render_clip,
    resolve_soundfonts,
)
from moodshift.errors import InputError

LABEL_COLUMNS: tuple[str, ...] = (
    "track_id",
    "mood",
    "genre",
    "instruments",
    "artist",
    "group",
    "title",
    "audio_path",
)
META_COLUMNS: tuple[str, ...] = (
    "meta_key",
    "meta_mode",
    "meta_tempo",
    "meta_meter",
    "meta_velocity",
    "meta_register",
    "meta_articulation",
    "meta_density",
    "meta_reverb",
    "meta_level_db",
    "meta_lead",
    "meta_lead_family",
    "meta_duration",
    "meta_soundfont",
    "meta_source",
    "meta_source_meter",
    "meta_source_key",
    "meta_melody_title",
    "meta_start_bar",
    "meta_midi",
)
# Each melody is arranged in about this many groups (genres/instrumentations), so
# an artist-disjoint split has several pieces per "artist" to hold out together.
GROUPS_PER_MELODY = 2
MAX_MELODIES = 500


@dataclass
class Clip:
    """One planned clip: its label row and its MIDI (a ``pretty_midi.PrettyMIDI``)."""

    labels: dict[str, object]
    midi: object


def _workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    if int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    return int(workers)


def _check_args(n: int, clip_seconds: tuple[float, float], moods_per_group: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    try:
        lo, hi = (float(x) for x in clip_seconds)
    except (TypeError, ValueError) as exc:
        raise InputError(f"clip_seconds must be (min, max) seconds, got {clip_seconds!r}") from exc
    if not (1.0 <= lo <= hi <= 300.0):
        raise InputError(f"clip_seconds must satisfy 1 <= min <= max <= 300, got {clip_seconds!r}")
    if isinstance(moods_per_group, bool) or not 1 <= int(moods_per_group) <= 4:
        raise InputError(f"moods_per_group must be 1..4, got {moods_per_group!r}")


def _assign_melodies(
    plans: Sequence[GroupPlan], pools: dict[str, list[Melody]], seed: int
) -> list[tuple[Melody, int]]:
    """Melody and excerpt start bar of each group, cycling each meter class's pool."""
    rng = np.random.default_rng([seed, 17])
    seen: set[tuple] = set()
    taken = dict.fromkeys(pools, 0)
    out = []
    for plan in plans:
        pool = pools[plan.style.meter_class]
        # The group must be unique as (melody, genre, instruments, soundfont).
        for _ in range(len(pool)):
            mel = pool[taken[plan.style.meter_class] % len(pool)]
            taken[plan.style.meter_class] += 1
            key = (mel.source, plan.genre, plan.instruments, plan.soundfont)
            if key not in seen:
                break
        seen.add(key)
        # Start on a phrase boundary (every 4 bars) that leaves at least 4 bars.
        starts = [b for b in range(0, max(1, mel.n_bars - 4), 4)]
        out.append((mel, int(rng.choice(starts))))
    return out


def plan_corpus(
    *,
    n: int,
    seed: int = 0,
    clip_seconds: tuple[float, float] = (10.0, 30.0),
    moods_per_group: int = 4,
    soundfonts: Sequence[str] = ("FluidR3_GM", "TimGM6mb"),
    cache_dir: str | os.PathLike[str],
    progress: bool = False,
    genres: Sequence[str] | None = None,
    variety: str = "classic",
    melody_part: tuple[int, int] | None = None,
) -> list[Clip]:
    """Labels and MIDI of every clip, without rendering audio.

    Parameters
    ----------
    n
        Number of clips; ``ceil(n / moods_per_group)`` groups, the last trimmed.
    seed
        Everything (melodies, arrangements, labels) is a function of the seed.
    clip_seconds
        (min, max) clip length; each group draws one length for all its moods.
    moods_per_group
        How many moods each group is performed in (4 = all).
    soundfonts
        Soundfont *names* recorded in the labels and balanced across groups.
    cache_dir
        Where extracted melodies are cached as JSON.
    progress
        Show tqdm bars.
    genres
        Genres to arrange in (default all of :data:`GENRES`).
    variety
        How widely each mood is realised: ``classic`` or ``wide`` (see ``arrange``).
    melody_part
        ``(k, parts)``: draw tunes only from the k-th of ``parts`` disjoint shares.

    Returns
    -------
    list of Clip
        In track-id order.
    """
    _check_args(n, clip_seconds, moods_per_group)
    n_groups = math.ceil(n / moods_per_group)
    plans = plan_groups(
        n_groups=n_groups,
        seed=seed,
        soundfonts=list(soundfonts),
        clip_seconds=(float(clip_seconds[0]), float(clip_seconds[1])),
        moods_per_group=moods_per_group,
        n_clips=n,
        genres=genres,
        variety=variety,
    )
    need: dict[str, int] = {}
    for p in plans:
        need[p.style.meter_class] = need.get(p.style.meter_class, 0) + 1
    counts = {
        cls: min(MAX_MELODIES, max(1, math.ceil(k / GROUPS_PER_MELODY))) for cls, k in need.items()
    }
    pools = load_melodies(counts=counts, seed=seed, cache_dir=cache_dir, progress=progress,
                          melody_part=melody_part)  # fmt: skip
    for cls in counts:
        if not pools.get(cls):
            raise InputError(f"music21's corpus yielded no usable {cls}-meter melody")
    assigned = _assign_melodies(plans, pools, seed)

    artist_ids: dict[str, str] = {}
    clips: list[Clip] = []
    bar = None
    if progress:
        bar = tqdm(total=n, desc="arranging", unit="clip")
    try:
        for plan, (mel, start_bar) in zip(plans, assigned, strict=True):
            artist = artist_ids.setdefault(mel.source, f"mel_{len(artist_ids):04d}")
            for mood in plan.moods:
                arr = arrange(group=plan, mood=mood, melody=mel, start_bar=start_bar)
                track_id = f"trk_{len(clips):06d}"
                labels: dict[str, object] = {
                    "track_id": track_id,
                    "mood": mood,
                    "genre": plan.genre,
                    "instruments": "|".join(plan.instruments),
                    "artist": artist,
                    "group": plan.group_id,
                    "title": f"{mel.title} ({plan.genre}, "
                    f"{arr.meta['meta_lead'].replace('_', ' ')})",
                    "audio_path": f"audio/{track_id}.wav",
                    **arr.meta,
                    "meta_melody_title": mel.title,
                    "meta_midi": f"midi/{track_id}.mid",
                }
                clips.append(Clip(labels=labels, midi=arr.midi))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return clips[:n]


def _write_public(path: Path, data: bytes) -> None:
    """Atomic write, readable by all (mkstemp creates files 0600)."""
    with atomic_file(path, "wb") as fh:
        os.fchmod(fh.fileno(), 0o644)
        fh.write(data)


def _midi_bytes(pm) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def _labels_csv(clips: Sequence[Clip]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*LABEL_COLUMNS, *META_COLUMNS], lineterminator="\n", extrasaction="raise"
    )
    writer.writeheader()
    for clip in clips:
        writer.writerow(clip.labels)
    return buf.getvalue().encode("utf-8")


def build_corpus(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    clip_seconds: tuple[float, float] = (10.0, 30.0),
    moods_per_group: int = 4,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    progress: bool = True,
    sample_rate: int = 22050,
    cache_dir: str | os.PathLike[str] | None = None,
    genres: Sequence[str] | None = None,
    variety: str = "classic",
    melody_part: tuple[int, int] | None = None,
    augment: bool = False,
) -> Path:
    """Build (or finish building) the labelled mood corpus in ``out_dir``.

    Writes ``midi/<track_id>.mid``, ``audio/<track_id>.wav`` (mono 16-bit) and
    ``labels.csv``. Clips whose audio is already complete are skipped, so an
    interrupted build can be resumed by running it again.

    Parameters
    ----------
    out_dir
        Output folder (created if needed).
    n
        Number of clips.
    seed
        Same seed, same labels and MIDI.
    workers
        Parallel fluidsynth processes (default: all usable cores).
    clip_seconds
        (min, max) clip length in seconds.
    moods_per_group
        Moods each counterfactual group is rendered in (default all 4).
    soundfonts
        ``.sf2`` files to render with, balanced across groups (default: FluidR3_GM
        and TimGM6mb, whichever are installed).
    progress
        Show tqdm progress bars.
    sample_rate
        Audio sample rate in Hz.
    cache_dir
        Melody cache (default ``out_dir/.cache/melodies``).
    genres, variety, melody_part
        As in :func:`plan_corpus`.
    augment
        Vary each clip's audio after rendering (gain, EQ, reverb, varispeed pitch
        and tempo, noise; :func:`~moodshift.audio.corpus.render.augment_audio`),
        seeded per clip. Use a fresh ``out_dir``: clips already rendered are kept.

    Returns
    -------
    Path
        The ``labels.csv`` path; its ``audio_path`` column is relative to its folder.

    Raises
    ------
    DependencyError
        When fluidsynth or a soundfont is missing (the message names the fix).
    InputError
        On invalid arguments.
    """
    _check_args(n, clip_seconds, moods_per_group)
    if not 8000 <= int(sample_rate) <= 96000:
        raise InputError(f"sample_rate must be 8000..96000 Hz, got {sample_rate}")
    n_workers = _workers(workers)
    binary = fluidsynth_binary()
    fonts = resolve_soundfonts(soundfonts)
    out = Path(out_dir)
    audio_dir, midi_dir = out / "audio", out / "midi"
    for d in (audio_dir, midi_dir):
        d.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.glob(".*.tmp"):  # leftovers of a killed run
        with contextlib.suppress(OSError):
            stale.unlink()
    clips = plan_corpus(
        n=n,
        seed=seed,
        clip_seconds=clip_seconds,
        moods_per_group=moods_per_group,
        soundfonts=list(fonts),
        cache_dir=cache_dir or out / ".cache" / "melodies",
        progress=progress,
        genres=genres,
        variety=variety,
        melody_part=melody_part,
    )

    pending = []
    for i, clip in enumerate(clips):
        midi_path = out / str(clip.labels["meta_midi"])
        wav_path = out / str(clip.labels["audio_path"])
        data = _midi_bytes(clip.midi)
        try:
            same = midi_path.read_bytes() == data
        except OSError:
            same = False
        if not same:
            # Audio rendered from other MIDI (another seed or version) is stale:
            # drop it before the new MIDI lands so a crash cannot pair them.
            with contextlib.suppress(FileNotFoundError):
                wav_path.unlink()
            _write_public(midi_path, data)
        seconds = float(clip.labels["meta_duration"])
        if not clip_is_complete(wav_path, sample_rate=sample_rate, seconds=seconds):
            pending.append(
                (midi_path, wav_path, fonts[str(clip.labels["meta_soundfont"])], seconds,
                 (seed, i) if augment else None)
            )  # fmt: skip

    bar = None
    if progress:
        bar = tqdm(
            total=len(clips), initial=len(clips) - len(pending), desc="rendering", unit="clip"
        )
    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            futures = [
                pool.submit(
                    render_clip,
                    midi_path=m,
                    wav_path=w,
                    soundfont=sf,
                    seconds=s,
                    sample_rate=sample_rate,
                    binary=binary,
                    augment_seed=aug,
                )
                for m, w, sf, s, aug in pending
            ]
            if bar is not None:
                for f in futures:
                    f.add_done_callback(lambda _f: bar.update(1))
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            for f in not_done:
                f.cancel()
            for f in done:
                f.result()  # re-raise the first failure
    finally:
        if bar is not None:
            bar.close()

    labels_path = out / "labels.csv"
    _write_public(labels_path, _labels_csv(clips))
    return labels_path
