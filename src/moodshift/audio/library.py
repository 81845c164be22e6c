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
audio file (size, modification time, SHA-256 of its audio bytes with the tags
left out (:mod:`moodshift.audio.audiohash`), tags, track id, or the reason it
failed). A re-run re-reads only the files whose size or time changed, finds
every embedding of unchanged audio in the embedding cache keyed by that hash
(:mod:`moodshift.audio.embedders.pipeline`), embeds only files whose audio is
new or changed and drops deleted ones. So a retagged file only has its tags
read again, and a moved or renamed file (same audio, a path that is new, the
old one gone) keeps its track id: playlists and labels survive a reorganised folder.

What is read: regular files only. A link whose target leaves the folder is
skipped and counted (``follow_symlinks`` keeps it); devices, FIFOs and sockets
are never opened; a file whose name is not UTF-8 or holds control characters
is counted as unusable (no URL or playlist could name it); each tag value is
cut to :data:`TAG_MAX_CHARS` characters (counted in the report).

Each embedding is written to the cache atomically as soon as it is computed,
so a run killed half-way keeps every finished file; the catalogue and
``library.json`` are replaced atomically at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mutagen
import numpy as np
import pandas as pd
from mutagen.id3 import ID3, TMOO
from mutagen.mp4 import MP4FreeForm, MP4Tags
from tqdm.auto import tqdm

from moodshift._atomic import resolve_dir, write_text
from moodshift.audio.audiohash import audio_sha256
from moodshift.audio.embedders.base import get_embedder
from moodshift.audio.embedders.pipeline import (
    DEFAULT_EXCERPTS,
    EmbeddingCache,
    Excerpts,
    embed_files,
    provenance_key,
)
from moodshift.audio.embedders.standardize import fit_standardizer
from moodshift.data.catalog import SEPARATOR, Catalog, read_labels
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
# 2: entries keyed by the audio hash (tags left out) and holding their track id.
STATE_VERSION = 2
#: Columns of a library catalogue, in order (``meta_*`` columns are shown, not scored).
COLUMNS = ("track_id", "title", "artist", "meta_album", "genre", "mood", "duration", "audio_path")
# WMA (ASF) attribute names of the tags read (Title is "Title" already).
_ASF_KEYS = {"author": "artist", "wm/albumtitle": "album", "wm/genre": "genre",
             "wm/mood": "mood"}  # fmt: skip
# Several values in one tag (ID3 v2.3 taggers, "Rock; Pop") are split on these.
_VALUE_SEPARATORS = (";", "|", "\x00")


# --------------------------------------------------------------------------- scanning
#: Longest text kept of one tag value, in characters (longer values are cut and counted:
#: a 1 MB title would otherwise be stored and served whole).
TAG_MAX_CHARS = 1000


def control_characters(text: str) -> list[str]:
    """The control characters (Unicode Cc, line and paragraph separators) in ``text``.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of str
        Each offending character as ``U+XXXX``, in order of appearance, no repeats.
    """
    found = [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    return list(dict.fromkeys(f"U+{ord(c):04X}" for c in found))


def shown(path: str | Path) -> str:
    """A path as one printable line: undecodable bytes as ``\\xff``, controls escaped."""
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return "".join(c.encode("unicode_escape").decode() if control_characters(c) else c
                   for c in text)  # fmt: skip


def _name_problem(rel: str) -> str | None:
    """Why a relative path cannot become a track id, or None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (surrogate-escaped by os.walk)
        return "the file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
    bad = control_characters(rel)
    if bad:
        return (f"the file name holds control characters ({', '.join(bad)}), which no link "
                "or playlist can carry; rename it")  # fmt: skip
    return None


@dataclass
class ScanResult:
    """What a walk of the library folder found.

    Attributes
    ----------
    audio : list of Path
        Non-empty regular files with an audio extension, sorted by relative path.
    empty : list of Path
        Zero-length audio files (never decoded).
    hidden : list of Path
        Hidden files and folders (name starting with "."); folders are not entered.
    non_audio : list of Path
        Other files (covers, playlists, text, ...).
    unreadable : list of (Path, str)
        Entries that could not be listed or stat'ed.
    bad_names : list of (Path, str)
        Audio files whose name cannot be a track id (not UTF-8, or holding
        control characters), with the reason.
    outside : list of Path
        Symbolic links whose target lies outside the folder (skipped unless
        ``follow_symlinks``).
    special : list of Path
        Devices, FIFOs and sockets: never opened.
    """

    root: Path
    audio: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    non_audio: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    bad_names: list[tuple[Path, str]] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)
    special: list[Path] = field(default_factory=list)


def scan_library(
    *, root: str | Path, exclude: Iterable[str | Path] = (), follow_symlinks: bool = False
) -> ScanResult:
    """Walk ``root`` recursively and sort its files into audio, empty, hidden, non-audio.

    Only regular files are ever listed as audio: a link is judged by its target,
    and a device, FIFO or socket is set aside without being opened (reading a
    FIFO would block, reading a device never ends). Linked folders are not entered.

    Parameters
    ----------
    root : path
        The music folder.
    exclude : paths
        Folders to skip (the catalogue and cache when they lie inside the library).
    follow_symlinks : bool
        Keep linked files whose target lies outside ``root`` (by default they are
        skipped and counted in ``outside``: a link to ``/etc/passwd`` is not music).

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
            problem = _name_problem(p.relative_to(root).as_posix())
            if problem:
                res.bad_names.append((p, problem))
                continue
            try:
                leaves = p.is_symlink() and not p.resolve(strict=True).is_relative_to(root)
                if leaves and not follow_symlinks:
                    res.outside.append(p)
                    continue
                st = p.stat()  # the target's kind and size; nothing is opened
            except (OSError, RuntimeError) as exc:  # a dangling link or a loop, permissions
                res.unreadable.append((p, getattr(exc, "strerror", None) or str(exc)))
                continue
            if not stat.S_ISREG(st.st_mode):
                res.special.append(p)
                continue
            (res.audio if st.st_size > 0 else res.empty).append(p)
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
        values (multi-valued frames and ``;``-separated values are split), each
        value cut to :data:`TAG_MAX_CHARS` characters; empty when the file has no tags.

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


def _probe(path: str | Path) -> tuple[dict[str, list[str]], float | None, int]:
    """Tags (as :func:`read_tags`), duration in seconds (None if unknown), values cut.

    Each value is cut to :data:`TAG_MAX_CHARS` characters; the third item counts
    the values that were longer.
    """

    f = mutagen.File(str(path))
    length = getattr(getattr(f, "info", None), "length", None)
    duration = float(length) if length else None
    tags = getattr(f, "tags", None) if f is not None else None
    if not tags:
        return {}, duration, 0
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
    out = {k: vals for k, v in raw.items() if (vals := _split_values(v))}
    n_cut = sum(len(v) > TAG_MAX_CHARS for vals in out.values() for v in vals)
    cut = {k: list(dict.fromkeys(v[:TAG_MAX_CHARS] for v in vals)) for k, vals in out.items()}
    return cut, duration, n_cut


# --------------------------------------------------------------------------- labels CSV
def _read_overrides(labels: Path) -> pd.DataFrame:

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
    if state.get("format_version") not in (1, STATE_VERSION) or state.get("root") != str(root):
        return {}  # another library or format: start afresh (embeddings stay in the cache)
    files = dict(state.get("files", {}))
    if state.get("format_version") == 1:
        # Version 1 keyed the cache on the whole file's bytes: every file is re-hashed once,
        # and its embedding is found under the old key (``legacy_sha256``) and re-filed.
        files = {rel: {"legacy_sha256": e["sha256"], "track_id": rel}
                 for rel, e in files.items() if isinstance(e, dict) and "sha256" in e}  # fmt: skip
    return files


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
    n_moved : int
        Files moved or renamed since the last run (same audio): they kept their track id.
    bad_names : list of (str, str)
        Audio files whose name cannot be a track id, with the reason (printable form).
    outside, special : list of str
        Links leaving the folder (without ``follow_symlinks``); devices, FIFOs, sockets.
    tags_cut : int
        Tag values longer than :data:`TAG_MAX_CHARS` characters, cut to that length.
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
    n_moved: int = 0
    bad_names: list[tuple[str, str]] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    tags_cut: int = 0

    def summary(self) -> str:
        """A few lines for the terminal."""
        ext = Counter(Path(p).suffix.lower() or "(none)" for p in self.non_audio)
        kinds = ", ".join(f"{e} {c}" for e, c in ext.most_common(6))
        lines = [
            f"{self.n_tracks} tracks: {self.n_labelled} labelled, {self.n_unlabelled} without "
            f"a mood; {self.n_embedded} embedded now, {self.n_reused} from the cache, "
            f"{self.n_removed} removed since the last run"
            + (f", {self.n_moved} moved (ids kept)" if self.n_moved else ""),
            f"skipped: {len(self.failed)} unreadable audio, {len(self.empty)} empty, "
            f"{len(self.hidden)} hidden, {len(self.non_audio)} non-audio"
            + (f" ({kinds})" if kinds else "")
            + (f", {len(self.unreadable)} not listable" if self.unreadable else ""),
        ]
        if self.bad_names:
            lines.append(f"{len(self.bad_names)} files with unusable names (not UTF-8 or "
                         f"holding control characters): rename them")  # fmt: skip
        if self.outside:
            lines.append(f"{len(self.outside)} links to files outside the folder skipped "
                         "(--follow-symlinks to keep them)")  # fmt: skip
        if self.special:
            lines.append(f"{len(self.special)} devices, FIFOs or sockets skipped (never opened)")
        if self.tags_cut:
            lines.append(f"{self.tags_cut} tag values longer than {TAG_MAX_CHARS} characters: "
                         "cut to that length")  # fmt: skip
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
    follow_symlinks: bool = False,
    excerpts: Excerpts | None = DEFAULT_EXCERPTS,
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
    follow_symlinks : bool
        Keep linked files whose target lies outside the folder (skipped by default).
    excerpts : Excerpts or None, optional
        Embed windows of long tracks rather than whole tracks
        (:class:`~moodshift.audio.embedders.pipeline.Excerpts`); None: whole tracks.
        Default: :data:`~moodshift.audio.embedders.pipeline.DEFAULT_EXCERPTS`
        (three 30 s windows).

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

    out = Path(out).expanduser().resolve()
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else _default_cache(out)
    scan = scan_library(root=audio_dir, exclude=(out, cache, out.with_name(f".{out.name}.old")),
                        follow_symlinks=follow_symlinks)  # fmt: skip
    root = scan.root
    if out == root or root.is_relative_to(out):
        raise InputError(f"--out {out} would replace the music folder; write it elsewhere.")
    if out.is_dir() and any(out.iterdir()) and not (out / "catalog.json").is_file():
        # The catalogue replaces its folder whole: never let that be someone's documents.
        raise InputError(f"--out {out} is a folder that is not a catalogue; give a new folder.")
    overrides = _read_overrides(Path(labels)) if labels else None
    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    provenance = emb.provenance()
    if excerpts is not None:
        provenance["excerpts"] = excerpts.to_dict()
    store = EmbeddingCache(cache, provenance)
    previous = _load_state(out, root)
    report = LibraryReport(
        empty=[shown(p) for p in scan.empty], hidden=[shown(p) for p in scan.hidden],
        non_audio=[shown(p) for p in scan.non_audio],
        unreadable=[(shown(p), r) for p, r in scan.unreadable],
        bad_names=[(shown(p), r) for p, r in scan.bad_names],
        outside=[shown(p) for p in scan.outside], special=[shown(p) for p in scan.special],
    )  # fmt: skip

    # 1. What is new or changed (by size and time): its audio hash and tags. A retagged
    #    file has a new time but the same audio hash, so only its tags are read again.
    files: dict[str, dict[str, Any]] = {}
    rels = [p.relative_to(root).as_posix() for p in scan.audio]
    with tqdm(total=len(rels), disable=not progress, unit="file", desc="reading tags",
              dynamic_ncols=True) as bar:  # fmt: skip
        for rel, path in zip(rels, scan.audio, strict=True):
            bar.update(1)
            try:
                st = path.stat()
            except OSError as exc:
                report.unreadable.append((shown(path), exc.strerror or str(exc)))
                continue
            old = previous.get(rel) or {}
            if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                files[rel] = old
                continue
            entry: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            try:
                entry["audio_sha256"] = audio_sha256(path)
            except OSError as exc:
                report.unreadable.append((shown(path), exc.strerror or str(exc)))
                continue
            try:
                entry["tags"], entry["duration"], entry["tags_cut"] = _probe(path)
            except Exception as exc:  # mutagen raises many types on damaged files
                log.info("no tags from %s: %s", shown(path), exc)  # decoding decides
                entry["tags"], entry["duration"], entry["tags_cut"] = {}, None, 0
            for k in ("track_id", "legacy_sha256"):  # same path: same track
                if k in old:
                    entry[k] = old[k]
            if old.get("audio_sha256") == entry["audio_sha256"] and "failed" in old:
                entry["failed"], entry["failed_with"] = old["failed"], old.get("failed_with")
            files[rel] = entry
    report.n_moved, report.n_removed = _assign_track_ids(files, previous)

    # 2. Embeddings: from the cache by audio hash, else computed (and cached at once).
    vectors: dict[str, np.ndarray] = {}
    todo: list[str] = []
    key = provenance_key(provenance)
    for rel, entry in files.items():
        if entry.get("failed") and entry.get("failed_with") == key:
            continue  # unchanged since it failed with this embedder: not retried
        entry.pop("failed", None)
        entry.pop("failed_with", None)
        vec = store.get(entry["audio_sha256"])
        legacy = entry.pop("legacy_sha256", None)
        if vec is None and legacy:  # embedded before the audio hash: re-file, not recompute
            vec = store.get(legacy)
            if vec is not None:
                store.put(entry["audio_sha256"], vec)
        if vec is None:
            todo.append(rel)
        else:
            vectors[rel] = vec
    report.n_reused = len(vectors)
    if todo:
        run = embed_files([root / r for r in todo], embedder=emb, cache_dir=cache,
                          workers=workers, progress=progress, standardize=False,
                          excerpts=excerpts)  # fmt: skip
        for i, vec in zip(run.ok_indices, run.embeddings, strict=True):
            vectors[todo[int(i)]] = vec
        report.n_embedded = len(run.ok_indices) - run.n_cached
        report.n_reused += run.n_cached
        for path, reason in run.failures:
            rel = Path(path).relative_to(root).as_posix()
            files[rel]["failed"], files[rel]["failed_with"] = reason, key
    report.failed = [(shown(root / r), e["failed"]) for r, e in files.items() if e.get("failed")]

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
        bad = [t for t in rows["track_id"] if control_characters(t)]
        if bad:
            raise DataError(f"--labels gives track ids with control characters ({bad[0]!r}), "
                            "which no link or playlist can carry; remove them.")  # fmt: skip
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
    report.tags_cut = sum(int(files[r].get("tags_cut") or 0) for r in ok)
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
        "track_id": entry.get("track_id", rel),
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


def _assign_track_ids(files: dict[str, dict[str, Any]],
                      previous: dict[str, dict[str, Any]]) -> tuple[int, int]:  # fmt: skip
    """Give each file its track id: kept for a known path, inherited by a moved file.

    A file at a new path whose audio hash equals that of a file gone since the
    last run is that file moved or renamed: it takes over the old track id, so
    playlists and labels that name it still work. Everything else is named by
    its path. Ids stay unique: a new file at a path whose id a moved file
    already holds gets its audio hash appended.

    Returns
    -------
    n_moved, n_removed : int
        Files that inherited an id; previous files gone without a successor.
    """
    gone: dict[str, list[str]] = {}
    for rel in sorted(set(previous) - set(files)):
        old = previous[rel]
        if old.get("audio_sha256"):
            gone.setdefault(old["audio_sha256"], []).append(old.get("track_id", rel))
    n_gone = len(set(previous) - set(files))
    new = sorted(r for r in files if "track_id" not in files[r])
    n_moved = 0
    for rel in new:
        heirs = gone.get(files[rel]["audio_sha256"])
        if heirs:
            files[rel]["track_id"] = heirs.pop(0)
            n_moved += 1
    taken = {e["track_id"] for e in files.values() if "track_id" in e}
    for rel in new:
        entry = files[rel]
        if "track_id" not in entry:
            tid = rel if rel not in taken else f"{rel}#{entry['audio_sha256'][:8]}"
            entry["track_id"] = tid
            taken.add(tid)
    return n_moved, n_gone - n_moved


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
