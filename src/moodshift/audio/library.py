"""A music folder as a catalogue: scan, read tags, embed incrementally.

``moodshift embed --audio-dir ~/Music --out my_library`` walks the folder,
reads each audio file's tags with mutagen (title, artist, album, genre, mood),
embeds the audio and writes a catalogue whose ``mood`` is empty where no tag
(or ``--labels`` row) gives one.

Track ids are the files' paths relative to the library root (POSIX
separators, extension kept: ``Artist/Album/01 Song.flac``), so they are stable
across runs and readable; a ``--labels`` row that names a file and gives a
``track_id`` sets that file's id instead.

Incremental runs: the catalogue folder holds ``library.json``, one entry per
audio file (size, modification time, SHA-256 of the bytes, tags, or the
reason it failed). A re-run re-reads only the files whose size or time
changed, finds every other embedding in the content-addressed embedding
cache (:mod:`moodshift.audio.embedders.pipeline`), embeds only new or changed
files and drops deleted ones. Each embedding is written to the cache
atomically as soon as it is computed, so a run killed half-way keeps every
finished file; the catalogue and ``library.json`` are replaced atomically at
the end.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from moodshift._atomic import resolve_dir, write_text
from moodshift.errors import DataError, InputError

__all__ = [
    "AUDIO_EXTENSIONS",
    "LibraryReport",
    "ScanResult",
    "embed_library",
    "read_tags",
    "scan_library",
]

log = logging.getLogger(__name__)

#: File name extensions treated as audio (anything else is counted as non-audio).
AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".m4b", ".mp4", ".aac", ".wav",
     ".wave", ".aif", ".aiff", ".aifc", ".wma", ".webm", ".mka", ".ape", ".wv"}
)  # fmt: skip
STATE_FILE = "library.json"
STATE_VERSION = 1
#: Columns of a library catalogue, in order (``meta_*`` columns are shown, not scored).
COLUMNS = ("track_id", "title", "artist", "meta_album", "genre", "mood", "duration", "audio_path")
# WMA (ASF) attribute names of the tags read (Title is "Title" already).
_ASF_KEYS = {"author": "artist", "wm/albumtitle": "album", "wm/genre": "genre",
             "wm/mood": "mood"}  # fmt: skip
# Several values in one tag (ID3 v2.3 taggers, "Rock; Pop") are split on these.
_VALUE_SEPARATORS = (";", "|", "\x00")


# --------------------------------------------------------------------------- scanning
@dataclass
class ScanResult:
    """What a walk of the library folder found.

    Attributes
    ----------
    audio : list of Path
        Non-empty files with an audio extension, sorted by relative path.
    empty : list of Path
        Zero-length audio files (never decoded).
    hidden : list of Path
        Hidden files and folders (name starting with "."); folders are not entered.
    non_audio : list of Path
        Other files (covers, playlists, text, ...).
    unreadable : list of (Path, str)
        Entries that could not be listed or stat'ed.
    """

    root: Path
    audio: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    non_audio: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def scan_library(*, root: str | Path, exclude: Iterable[str | Path] = ()) -> ScanResult:
    """Walk ``root`` recursively and sort its files into audio, empty, hidden, non-audio.

    Parameters
    ----------
    root : path
        The music folder.
    exclude : paths
        Folders to skip (the catalogue and cache when they lie inside the library).

    Returns
    -------
    ScanResult

    Raises
    ------
    InputError
        ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"--audio-dir {root} is not a folder; give the folder of your music.")
    root = root.resolve()
    skip = {Path(p).resolve() for p in exclude}
    res = ScanResult(root=root)

    def on_error(exc: OSError) -> None:
        res.unreadable.append((Path(exc.filename or root), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                res.hidden.append(here / d)
            elif (here / d).resolve() not in skip:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            p = here / name
            if name.startswith("."):
                res.hidden.append(p)
                continue
            if p.suffix.lower() not in AUDIO_EXTENSIONS:
                res.non_audio.append(p)
                continue
            try:
                size = p.stat().st_size
            except OSError as exc:  # a dangling link, a permission problem
                res.unreadable.append((p, exc.strerror or str(exc)))
                continue
            (res.audio if size > 0 else res.empty).append(p)
    res.audio.sort(key=lambda q: q.relative_to(root).as_posix())
    return res


# --------------------------------------------------------------------------- tags
def _split_values(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for sep in _VALUE_SEPARATORS[1:]:
            text = text.replace(sep, _VALUE_SEPARATORS[0])
        for part in text.split(_VALUE_SEPARATORS[0]):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def read_tags(path: str | Path) -> dict[str, list[str]]:
    """Title, artist, album, genre and mood tags of one file (mutagen).

    Mood comes from ID3 ``TMOO`` (or a ``TXXX:MOOD`` frame), Vorbis/FLAC/Opus
    ``MOOD``, or the MP4 freeform atom ``----:com.apple.iTunes:MOOD``.

    Parameters
    ----------
    path : path

    Returns
    -------
    dict of str to list of str
        Keys among ``title, artist, album, genre, mood``, each with one or more
        values (multi-valued frames and ``;``-separated values are split);
        empty when the file has no tags.

    Raises
    ------
    OSError, mutagen.MutagenError
        The file cannot be read or parsed (the caller decides what that means).
    """
    return _probe(path)[0]


def write_mood_tag(path: str | Path, mood: str) -> None:
    """Write ``mood`` into a file's own mood tag, where :func:`read_tags` reads it.

    ID3 ``TMOO`` (MP3, WAV, AIFF), Vorbis/FLAC/Opus ``MOOD``, MP4
    ``----:com.apple.iTunes:MOOD`` (as MusicBrainz Picard and beets write it). The
    tags go into a copy beside the file that then replaces it, so a crash leaves the
    old file or the new one, never half of each.

    Raises
    ------
    InputError
        The file is not audio mutagen can tag.
    OSError
        The file cannot be read or replaced.
    """
    import shutil
    import tempfile

    import mutagen
    from mutagen.id3 import ID3, TMOO
    from mutagen.mp4 import MP4FreeForm, MP4Tags

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tag.tmp", dir=path.parent)
    os.close(fd)
    try:
        shutil.copy2(path, tmp)
        f = mutagen.File(tmp)
        if f is None:
            raise InputError(f"{path} is not an audio file mutagen can tag; give MP3, FLAC, "
                             "Ogg, Opus, M4A or WAV files")  # fmt: skip
        if f.tags is None:
            f.add_tags()
        if isinstance(f.tags, ID3):
            f.tags.delall("TXXX:MOOD")
            f.tags.setall("TMOO", [TMOO(encoding=3, text=[mood])])
        elif isinstance(f.tags, MP4Tags):
            f.tags["----:com.apple.iTunes:MOOD"] = [MP4FreeForm(mood.encode("utf-8"))]
        else:
            f.tags["MOOD"] = [mood]
        f.save()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _probe(path: str | Path) -> tuple[dict[str, list[str]], float | None]:
    """Tags (as :func:`read_tags`) and duration in seconds (None if unknown): one parse."""
    import mutagen
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    f = mutagen.File(str(path))
    length = getattr(getattr(f, "info", None), "length", None)
    duration = float(length) if length else None
    tags = getattr(f, "tags", None) if f is not None else None
    if not tags:
        return {}, duration
    raw: dict[str, list[Any]] = {}
    if isinstance(tags, ID3):
        frames = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "mood": "TMOO"}
        for key, frame in frames.items():
            raw[key] = [t for fr in tags.getall(frame) for t in fr.text]
        raw["genre"] = [g for fr in tags.getall("TCON") for g in fr.genres]
        for fr in tags.getall("TXXX"):
            if fr.desc.lower() == "mood":
                raw["mood"] = raw.get("mood", []) + list(fr.text)
    elif isinstance(tags, MP4Tags):
        atoms = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "genre": "\xa9gen"}
        for key, atom in atoms.items():
            raw[key] = list(tags.get(atom, []))
        for atom, values in tags.items():
            if atom.lower() == "----:com.apple.itunes:mood":
                raw["mood"] = [bytes(v) for v in values]
    else:  # Vorbis comments (FLAC, Ogg, Opus), APEv2, ASF (WMA): text keys, any case
        for key, values in tags.items():
            k = str(key).lower()
            k = _ASF_KEYS.get(k, k)
            if k in ("title", "artist", "album", "genre", "mood"):
                vals = values if isinstance(values, list) else [values]
                raw.setdefault(k, []).extend(str(v) for v in vals)
    return {k: vals for k, v in raw.items() if (vals := _split_values(v))}, duration


# --------------------------------------------------------------------------- labels CSV
def _read_overrides(labels: Path) -> pd.DataFrame:
    from moodshift.data.catalog import read_labels

    df = read_labels(labels).fillna("").astype(str)
    if "path" in df.columns and "audio_path" not in df.columns:
        df = df.rename(columns={"path": "audio_path"})
    if "track_id" not in df.columns and "audio_path" not in df.columns:
        raise DataError(
            f"{labels} needs a track_id or an audio_path column to say which file each row "
            f"labels (has {list(df.columns)})."
        )
    return df


def _apply_overrides(rows: pd.DataFrame, df: pd.DataFrame, *, labels: Path,
                     root: Path) -> tuple[pd.DataFrame, int]:  # fmt: skip
    """Overwrite ``rows`` with the non-empty cells of matching CSV rows; count unmatched rows."""
    by_path = {str((root / p).resolve()): i for i, p in enumerate(rows["audio_path"])}
    by_id = {t: i for i, t in enumerate(rows["track_id"])}
    stems: dict[str, list[int]] = {}
    for i, p in enumerate(rows["audio_path"]):
        stems.setdefault(Path(p).stem, []).append(i)
    base = labels.resolve().parent
    unmatched = 0
    for _, rec in df.iterrows():
        i = None
        ap = rec.get("audio_path", "")
        if ap:
            p = Path(ap).expanduser()
            i = by_path.get(str((p if p.is_absolute() else base / p).resolve()))
        tid = rec.get("track_id", "")
        if i is None and tid:
            i = by_id.get(tid)
            if i is None and len(stems.get(tid, [])) == 1:  # files named <track_id>.<ext>
                i = stems[tid][0]
        if i is None:
            unmatched += 1
            continue
        for col, value in rec.items():
            if col in ("audio_path", "split") or value == "":
                continue
            if col not in rows.columns:
                rows[col] = ""
            rows.iat[i, rows.columns.get_loc(col)] = value
    return rows, unmatched


# --------------------------------------------------------------------------- state
def _load_state(out: Path, root: Path) -> dict[str, dict[str, Any]]:
    path = resolve_dir(out) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s): every file is re-read", path, exc)
        return {}
    if state.get("format_version") != STATE_VERSION or state.get("root") != str(root):
        return {}  # another library or format: start afresh (embeddings stay in the cache)
    return dict(state.get("files", {}))


def _write_state(out: Path, *, root: Path, files: dict[str, dict[str, Any]]) -> None:
    state = {"format_version": STATE_VERSION, "root": str(root), "files": files}
    write_text(out / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))


# --------------------------------------------------------------------------- driver
@dataclass
class LibraryReport:
    """Counts of one ``embed_library`` run (``summary()`` prints them).

    Attributes
    ----------
    n_tracks : int
        Tracks in the written catalogue.
    n_labelled, n_unlabelled : int
        Tracks with / without a value in the attribute (mood) column.
    n_embedded : int
        Embeddings computed in this run (the rest came from the cache).
    n_reused : int
        Tracks whose embedding came from the cache.
    n_removed : int
        Files of the previous run that are gone.
    failed : list of (str, str)
        Audio files that could not be decoded or embedded, with the reason.
    empty, hidden, non_audio : list of str
        Files skipped by the scan.
    labels_unmatched : int
        ``--labels`` rows that matched no file.
    several_moods : int
        Tracks with several mood tags (the first is the track's mood).
    split : str
        The stored split, or why there is none.
    """

    n_tracks: int = 0
    n_labelled: int = 0
    n_unlabelled: int = 0
    n_embedded: int = 0
    n_reused: int = 0
    n_removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    non_audio: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    labels_unmatched: int = 0
    several_moods: int = 0
    split: str = ""

    def summary(self) -> str:
        """A few lines for the terminal."""
        ext = Counter(Path(p).suffix.lower() or "(none)" for p in self.non_audio)
        kinds = ", ".join(f"{e} {c}" for e, c in ext.most_common(6))
        lines = [
            f"{self.n_tracks} tracks: {self.n_labelled} labelled, {self.n_unlabelled} without "
            f"a mood; {self.n_embedded} embedded now, {self.n_reused} from the cache, "
            f"{self.n_removed} removed since the last run",
            f"skipped: {len(self.failed)} unreadable audio, {len(self.empty)} empty, "
            f"{len(self.hidden)} hidden, {len(self.non_audio)} non-audio"
            + (f" ({kinds})" if kinds else "")
            + (f", {len(self.unreadable)} not listable" if self.unreadable else ""),
        ]
        if self.several_moods:
            lines.append(f"{self.several_moods} tracks have several mood tags: kept the first")
        if self.labels_unmatched:
            lines.append(f"--labels: {self.labels_unmatched} rows matched no file")
        lines.append(f"split: {self.split}")
        return "\n".join(lines)


def _default_cache(out: Path) -> Path:
    return out.with_name(out.name + ".embed_cache")


def embed_library(
    *,
    audio_dir: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    embedder: str = "musicnn",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    attribute: str = "mood",
    seed: int = 0,
    progress: bool = True,
) -> tuple[Any, LibraryReport]:
    """Scan a music folder, read its tags, embed new or changed files, write the catalogue.

    Parameters
    ----------
    audio_dir : path
        The music folder (walked recursively).
    out : path
        Catalogue folder to write (and, on a re-run, to update).
    labels : path, optional
        CSV/Parquet whose rows add or override labels: matched by ``audio_path``
        (relative to the CSV's folder, or absolute), else by ``track_id`` (a
        catalogue id or a file's name without extension). Non-empty cells win
        over tags; a ``track_id`` cell renames the matched track.
    embedder : str
        A registered embedder name.
    cache_dir : path, optional
        Embedding cache; default ``<out>.embed_cache`` beside the catalogue.
    workers : int, optional
        Worker processes for embedding (see :func:`~moodshift.audio.embedders.embed_files`).
    attribute : str
        The label column the split is stratified by (``mood``).
    seed : int
        Seed of the train/val/test split.
    progress : bool
        Progress bars (files/s and time left) on stderr.

    Returns
    -------
    catalog : Catalog
        The catalogue as written to ``out``: embeddings (n, dim) float32, labels
        with the columns of :data:`COLUMNS` plus any added by ``labels``.
    report : LibraryReport

    Raises
    ------
    InputError
        ``audio_dir`` is not a folder or ``out`` lies where it cannot go.
    DataError
        No audio file could be embedded, or the labels file cannot be used.
    """
    from moodshift.audio.embedders.base import get_embedder
    from moodshift.audio.embedders.pipeline import (
        _Cache,
        embed_files,
        file_sha256,
        provenance_key,
    )
    from moodshift.audio.embedders.standardize import fit_standardizer
    from moodshift.data.catalog import SEPARATOR, Catalog

    out = Path(out).expanduser().resolve()
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else _default_cache(out)
    scan = scan_library(root=audio_dir, exclude=(out, cache, out.with_name(f".{out.name}.old")))
    root = scan.root
    if out == root or root.is_relative_to(out):
        raise InputError(f"--out {out} would replace the music folder; write it elsewhere.")
    if out.is_dir() and any(out.iterdir()) and not (out / "catalog.json").is_file():
        # The catalogue replaces its folder whole: never let that be someone's documents.
        raise InputError(f"--out {out} is a folder that is not a catalogue; give a new folder.")
    overrides = _read_overrides(Path(labels)) if labels else None
    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    provenance = emb.provenance()
    store = _Cache(cache, provenance)
    previous = _load_state(out, root)
    report = LibraryReport(
        empty=[str(p) for p in scan.empty], hidden=[str(p) for p in scan.hidden],
        non_audio=[str(p) for p in scan.non_audio],
        unreadable=[(str(p), r) for p, r in scan.unreadable],
    )  # fmt: skip

    # 1. What is new or changed (by size and time), its hash and tags.
    files: dict[str, dict[str, Any]] = {}
    rels = [p.relative_to(root).as_posix() for p in scan.audio]
    report.n_removed = len(set(previous) - set(rels))
    with tqdm(total=len(rels), disable=not progress, unit="file", desc="reading tags",
              dynamic_ncols=True) as bar:  # fmt: skip
        for rel, path in zip(rels, scan.audio, strict=True):
            bar.update(1)
            try:
                st = path.stat()
            except OSError as exc:
                report.unreadable.append((str(path), exc.strerror or str(exc)))
                continue
            old = previous.get(rel)
            if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                files[rel] = old
                continue
            entry: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            try:
                entry["sha256"] = file_sha256(path)
            except OSError as exc:
                report.unreadable.append((str(path), exc.strerror or str(exc)))
                continue
            try:
                entry["tags"], entry["duration"] = _probe(path)
            except Exception as exc:  # mutagen raises many types on damaged files
                log.info("no tags from %s: %s", path, exc)  # decoding decides if it is usable
                entry["tags"], entry["duration"] = {}, None
            files[rel] = entry

    # 2. Embeddings: from the cache by content hash, else computed (and cached at once).
    vectors: dict[str, np.ndarray] = {}
    todo: list[str] = []
    key = provenance_key(provenance)
    for rel, entry in files.items():
        if entry.get("failed") and entry.get("failed_with") == key:
            continue  # unchanged since it failed with this embedder: not retried
        entry.pop("failed", None)
        entry.pop("failed_with", None)
        vec = store.get(entry["sha256"])
        if vec is None:
            todo.append(rel)
        else:
            vectors[rel] = vec
    report.n_reused = len(vectors)
    if todo:
        run = embed_files([root / r for r in todo], embedder=emb, cache_dir=cache,
                          workers=workers, progress=progress, standardize=False)  # fmt: skip
        for i, vec in zip(run.ok_indices, run.embeddings, strict=True):
            vectors[todo[int(i)]] = vec
        report.n_embedded = len(run.ok_indices) - run.n_cached
        report.n_reused += run.n_cached
        for path, reason in run.failures:
            rel = Path(path).relative_to(root).as_posix()
            files[rel]["failed"], files[rel]["failed_with"] = reason, key
    report.failed = [(str(root / r), e["failed"]) for r, e in files.items() if e.get("failed")]

    # 3. The catalogue: one row per embedded file, sorted by path.
    ok = sorted(vectors)
    if not ok:
        _write_state_beside(out, root=root, files=files)
        raise DataError(
            f"no audio file in {root} could be embedded ({len(scan.audio)} audio files, "
            f"{len(report.failed)} unreadable: {report.failed[:1]}); check the folder."
        )
    rows = pd.DataFrame([_row(rel, files[rel], SEPARATOR) for rel in ok], columns=list(COLUMNS))
    if overrides is not None:
        rows, report.labels_unmatched = _apply_overrides(rows, overrides, labels=Path(labels),
                                                         root=root)  # fmt: skip
        dup = rows["track_id"][rows["track_id"].duplicated()].tolist()
        if dup:
            raise DataError(f"--labels gives the same track_id to several files: {dup[:3]}.")
    if attribute not in rows.columns:
        rows[attribute] = ""
    x = np.stack([vectors[r] for r in ok]).astype(np.float32)
    provenance = dict(provenance)
    if emb.needs_standardization:
        std = fit_standardizer(x) if len(x) >= 2 else None
        provenance["standardizer"] = None if std is None else std.to_dict()
        if std is not None:
            x = std.apply(x)
    provenance["library"] = {"root": str(root), "failed": len(report.failed),
                             "empty": len(report.empty)}  # fmt: skip
    cat = Catalog(embeddings=x, labels=rows, provenance=provenance, root=root)
    report.several_moods = sum(len((files[r].get("tags") or {}).get("mood", [])) > 1 for r in ok)
    labelled = rows[attribute].astype(str).str.strip() != ""
    report.n_tracks, report.n_labelled = len(rows), int(labelled.sum())
    report.n_unlabelled = report.n_tracks - report.n_labelled
    report.split = _try_split(cat, attribute=attribute, seed=seed)
    cat.save(out)
    _write_state(out, root=root, files=files)
    return cat, report


def _write_state_beside(out: Path, *, root: Path, files: dict[str, dict[str, Any]]) -> None:
    # Nothing to save as a catalogue, but remember the failures (not retried next time).
    if out.is_dir():
        _write_state(out, root=root, files=files)


def _row(rel: str, entry: dict[str, Any], sep: str) -> dict[str, str]:
    tags = entry.get("tags") or {}
    duration = entry.get("duration")
    return {
        "track_id": rel,
        "title": (tags.get("title") or [Path(rel).stem])[0],
        "artist": ", ".join(tags.get("artist", [])),
        "meta_album": (tags.get("album") or [""])[0],
        # Label values are compared as sets of words: one case for "Rock" and "rock".
        "genre": sep.join(dict.fromkeys(g.lower() for g in tags.get("genre", []))),
        # One mood per track (the catalogue's attribute is single-valued): the first tag.
        "mood": next(iter(m.lower() for m in tags.get("mood", [])), ""),
        "duration": f"{duration:.1f}" if duration else "",
        "audio_path": rel,
    }


def _try_split(cat: Any, *, attribute: str, seed: int) -> str:
    """Store a train/val/test split if the labels allow one; say what happened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no artist on some tracks: said in the report
            cat.assign_split(attribute=attribute, seed=seed)
    except DataError as exc:
        return f"none ({exc})"
    counts = cat.labels["split"].value_counts().to_dict()
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "test"))
