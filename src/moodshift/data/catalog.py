"""The catalogue: track embeddings, their labels, provenance and the split.

A saved catalogue is a folder::

    my_catalog/
      catalog.json        provenance (embedder name, version, dim), row count, split settings
      embeddings.npy      (n, d) float32, memory-mappable
      labels.parquet      track_id, label columns, reserved columns, and ``split``

Label columns may hold several values separated by ``|`` (``genre``,
``instruments``); the controlled attribute (``mood`` by default) must hold
exactly one value per track. Columns named in :data:`RESERVED_COLUMNS` or
starting with ``meta_`` are metadata: they are kept but never scored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moodshift._atomic import atomic_dir, resolve_dir
from moodshift._finite import read_json_file, require_finite
from moodshift.errors import (
    DataError,
    DimensionMismatchError,
    EmbedderMismatchError,
    FileFormatError,
    InputError,
    UnknownLabelError,
    UnknownTrackError,
    one_line,
)
from moodshift.values import SEPARATOR, l2_normalize, parse_values

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Columns that describe a track but are not labels to preserve or score.
RESERVED_COLUMNS = frozenset(
    {"track_id", "artist", "group", "title", "audio_path", "split", "duration", "path"}
)
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MTG_JAMENDO_MOODS = ("energetic", "calm", "happy", "sad")


#: The files a catalogue folder is made of; anything else in it belongs to others.
CATALOG_FILES = frozenset({"catalog.json", "embeddings.npy", "labels.parquet"})


def _maps_file(array: np.ndarray, path: Path) -> bool:
    """Whether ``array`` is the whole of a read-only memory map of ``path`` (so the file
    already holds exactly it; a slice or a copy does not count)."""
    m = array
    while m is not None and not isinstance(m, np.memmap):
        m = m.base if isinstance(m.base, np.ndarray) else None
    if m is None or m.mode != "r" or m.filename is None:
        return False
    same_view = (array.shape == m.shape and array.dtype == m.dtype
                 and array.ctypes.data == m.ctypes.data)  # fmt: skip
    try:
        return same_view and path.is_file() and os.path.samefile(m.filename, path)
    except OSError:
        return False


def _link(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (free, and ``src`` stays whole); copy where links fail."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: Path, new: Path, *, own: frozenset[str]) -> None:
    """Link (or copy) every entry of ``old`` not in ``own`` into ``new``.

    Links leave ``old`` whole until the swap, so a crash before it loses nothing.
    """
    for entry in old.iterdir():
        if entry.name in own:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link)
        else:
            _link(str(entry), str(new / entry.name))


@dataclass
class Catalog:
    """Embeddings plus labels for ``n`` tracks.

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d), float32
    labels : pd.DataFrame, n rows
        Must contain ``track_id``; row ``i`` describes ``embeddings[i]``.
    provenance : dict
        At least ``name``, ``version`` and ``dim`` of the embedder that made the vectors.
    root : Path, optional
        Folder that relative ``audio_path`` values are resolved against.
    """

    embeddings: np.ndarray
    labels: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    split_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = self.labels.reset_index(drop=True)
        validate(embeddings=self.embeddings, labels=self.labels)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.provenance.setdefault("dim", int(self.embeddings.shape[1]))
        self.provenance.setdefault("name", "unknown")
        self.provenance.setdefault("version", "unknown")
        if int(self.provenance["dim"]) != self.dim:
            raise EmbedderMismatchError(
                f"provenance says dim {self.provenance['dim']} but the embeddings have "
                f"{self.dim} columns; rebuild the catalogue (`moodshift import` or `embed`)."
            )
        self._id_index: dict[str, int] | None = None
        self._normed: np.ndarray | None = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def track_ids(self) -> np.ndarray:
        return self.labels["track_id"].to_numpy()

    @property
    def normalized(self) -> np.ndarray:
        """Unit-norm rows, shape (n, d): retrieval is by cosine similarity."""
        if self._normed is None:
            self._normed = l2_normalize(self.embeddings)
        return self._normed

    def label_columns(self) -> list[str]:
        """Columns that are labels (scored), in file order."""
        return [
            c
            for c in self.labels.columns
            if c not in RESERVED_COLUMNS and not c.startswith("meta_")
        ]

    def index_of(self, track_id: str) -> int:
        if self._id_index is None:
            self._id_index = {str(t): i for i, t in enumerate(self.track_ids)}
        try:
            return self._id_index[str(track_id)]
        except KeyError:
            examples = ", ".join(map(str, self.track_ids[:3]))
            raise UnknownTrackError(
                f"unknown track id {track_id!r}: the catalogue has {len(self)} tracks "
                f"(ids look like {examples}); check the id (the labels file lists them; "
                f"the server's GET /tracks?q= searches)."
            ) from None

    def value_sets(self, column: str) -> list[frozenset[str]]:
        """The label sets of one column, one per track."""
        if column not in self.labels.columns:
            raise UnknownLabelError(
                f"no label column {column!r}; the catalogue has {self.label_columns()}."
            )
        return [parse_values(v) for v in self.labels[column].tolist()]

    def classes(self, attribute: str, *, min_count: int = 2) -> tuple[list[str], np.ndarray]:
        """Class vocabulary (sorted) and per-track class index for a single-valued attribute.

        A track with an empty value is *unlabelled*: its index is ``-1``. Such
        tracks are kept, indexed and retrievable, but never count as any class:
        they are never training seeds or proxy targets, never evaluation seeds,
        and never enter a class centroid or a class count.

        Parameters
        ----------
        attribute : str
            The label column (``mood`` by default).
        min_count : int
            Fewest *labelled* tracks a class may have (training needs 2: a track
            and a neighbour; an evaluated part may pass 1).

        Returns
        -------
        vocab : list of str, shape (m,)
        y : np.ndarray, shape (n,), int64
            Index into ``vocab``, or ``-1`` for an unlabelled track.

        Raises
        ------
        DataError
            If a track has several values, no track is labelled, or a class has
            fewer than ``min_count`` labelled tracks.
        """
        sets = self.value_sets(attribute)
        bad = [i for i, s in enumerate(sets) if len(s) > 1]
        if bad:
            rows = ", ".join(map(str, bad[:10]))
            raise DataError(
                f"attribute {attribute!r} must hold at most one value per track, but "
                f"{len(bad)} rows have several (rows {rows}); keep one value per track "
                f"(or leave it empty for an unlabelled track), or choose another --attribute."
            )
        values = [next(iter(s)) if s else None for s in sets]
        vocab = sorted({v for v in values if v is not None})
        if not vocab:
            raise DataError(
                f"no track has a {attribute!r} label; label at least two tracks per class "
                f"(unlabelled tracks are fine alongside labelled ones)."
            )
        lookup = {v: i for i, v in enumerate(vocab)}
        y = np.fromiter(
            (lookup[v] if v is not None else -1 for v in values), dtype=np.int64, count=len(values)
        )
        counts = np.bincount(y[y >= 0], minlength=len(vocab))
        small = [f"{vocab[c]} ({counts[c]})" for c in range(len(vocab)) if counts[c] < min_count]
        if small:
            raise DataError(
                f"class(es) of {attribute!r} with fewer than {min_count} labelled tracks: "
                f"{', '.join(small)}; add tracks or drop these rows."
            )
        if len(vocab) < 2 and min_count > 1:
            raise DataError(
                f"attribute {attribute!r} has a single value {vocab}; nothing to transform to."
            )
        return vocab, y

    def labelled_rows(self, attribute: str = "mood") -> np.ndarray:
        """Rows that carry a value of ``attribute``, shape (n_labelled,), int64."""
        if attribute not in self.labels.columns:
            return np.zeros(0, dtype=np.int64)
        sets = self.value_sets(attribute)
        return np.fromiter((i for i, s in enumerate(sets) if s), dtype=np.int64)

    def label_summary(self, attribute: str = "mood") -> dict[str, int]:
        """How many tracks carry a value of ``attribute`` and how many do not.

        Returns
        -------
        dict
            ``{"labelled": int, "unlabelled": int}``.
        """
        if attribute not in self.labels.columns:
            return {"labelled": 0, "unlabelled": len(self)}
        empty = sum(1 for s in self.value_sets(attribute) if not s)
        return {"labelled": len(self) - empty, "unlabelled": empty}

    # ------------------------------------------------------------------ split
    @property
    def split(self) -> np.ndarray | None:
        if "split" not in self.labels.columns:
            return None
        return self.labels["split"].to_numpy()

    def split_indices(self, part: str) -> np.ndarray:
        if part not in SPLITS:
            raise InputError(f"unknown split {part!r}; use one of {SPLITS}.")
        split = self.split
        if split is None:
            raise DataError(
                "this catalogue has no split; run `moodshift import` again (it stores one) "
                "or call Catalog.assign_split()."
            )
        return np.flatnonzero(split == part)

    def assign_split(
        self,
        *,
        attribute: str = "mood",
        seed: int = 0,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
    ) -> None:
        """Store a deterministic train/val/test split in the ``split`` column."""
        _, y = self.classes(attribute)
        # Unlabelled tracks form a stratum of their own, so every part gets its share.
        y = y + 1
        artists = self.labels["artist"].to_numpy(dtype=object) if "artist" in self.labels else None
        self.labels["split"] = make_split(y=y, groups=artists, seed=seed, fractions=fractions)
        self.split_info = {
            "attribute": attribute,
            "seed": seed,
            "fractions": list(fractions),
            "artist_disjoint": artists is not None,
        }

    def subset(self, indices: np.ndarray) -> Catalog:
        """A new catalogue of the given rows (same provenance)."""
        indices = np.asarray(indices)
        sub = Catalog(
            embeddings=self.embeddings[indices],
            labels=self.labels.iloc[indices].reset_index(drop=True),
            provenance=dict(self.provenance),
            root=self.root,
            split_info=dict(self.split_info),
        )
        return sub

    def audio_path(self, index: int) -> Path | None:
        """Absolute path of a track's audio, or None when the catalogue has none."""
        if "audio_path" not in self.labels.columns:
            return None
        value = self.labels["audio_path"].iat[index]
        if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value):
            return None
        p = Path(str(value))
        if not p.is_absolute() and self.root is not None:
            p = self.root / p
        return p

    def audio_file(self, index: int, *, roots: Sequence[str | Path] = ()) -> Path | None:
        """The real path of a track's audio when it may be played, else None.

        Only a regular file whose real path (every symlink resolved) lies inside the
        catalogue's audio root (:attr:`root`) or one of ``roots`` is playable: an
        ``audio_path`` such as ``/etc/passwd`` or ``../../etc/shadow`` is not.
        """
        path = self.audio_path(index)
        base = [self.root] if self.root is not None else []
        return None if path is None else file_inside(path, roots=[*base, *roots])

    def check_compatible(self, provenance: dict[str, Any], *, what: str) -> None:
        """Refuse to mix embedders: ``what`` (a model or index) must match this catalogue."""
        mine = (self.provenance.get("name"), str(self.provenance.get("version")), self.dim)
        theirs = (provenance.get("name"), str(provenance.get("version")), provenance.get("dim"))
        if theirs[2] is not None and int(theirs[2]) != self.dim:
            raise DimensionMismatchError(
                f"dimension mismatch: the {what} expects {theirs[2]}-d embeddings but the "
                f"catalogue has {self.dim}-d ones; use a {what} made for this catalogue."
            )
        if theirs[0] not in (None, "unknown") and mine[0] != "unknown" and mine[:2] != theirs[:2]:
            raise EmbedderMismatchError(
                f"the {what} was made with embedder {theirs[0]} {theirs[1]} but the catalogue "
                f"with {mine[0]} {mine[1]}; re-embed the catalogue or retrain the {what}."
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the catalogue folder atomically (a crash keeps the previous version).

        What else lives in the folder (a music library's ``library.json``, the index
        ``moodshift index`` built into it, ...) is carried into the new folder, so
        rewriting the labels (``moodshift label``, the page's panel) loses none of it;
        an index then reads as stale and is refused until it is rebuilt.
        """
        path = Path(path)
        with atomic_dir(path) as tmp:
            if path.is_dir():
                _carry_over(path, tmp, own=CATALOG_FILES)
            if _maps_file(self.embeddings, path / "embeddings.npy"):
                # A read-only map of the file being replaced: relabelling keeps the vectors,
                # so link them instead of rewriting n x d floats per label.
                _link(str(path / "embeddings.npy"), str(tmp / "embeddings.npy"))
            else:
                np.save(tmp / "embeddings.npy", self.embeddings, allow_pickle=False)
            self.labels.astype({c: "string" for c in self.labels.columns}).to_parquet(
                tmp / "labels.parquet", index=False
            )
            meta = {
                "format_version": FORMAT_VERSION,
                "n_tracks": len(self),
                "dim": self.dim,
                "provenance": self.provenance,
                "split": self.split_info,
                "label_columns": self.label_columns(),
                "root": str(self.root) if self.root is not None else None,
            }
            (tmp / "catalog.json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> Catalog:
        """Load a folder written by :meth:`save`."""
        path = resolve_dir(path)
        meta_path = path / "catalog.json"
        if not meta_path.is_file():
            raise FileFormatError(
                f"{path} is not a moodshift catalogue (no catalog.json); create one with "
                f"`moodshift import` or `moodshift embed`."
            )
        fix = "re-create it with `moodshift import` (or `moodshift embed`)"
        meta = read_json_file(meta_path, schema=_check_catalog_json, fix=fix)
        emb_path, labels_path = path / "embeddings.npy", path / "labels.parquet"
        try:
            emb = np.load(emb_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            what = "missing" if not emb_path.is_file() else f"unreadable ({one_line(exc)})"
            raise FileFormatError(f"{emb_path} is {what}; {fix}.") from None
        if not isinstance(emb, np.ndarray) or emb.ndim != 2 or emb.dtype.kind != "f":
            raise FileFormatError(
                f"{emb_path} holds {getattr(emb, 'shape', '?')} {getattr(emb, 'dtype', '')}; "
                f"expected an (n, dim) float array; {fix}."
            )
        if emb.shape != (meta["n_tracks"], meta["dim"]):
            raise FileFormatError(
                f"{emb_path} has shape {emb.shape} but catalog.json says "
                f"({meta['n_tracks']}, {meta['dim']}) (truncated or replaced); {fix}."
            )
        # One pass in chunks (measured 0.065 s for 200k x 512 float32 in memory or in the page
        # cache; reading from disk costs the read): a memory-mapped catalogue is never held
        # twice, and a NaN never reaches a score.
        require_finite(emb, path=emb_path, fix=fix)
        try:
            labels = pd.read_parquet(labels_path)
        except Exception as exc:  # pyarrow raises several unrelated types
            what = "missing" if not labels_path.is_file() else f"unreadable ({one_line(exc)})"
            raise FileFormatError(f"{labels_path} is {what}; {fix}.") from None
        if len(labels) != meta["n_tracks"]:
            raise FileFormatError(
                f"{labels_path} has {len(labels)} rows but catalog.json says "
                f"{meta['n_tracks']}; {fix}."
            )
        labels = labels.astype(object).where(labels.notna(), "")
        root = meta.get("root")
        return cls(
            embeddings=emb,
            labels=labels,
            provenance=meta.get("provenance", {}),
            root=Path(root) if root else path,
            split_info=meta.get("split", {}),
        )


# ---------------------------------------------------------------------- helpers
def file_inside(path: str | Path, *, roots: Sequence[str | Path]) -> Path | None:
    """``path``'s real path when it is a regular file inside one of ``roots``, else None.

    Symlinks are resolved on both sides, so a link that leads out of a root is refused.

    Parameters
    ----------
    path : str or Path
    roots : sequence of folders

    Returns
    -------
    Path or None
    """
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(os.path.realpath(r)) for r in roots):
        return None
    try:
        return real if stat.S_ISREG(os.stat(real).st_mode) else None
    except OSError:
        return None


def _check_catalog_json(meta: Any) -> str | None:
    """What is wrong with a loaded ``catalog.json`` (None: nothing)."""
    if not isinstance(meta, dict):
        return f"expected an object, got {type(meta).__name__}"
    for key in ("n_tracks", "dim"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            return f"{key!r} must be a positive integer, got {v!r}"
    prov = meta.get("provenance", {})
    if not isinstance(prov, dict):
        return "'provenance' must be an object"
    if "dim" in prov and prov["dim"] != meta["dim"]:
        return f"provenance dim {prov['dim']!r} differs from dim {meta['dim']}"
    if not isinstance(meta.get("split", {}), dict):
        return "'split' must be an object"
    if meta.get("root") is not None and not isinstance(meta["root"], str):
        return "'root' must be a string or null"
    return None


def validate(*, embeddings: np.ndarray, labels: pd.DataFrame) -> None:
    """Check embeddings and labels together; raise :class:`DataError` naming the rows."""
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise DataError(f"embeddings must be a 2-D array (n_tracks, dim), got shape {shape}.")
    if embeddings.shape[0] != len(labels):
        raise DataError(
            f"row-count mismatch: {embeddings.shape[0]} embeddings but {len(labels)} label rows; "
            f"row i of the labels must describe row i of the embeddings."
        )
    if embeddings.shape[0] == 0:
        raise DataError("the catalogue is empty; give at least one track per class.")
    if "track_id" not in labels.columns:
        raise DataError(
            f"the labels have no 'track_id' column (columns: {list(labels.columns)}); add it."
        )
    if not np.issubdtype(embeddings.dtype, np.number):
        raise DataError(f"embeddings must be numeric, got dtype {embeddings.dtype}.")
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"{bad.size} embedding rows contain NaN or inf (rows {', '.join(map(str, bad[:10]))}"
            f"{', ...' if bad.size > 10 else ''}); re-embed or drop those tracks."
        )
    zero = ~np.any(embeddings != 0, axis=1)
    if zero.any():
        bad = np.flatnonzero(zero)
        raise DataError(
            f"{bad.size} embedding rows are all zero (rows {', '.join(map(str, bad[:10]))}); "
            f"cosine similarity is undefined for them: re-embed or drop those tracks."
        )
    ids = labels["track_id"].astype(str)
    dup = ids[ids.duplicated(keep=False)]
    if not dup.empty:
        shown = sorted(set(dup.tolist()))[:5]
        raise DataError(
            f"duplicate track ids: {', '.join(shown)} ({dup.size} rows); track ids must be unique."
        )


def make_split(
    *,
    y: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """Deterministic train/val/test assignment, stratified by ``y``, group-disjoint.

    Without groups every class is shuffled and cut by ``fractions``. With groups
    (artists) whole groups are placed, largest first, in the part whose per-class
    counts lag their targets most, so all tracks of one artist share a part while
    class proportions stay close to ``fractions``. A track whose group is unknown
    (empty, None, NaN, ``"nan"``, ``"None"``) is a group of its own: it cannot
    share an artist with any other track, and the known artists stay disjoint.

    Parameters
    ----------
    y : np.ndarray, shape (n,), int
        Class index per track.
    groups : np.ndarray, shape (n,), optional
        Artist (or other group) per track.
    seed : int
    fractions : three floats summing to 1

    Returns
    -------
    np.ndarray, shape (n,), dtype object
        ``"train"``, ``"val"`` or ``"test"`` per track.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1: {frac}")
    rng = np.random.default_rng(seed)
    n = len(y)
    out = np.empty(n, dtype=object)
    n_cls = int(y.max()) + 1
    if groups is None:
        for c in range(n_cls):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = np.round(np.cumsum(frac)[:2] * idx.size).astype(int)
            # Keep at least one track of each class in val and test when possible.
            if idx.size >= 3:
                cuts[0] = min(cuts[0], idx.size - 2)
                cuts[1] = min(max(cuts[1], cuts[0] + 1), idx.size - 1)
            for part, chunk in zip(SPLITS, np.split(idx, cuts), strict=True):
                out[chunk] = part
        return out
    if len(groups) != n:
        raise InputError(f"groups has {len(groups)} entries but y has {n}; give one per track.")
    names = pd.Series(groups, dtype=object)
    unknown = (
        names.isna().to_numpy()
        | names.astype(str).str.strip().isin(["", "nan", "None", "NaN", "<NA>"]).to_numpy()
    )
    if unknown.any():
        # A control character cannot appear in an artist name read from CSV or Parquet
        # cells we wrote, so these keys never collide with a real artist.
        names = names.astype(str)
        names[unknown] = [f"\x00unknown-{i}" for i in np.flatnonzero(unknown)]
    codes, uniq = pd.factorize(names)
    per_group = np.zeros((len(uniq), n_cls), dtype=np.int64)
    np.add.at(per_group, (codes, y), 1)
    target = frac[:, None] * np.bincount(y, minlength=n_cls)[None, :]
    have = np.zeros((3, n_cls))
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-per_group[order].sum(axis=1), kind="stable")]
    assign = np.empty(len(uniq), dtype=np.int64)
    for g in order:
        deficit = ((target - have) * per_group[g][None, :]).sum(axis=1) / max(1, per_group[g].sum())
        part = int(np.argmax(deficit))
        assign[g] = part
        have[part] += per_group[g]
    parts = np.array(SPLITS, dtype=object)
    return parts[assign[codes]]


# ---------------------------------------------------------------------- import
def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a labels CSV (UTF-8) or Parquet file as strings."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"labels file {path} does not exist; check the --labels path.")
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise FileFormatError(f"{path} is not a readable Parquet file ({exc}).") from exc
        return df
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path} is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        ) from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise FileFormatError(f"{path} is not a well-formed CSV ({exc}).") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_embeddings(path: str | Path) -> np.ndarray:
    """Read an ``.npy`` (or ``.npz`` with one array) embedding matrix."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"embeddings file {path} does not exist; check --embeddings.")
    try:
        arr = np.load(path, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            keys = list(arr.keys())
            if len(keys) != 1:
                raise FileFormatError(f"{path} holds {keys}; give an .npz with a single array.")
            arr = arr[keys[0]]
    except FileFormatError:
        raise
    except Exception as exc:
        raise FileFormatError(
            f"{path} is not a readable .npy file ({exc}); save it with numpy.save."
        ) from exc
    return np.asarray(arr)


def from_parquet_with_embeddings(
    path: str | Path, *, column: str = "embedding"
) -> tuple[np.ndarray, pd.DataFrame]:
    """Split a Parquet table with a list column of embeddings into (matrix, labels)."""
    df = read_labels(path)
    if column not in df.columns:
        raise FileFormatError(
            f"{path} has no {column!r} column (columns: {list(df.columns)}); "
            f"name the list column with --embedding-column."
        )
    try:
        emb = np.stack([np.asarray(v, dtype=np.float32) for v in df[column]])
    except ValueError as exc:
        raise DataError(f"the {column!r} lists do not all have the same length ({exc}).") from exc
    return emb, df.drop(columns=[column]).astype(str)


def import_catalog(
    *,
    labels: str | Path | None = None,
    embeddings: str | Path | None = None,
    mtg_jamendo: str | Path | None = None,
    attribute: str = "mood",
    embedder: dict[str, Any] | None = None,
    seed: int = 0,
    embedding_column: str = "embedding",
) -> Catalog:
    """Build a catalogue from user files and assign its split.

    Parameters
    ----------
    labels : path
        CSV (``track_id, mood, genre, instruments[, artist, ...]``) or Parquet. A
        Parquet file may carry the embeddings as a list column (then ``embeddings``
        may be omitted).
    embeddings : path
        ``.npy`` of shape (n, d); row ``i`` belongs to label row ``i``. With
        ``mtg_jamendo``, row ``i`` belongs to the ``i``-th track of the TSVs' union
        in first-seen order unless ``labels`` gives a ``track_id`` order.
    mtg_jamendo : path, optional
        Folder holding MTG-Jamendo's ``autotagging_*.tsv`` files; tracks with
        exactly one of the target moods are kept, the others counted in
        ``provenance["skipped_on_import"]``.
    attribute : str
        Label column the split is stratified by (``mood``).
    embedder : dict, optional
        Provenance of the embeddings (``name``, ``version``); ``dim`` is taken
        from the embeddings. Default ``unknown``.
    seed : int
        Seed of the split.
    embedding_column : str
        Name of the Parquet list column holding the embeddings.

    Returns
    -------
    Catalog
        ``n`` tracks, embeddings of shape (n, d), with the ``split`` column set.

    Raises
    ------
    InputError
        When neither ``labels`` nor ``mtg_jamendo`` is given, or ``mtg_jamendo``
        comes without ``embeddings``.
    DataError
        When the labels lack ``track_id`` or ``attribute``, row counts differ,
        or the catalogue's contents are invalid (NaN rows, duplicate ids, tiny
        classes).
    FileFormatError
        When a file is unreadable or of the wrong format.
    """
    skipped: dict[str, int] = {}
    if mtg_jamendo is not None:
        df, skipped, keep = read_mtg_jamendo(mtg_jamendo)
        if embeddings is None:
            raise InputError("--mtg-jamendo needs --embeddings (one row per track of the TSVs).")
        emb = read_embeddings(embeddings)
        if labels is not None:
            order = read_labels(labels)["track_id"].astype(str).tolist()
            pos = {t: i for i, t in enumerate(order)}
            missing = [t for t in df["track_id"] if t not in pos]
            if missing:
                raise DataError(
                    f"{len(missing)} MTG-Jamendo tracks have no embedding row in {labels} "
                    f"(e.g. {missing[:3]}); embed them or drop them."
                )
            rows = np.array([pos[t] for t in df["track_id"]])
        else:
            rows = keep
        if emb.ndim != 2 or rows.max(initial=-1) >= emb.shape[0]:
            raise DataError(
                f"row-count mismatch: the TSVs list {len(keep) + sum(skipped.values())} tracks "
                f"but {embeddings} has {emb.shape[0]} rows."
            )
        emb = emb[rows]
    elif labels is not None:
        if embeddings is None:
            emb, df = from_parquet_with_embeddings(labels, column=embedding_column)
        else:
            df = read_labels(labels)
            emb = read_embeddings(embeddings)
    else:
        raise InputError("give --labels (and --embeddings), or --mtg-jamendo with --embeddings.")
    missing_cols = [c for c in ("track_id", attribute) if c not in df.columns]
    if missing_cols:
        raise DataError(
            f"the labels lack column(s) {missing_cols} (have {list(df.columns)}); "
            f"expected at least track_id, {attribute}, genre, instruments."
        )
    df = df.fillna("").astype(str)
    provenance = dict(embedder or {})
    provenance.setdefault("name", "unknown")
    provenance.setdefault("version", "unknown")
    if emb.ndim == 2:
        provenance.setdefault("dim", int(emb.shape[1]))
    cat = Catalog(
        embeddings=np.asarray(emb, dtype=np.float32) if emb.ndim == 2 else emb,
        labels=df,
        provenance=provenance,
    )
    if skipped:
        cat.provenance["skipped_on_import"] = skipped
    cat.assign_split(attribute=attribute, seed=seed)
    return cat


def read_mtg_jamendo(
    folder: str | Path, *, moods: Iterable[str] = MTG_JAMENDO_MOODS
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """Read MTG-Jamendo's autotagging TSVs into the labels table.

    Keeps tracks with exactly one of ``moods``; counts the others. Returns the
    labels (``track_id, mood, genre, instruments, artist, album, path``), the
    skip counts, and the kept tracks' positions in the union of all TSVs
    (first-seen order), which is the row order of a matching embedding file.
    """
    folder = Path(folder)
    files = {
        "mood": folder / "autotagging_moodtheme.tsv",
        "genre": folder / "autotagging_genre.tsv",
        "instruments": folder / "autotagging_instrument.tsv",
    }
    if not files["mood"].is_file():
        raise FileFormatError(
            f"{files['mood']} not found; --mtg-jamendo wants the folder holding "
            f"autotagging_moodtheme.tsv (and autotagging_genre.tsv, autotagging_instrument.tsv)."
        )
    prefixes = {"mood": "mood/theme---", "genre": "genre---", "instruments": "instrument---"}
    tags: dict[str, dict[str, list[str]]] = {k: {} for k in files}
    meta: dict[str, tuple[str, str, str]] = {}
    order: list[str] = []
    for key, path in files.items():
        if not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise FileFormatError(f"{path} is not UTF-8 ({exc}).") from None
        header = lines[0].split("\t") if lines else []
        if header[:3] != ["TRACK_ID", "ARTIST_ID", "ALBUM_ID"]:
            raise FileFormatError(
                f"{path} does not look like an MTG-Jamendo tag file (header {header[:6]}); "
                f"expected TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS."
            )
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 5:
                raise FileFormatError(f"{path}:{lineno} has {len(fields)} fields; expected >= 5.")
            tid = fields[0]
            if tid not in meta:
                meta[tid] = (fields[1], fields[2], fields[3])
                order.append(tid)
            values = [f[len(prefixes[key]) :] for f in fields[5:] if f.startswith(prefixes[key])]
            tags[key].setdefault(tid, []).extend(values)
    mood_set = set(moods)
    rows = []
    keep: list[int] = []
    skipped = {"no_target_mood": 0, "several_target_moods": 0}
    for pos, tid in enumerate(order):
        mine = [m for m in tags["mood"].get(tid, []) if m in mood_set]
        if len(set(mine)) == 0:
            skipped["no_target_mood"] += 1
            continue
        if len(set(mine)) > 1:
            skipped["several_target_moods"] += 1
            continue
        artist, album, p = meta[tid]
        rows.append(
            {
                "track_id": tid,
                "mood": mine[0],
                "genre": SEPARATOR.join(sorted(set(tags["genre"].get(tid, [])))),
                "instruments": SEPARATOR.join(sorted(set(tags["instruments"].get(tid, [])))),
                "artist": artist,
                "meta_album": album,
                "path": p,
            }
        )
        keep.append(pos)
    log.info("MTG-Jamendo: kept %d tracks, skipped %s", len(rows), skipped)
    return pd.DataFrame(rows), skipped, np.asarray(keep, dtype=np.int64)


def concat_catalogs(catalogs: Sequence[Catalog], *, prefixes: Sequence[str]) -> Catalog:
    """One catalogue of several made with the same embedder (e.g. two corpus renders).

    Track ids get their part's prefix so they stay unique; relative audio paths
    become absolute (each part has its own root); the split is not kept.

    Parameters
    ----------
    catalogs : sequence of Catalog
    prefixes : sequence of str
        One per catalogue, e.g. ``("classic_", "wide_")``.

    Returns
    -------
    Catalog

    Raises
    ------
    InputError
        When the counts differ or the parts were made with different embedders.
    """
    if len(catalogs) != len(prefixes) or not catalogs:
        raise InputError("give one prefix per catalogue, and at least one catalogue")
    first = catalogs[0]
    frames = []
    for cat, prefix in zip(catalogs, prefixes, strict=True):
        cat.check_compatible(first.provenance, what="catalogue")
        df = cat.labels.drop(columns=["split"], errors="ignore").copy()
        df["track_id"] = prefix + df["track_id"].astype(str)
        if "audio_path" in df.columns and cat.root is not None:
            df["audio_path"] = [
                str(Path(p) if Path(str(p)).is_absolute() else Path(cat.root) / str(p))
                if isinstance(p, str) and p else p
                for p in df["audio_path"]
            ]  # fmt: skip
        frames.append(df)
    return Catalog(embeddings=np.vstack([c.embeddings for c in catalogs]),
                   labels=pd.concat(frames, ignore_index=True),
                   provenance=dict(first.provenance))  # fmt: skip
