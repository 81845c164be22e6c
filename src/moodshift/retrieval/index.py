"""FAISS vector indexes with label filtering inside the search.

``moodshift index --catalog C`` writes ``C/index/``::

    index/
      index.faiss           the FAISS index (memory-mapped on load where FAISS allows)
      index.json            kind, params, n, dim, recall@10, build seconds,
                            the catalogue's provenance and fingerprint
      postings_rows.npy     (optional) row ids per label value, concatenated (int32/int64)
      postings_offsets.npy  (optional) where each label value's rows start, shape (v + 1,)

Kinds
-----
``flat``  exact inner product (``IndexFlatIP``); the default below
          :data:`EXACT_MAX_ROWS` tracks, where a scan costs well under a millisecond.
``hnsw``  ``IndexHNSWFlat`` graph; the default above. ``efSearch`` is chosen at build
          time as the smallest value whose recall@10 against exact search reaches
          ``target_recall`` on a sample of queries.
``ivf``   ``IndexIVFFlat`` (``nlist`` ~ 4 sqrt(n)); ``nprobe`` chosen the same way.

Filtering
---------
``search(queries, k=, allowed=mask)`` passes the mask to FAISS as an
``IDSelectorBitmap``: rows outside it are never candidates, so a filtered query
returns up to ``k`` allowed rows (not "top k, then drop"). Approximate indexes
degrade when few rows are allowed (HNSW walks a graph whose neighbours are mostly
filtered out; IVF probes lists that hold few allowed rows), and even more when
the allowed rows are a region of the space, as a genre or a mood is: measured on
a 100k-track synthetic catalogue (256-d, efSearch 32), a random 20 % filter kept
recall@10 0.96 with efSearch 128, a genre holding 17 % of the tracks only 0.64.

Rules:

1. When the number of allowed rows is at most ``max(exact_rows, exact_fraction *
   n)`` (defaults 20,000 rows and 2 %), the query is answered exactly over the
   allowed rows, by the index's flat storage with the same bitmap (HNSW) or by
   probing every list (IVF). It reads only the allowed rows: ~1-2 ms for 17k
   rows at d = 256 on one core, memory-bound.
2. At build time, with labels, every label value answered approximately (up to
   24, fewest rows first) is checked: if its filtered recall@10 on a sample of
   queries is below ``target_recall``, ``exact_rows`` is raised to its row count.
   The checks and the final threshold are stored in ``index.json``.
3. Otherwise the filtered search runs in the index with its beam (HNSW
   ``efSearch``) or probe count (IVF ``nprobe``) divided by the allowed fraction
   (capped at 512 / all lists), so about as many allowed candidates are visited
   as without a filter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from moodshift._atomic import atomic_dir, resolve_dir
from moodshift._deps import require_faiss
from moodshift._finite import CHUNK_VALUES, loads_json, require_finite
from moodshift.data.catalog import Catalog
from moodshift.errors import (
    FileFormatError,
    InputError,
    StaleArtifactError,
    UnknownLabelError,
)
from moodshift.values import parse_values

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KINDS = ("auto", "flat", "hnsw", "ivf")
#: ``kind="auto"`` builds an exact index up to this many rows, HNSW above.
EXACT_MAX_ROWS = 50_000
#: Filtered queries with at most this many allowed rows are answered exactly.
EXACT_FILTER_ROWS = 20_000
#: ... or with at most this fraction of the catalogue allowed.
EXACT_FILTER_FRACTION = 0.02
#: Embedding files up to this size are hashed whole for the fingerprint; larger
#: ones by a fixed sample of rows (hashing 20 GB would make every load slow).
FULL_HASH_MAX_BYTES = 1 << 30
RECALL_SAMPLE = 500


# ---------------------------------------------------------------------- label postings
class LabelPostings:
    """Rows holding each label value, for building filter masks without pandas.

    Parameters
    ----------
    n : int
        Number of tracks.
    keys : list of (column, value)
    offsets : np.ndarray, shape (len(keys) + 1,), int64
        Rows of ``keys[i]`` are ``rows[offsets[i]:offsets[i + 1]]``.
    rows : np.ndarray, shape (offsets[-1],), int32 or int64, sorted within each key
    """

    def __init__(
        self, *, n: int, keys: list[tuple[str, str]], offsets: np.ndarray, rows: np.ndarray
    ) -> None:
        self.n = int(n)
        self.keys = [(str(c), str(v)) for c, v in keys]
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.rows = rows
        self._lookup = {key: i for i, key in enumerate(self.keys)}
        self._columns: dict[str, list[str]] = {}
        for c, v in self.keys:
            self._columns.setdefault(c, []).append(v)

    @classmethod
    def from_labels(
        cls, labels: Mapping[str, Sequence[frozenset[str]]], *, n: int | None = None
    ) -> LabelPostings:
        """Build from per-column label sets (``Catalog.value_sets(col)`` for each column).

        Parameters
        ----------
        labels : mapping column -> sequence of n frozensets
        n : int, optional
            Number of tracks (checked against every column).
        """
        per_key: dict[tuple[str, str], list[int]] = {}
        for column, sets in labels.items():
            if n is None:
                n = len(sets)
            if len(sets) != n:
                raise InputError(
                    f"label column {column!r} has {len(sets)} rows but the index has {n}; "
                    f"give one label set per indexed vector."
                )
            for row, values in enumerate(sets):
                for v in values:
                    per_key.setdefault((column, v), []).append(row)
        keys = sorted(per_key)
        dtype = np.int32 if (n or 0) < 2**31 else np.int64
        lengths = np.fromiter((len(per_key[key]) for key in keys), dtype=np.int64, count=len(keys))
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        rows = np.empty(int(offsets[-1]), dtype=dtype)
        for i, key in enumerate(keys):
            rows[offsets[i] : offsets[i + 1]] = per_key[key]
        return cls(n=n or 0, keys=keys, offsets=offsets, rows=rows)

    @classmethod
    def from_frame(cls, labels: Any, columns: Sequence[str]) -> LabelPostings:
        """Build from a labels DataFrame (``|``-separated cells), vectorised.

        Equivalent to :meth:`from_labels` with ``Catalog.value_sets`` but about
        ten times faster (no Python set per cell), which matters at millions of rows.

        Parameters
        ----------
        labels : pandas.DataFrame, n rows
        columns : the label columns to index
        """

        n = len(labels)
        keys: list[tuple[str, str]] = []
        lengths: list[np.ndarray] = []
        rows_parts: list[np.ndarray] = []
        dtype = np.int32 if n < 2**31 else np.int64
        for column in sorted(columns):
            # Distinct cells are few (label combinations), so parse each once and
            # expand to rows with numpy.
            cell_code, cells = pd.factorize(labels[column].fillna("").astype(str))
            parsed = [sorted(parse_values(c)) for c in cells]
            vocab = sorted({v for vs in parsed for v in vs})
            lookup = {v: i for i, v in enumerate(vocab)}
            n_vals = np.array([len(vs) for vs in parsed], dtype=np.int64)
            flat_vals = np.array([lookup[v] for vs in parsed for v in vs], dtype=np.int64)
            starts = np.zeros(len(cells) + 1, dtype=np.int64)
            np.cumsum(n_vals, out=starts[1:])
            per_row = n_vals[cell_code]
            row = np.repeat(np.arange(n, dtype=np.int64), per_row)
            # Position of each (row, value) pair inside its cell's value list.
            pos = np.arange(len(row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
            codes = flat_vals[starts[cell_code[row]] + pos]
            order = np.lexsort((row, codes))
            keys.extend((column, v) for v in vocab)
            lengths.append(np.bincount(codes, minlength=len(vocab)))
            rows_parts.append(row[order].astype(dtype))
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(all_lengths, out=offsets[1:])
        rows = np.concatenate(rows_parts) if rows_parts else np.zeros(0, dtype)
        return cls(n=n, keys=keys, offsets=offsets, rows=rows)

    def columns(self) -> list[str]:
        """Filterable columns, sorted."""
        return sorted(self._columns)

    def values(self, column: str) -> list[str]:
        """Values of one column, sorted (empty list for an unknown column)."""
        return list(self._columns.get(column, []))

    def count(self, column: str, value: str) -> int:
        i = self._lookup.get((column, value))
        return 0 if i is None else int(self.offsets[i + 1] - self.offsets[i])

    def rows_of(self, column: str, value: str) -> np.ndarray:
        """Rows whose ``column`` holds ``value``, shape (m,), sorted."""
        i = self._lookup.get((column, value))
        if i is None:
            self._unknown(column, value)
        return self.rows[self.offsets[i] : self.offsets[i + 1]]

    def _unknown(self, column: str, value: str) -> None:
        if column not in self._columns:
            raise UnknownLabelError(
                f"unknown filter column {column!r}; filterable columns: "
                f"{', '.join(self.columns()) or '(none)'}."
            )
        known = self._columns[column]
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        raise UnknownLabelError(f"unknown {column} {value!r}; known values: {shown}.")

    def mask(self, filters: Mapping[str, str | Sequence[str]]) -> np.ndarray:
        """Rows matching every column's filter (a row matches a column if it holds any value).

        Parameters
        ----------
        filters : mapping column -> value or list of values

        Returns
        -------
        np.ndarray, shape (n,), bool
            A new array (callers may modify it).

        Raises
        ------
        UnknownLabelError
            For a column or value the catalogue does not have.
        """
        out: np.ndarray | None = None
        for column, wanted in filters.items():
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            if not values:
                raise InputError(f"filter {column!r} has an empty value list; drop it or add one.")
            col_mask = np.zeros(self.n, dtype=bool)
            for v in values:
                col_mask[self.rows_of(column, str(v))] = True
            out = col_mask if out is None else np.logical_and(out, col_mask, out=out)
        if out is None:
            return np.ones(self.n, dtype=bool)
        return out

    def save(self, folder: Path) -> dict[str, Any]:
        np.save(folder / "postings_rows.npy", self.rows)
        np.save(folder / "postings_offsets.npy", self.offsets)
        return {"n": self.n, "keys": [list(k) for k in self.keys]}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any], *, mmap: bool = True) -> LabelPostings:
        """Read the postings arrays written by :meth:`save`, checking shapes and ranges.

        Raises
        ------
        FileFormatError
            If an array is missing, truncated or inconsistent with ``meta``.
        """
        fix = "rebuild the index with `moodshift index --catalog <catalogue>`"
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("n"), int)
            or not isinstance(meta.get("keys"), list)
            or not all(
                isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) for x in k)
                for k in meta["keys"]
            )
        ):
            raise FileFormatError(
                f"{folder / 'index.json'}: 'postings' must be {{'n': int, 'keys': [[column, "
                f"value], ...]}}; {fix}."
            )
        arrays = {}
        for name in ("postings_offsets", "postings_rows"):
            f = folder / f"{name}.npy"
            try:
                arrays[name] = np.load(f, mmap_mode="r" if mmap and name.endswith("rows") else None,
                                       allow_pickle=False)  # fmt: skip
            except (OSError, ValueError, EOFError) as exc:
                what = "missing" if not f.is_file() else f"unreadable ({_short(exc)})"
                raise FileFormatError(f"{f} is {what}; {fix}.") from None
        offsets, rows = arrays["postings_offsets"], arrays["postings_rows"]
        n_keys = len(meta["keys"])
        if offsets.dtype.kind not in "iu" or offsets.shape != (n_keys + 1,):
            raise FileFormatError(
                f"{folder / 'postings_offsets.npy'} has shape {offsets.shape} ({offsets.dtype}); "
                f"expected ({n_keys + 1},) integers for {n_keys} label values; {fix}."
            )
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise FileFormatError(
                f"{folder / 'postings_rows.npy'} is not a 1-D integer array; {fix}."
            )
        if offsets[0] != 0 or offsets[-1] != rows.size or np.any(np.diff(offsets) < 0):
            raise FileFormatError(
                f"{folder / 'postings_offsets.npy'} does not describe the {rows.size} rows of "
                f"postings_rows.npy (truncated or mixed files); {fix}."
            )
        n = int(meta["n"])
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise FileFormatError(
                f"{folder / 'postings_rows.npy'} holds rows outside 0..{n - 1}; {fix}."
            )
        return cls(n=n, keys=[(c, v) for c, v in meta["keys"]], offsets=offsets, rows=rows)


def _short(exc: BaseException) -> str:
    """An exception's message on one line (file errors are shown inside one-line messages)."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


#: index.json: key -> (accepted types, required).
_INDEX_JSON_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "kind": ((str,), True),
    "n": ((int,), True),
    "dim": ((int,), True),
    "params": ((dict,), False),
    "exact_filter_rows": ((int,), False),
    "exact_filter_fraction": ((int, float), False),
    "postings": ((dict,), False),
    "provenance": ((dict,), False),
    "fingerprint": ((dict,), False),
    "catalog": ((str,), False),
}


def _check_index_json(meta: Any, where: Path) -> dict[str, Any]:
    """Refuse an ``index.json`` that is not the object :meth:`FaissIndex.save` writes."""
    fix = "rebuild the index with `moodshift index --catalog <catalogue>`"
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where} holds a {type(meta).__name__}, not an object; {fix}.")
    for key, (types, required) in _INDEX_JSON_SCHEMA.items():
        if key not in meta:
            if required:
                raise FileFormatError(f"{where} lacks the key {key!r}; {fix}.")
            continue
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, types):
            want = " or ".join(t.__name__ for t in types)
            raise FileFormatError(f"{where}: {key!r} must be {want}, got {v!r:.60}; {fix}.")
    if meta["kind"] not in ("flat", "hnsw", "ivf"):
        raise FileFormatError(f"{where}: unknown index kind {meta['kind']!r}; {fix}.")
    return meta


# ---------------------------------------------------------------------- the index
class FaissIndex:
    """A FAISS index over unit-norm rows, searchable with a row filter.

    Implements :class:`moodshift.retrieval.search.VectorIndex`, so ``Searcher(index=...)``
    accepts it. Build with :func:`build_index`; persist with :meth:`save`.

    Attributes
    ----------
    kind : str
        ``flat``, ``hnsw`` or ``ivf``.
    meta : dict
        Parameters, recall@10 and, after :func:`build_catalog_index`, the catalogue's
        provenance and fingerprint (written to ``index.json``).
    postings : LabelPostings or None
        Label value -> rows, when labels were given at build time.
    """

    def __init__(
        self,
        index: Any,
        *,
        kind: str,
        meta: dict[str, Any] | None = None,
        postings: LabelPostings | None = None,
        exact_rows: int = EXACT_FILTER_ROWS,
        exact_fraction: float = EXACT_FILTER_FRACTION,
    ) -> None:
        self.index = index
        self.kind = kind
        self.meta = dict(meta or {})
        self.mood_proba: np.ndarray | None = None
        self.postings = postings
        self.exact_rows = int(exact_rows)
        self.exact_fraction = float(exact_fraction)
        faiss = require_faiss()
        self._faiss = faiss
        self._storage = None
        if kind == "hnsw":
            self._storage = faiss.downcast_index(index.storage)
        elif kind == "ivf":
            self._ivf = faiss.extract_index_ivf(index)
        self.params: dict[str, Any] = dict(self.meta.get("params", {}))
        # Plain ints: reading SWIG attributes costs microseconds on every query.
        self._n = int(index.ntotal)
        self._d = int(index.d)
        self._unfiltered: dict[tuple[str, int], Any] = {}

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self._n

    @property
    def n(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._d

    def __repr__(self) -> str:
        return f"FaissIndex(kind={self.kind!r}, n={self.n}, dim={self.dim}, params={self.params})"

    def exact_threshold(self) -> int:
        """Filtered queries allowing at most this many rows are answered exactly."""
        return max(self.exact_rows, math.ceil(self.exact_fraction * self.n))

    # ------------------------------------------------------------------ search
    def search(
        self, queries: np.ndarray, *, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product (cosine for unit-norm rows), best first.

        Parameters
        ----------
        queries : np.ndarray, shape (q, d) or (d,)
            Unit-norm query vectors.
        k : int
            Results per query; clamped to the number of allowed rows.
        allowed : np.ndarray, shape (n,), bool, optional
            Only these rows may be returned (see the module docstring for how).

        Returns
        -------
        indices : np.ndarray, shape (q, k'), int64
            ``-1`` where an approximate index found fewer than ``k'`` allowed rows.
        scores : np.ndarray, shape (q, k'), float32
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InputError(
                f"queries must have shape (q, {self.dim}), got {np.shape(queries)}; "
                f"use vectors from the embedder this index was built for."
            )
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        faiss = self._faiss
        if allowed is None:
            k_eff = min(k, self.n)
            dist, idx = self.index.search(q, k_eff, params=self._unfiltered_params())
            return idx.astype(np.int64, copy=False), dist
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (self.n,):
            raise InputError(
                f"allowed mask has shape {allowed.shape}; expected ({self.n},), one per row."
            )
        n_allowed = int(np.count_nonzero(allowed))
        k_eff = min(k, n_allowed)
        if k_eff == 0:
            return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
        # The bitmap must outlive the search: IDSelectorBitmap keeps only a pointer.
        bits = np.packbits(allowed, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
        exact = self.kind != "flat" and n_allowed <= self.exact_threshold()
        target = self._storage if (exact and self._storage is not None) else self.index
        params = self._params(sel, exact=exact, fraction=n_allowed / self.n)
        dist, idx = target.search(q, k_eff, params=params)
        del sel, bits
        return idx.astype(np.int64, copy=False), dist

    def _unfiltered_params(self) -> Any:
        key = (self.kind, int(self.params.get("efSearch", self.params.get("nprobe", 0))))
        p = self._unfiltered.get(key)
        if p is None:
            p = self._unfiltered[key] = self._params(None, exact=False)
        return p

    def _params(self, sel: Any, *, exact: bool, fraction: float = 1.0) -> Any:
        faiss = self._faiss
        # With a fraction f of rows allowed, only about f of the visited candidates
        # count, so the beam (HNSW) or the probed lists (IVF) grow by 1/f to keep
        # roughly the same number of allowed candidates (capped).
        scale = 1.0 / max(fraction, 1e-9)
        if self.kind == "hnsw" and not exact:
            p = faiss.SearchParametersHNSW()
            ef = int(self.params.get("efSearch", 64))
            p.efSearch = int(min(max(ef, 512), math.ceil(ef * scale)))
        elif self.kind == "ivf":
            p = faiss.SearchParametersIVF()
            nlist = int(self._ivf.nlist)
            nprobe = int(self.params.get("nprobe", 16))
            p.nprobe = nlist if exact else int(min(nlist, math.ceil(nprobe * scale)))
        elif sel is None:
            return None
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        return p

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index folder atomically (a failed save leaves the old one intact)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.write_into(tmp)
        return path

    def write_into(self, folder: Path) -> None:
        self._faiss.write_index(self.index, str(folder / "index.faiss"))
        meta = dict(self.meta)
        meta.update(
            format_version=FORMAT_VERSION, kind=self.kind, n=self.n, dim=self.dim,
            params=self.params, exact_filter_rows=self.exact_rows,
            exact_filter_fraction=self.exact_fraction,
        )  # fmt: skip
        if self.postings is not None:
            meta["postings"] = self.postings.save(folder)
        proba = getattr(self, "mood_proba", None)
        if proba is not None:
            # The model tagger's p(mood | track) for every track (``moodshift index --model``).
            np.save(folder / "mood_proba.npy", np.asarray(proba, dtype=np.float32))
        (folder / "index.json").write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = True, catalog: Any | None = None
    ) -> FaissIndex:
        """Load an index folder written by :meth:`save` or ``moodshift index``.

        Parameters
        ----------
        path : folder
        mmap : bool
            Memory-map the vectors (``IO_FLAG_MMAP_IFC``) instead of reading them:
            loading is then near-instant and pages are shared between processes.
        catalog : Catalog, optional
            When given, refuse an index built from another catalogue or embedder
            (:class:`StaleArtifactError`).
        """
        faiss = require_faiss()
        path = resolve_dir(path)
        meta_path, faiss_path = path / "index.json", path / "index.faiss"
        if not meta_path.is_file() or not faiss_path.is_file():
            raise FileFormatError(
                f"{path} is not a moodshift index folder (needs index.json and index.faiss); "
                f"build one with `moodshift index --catalog <catalogue>`."
            )
        try:
            meta = loads_json(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise FileFormatError(
                f"{meta_path} is not readable JSON ({_short(exc)}); rebuild it with "
                f"`moodshift index --catalog <catalogue>`."
            ) from None
        meta = _check_index_json(meta, meta_path)
        if catalog is not None:
            check_index_matches(meta, catalog, where=path)
        index = None
        if mmap:
            try:
                index = faiss.read_index(str(faiss_path), faiss.IO_FLAG_MMAP_IFC)
            except RuntimeError as exc:  # an index type that cannot be mapped
                log.info("cannot memory-map %s (%s); reading it", faiss_path, exc)
        if index is None:
            try:
                index = faiss.read_index(str(faiss_path))
            except RuntimeError as exc:
                raise FileFormatError(
                    f"{faiss_path} is not a readable FAISS index ({_short(exc)}); rebuild it "
                    f"with `moodshift index --catalog <catalogue>`."
                ) from None
        if index.ntotal != meta.get("n") or index.d != meta.get("dim"):
            raise FileFormatError(
                f"{faiss_path} holds {index.ntotal} x {index.d} but index.json says "
                f"{meta.get('n')} x {meta.get('dim')}; rebuild with `moodshift index`."
            )
        check_index_finite(index, faiss_path=faiss_path)
        postings = None
        if "postings" in meta:
            postings = LabelPostings.load(path, meta.pop("postings"), mmap=mmap)
            if postings.n != index.ntotal:
                raise FileFormatError(
                    f"{meta_path}: postings cover {postings.n} rows but the index "
                    f"{index.ntotal}; rebuild with `moodshift index --catalog <catalogue>`."
                )
        out = cls(
            index, kind=meta["kind"], meta=meta, postings=postings,
            exact_rows=int(meta.get("exact_filter_rows", EXACT_FILTER_ROWS)),
            exact_fraction=float(meta.get("exact_filter_fraction", EXACT_FILTER_FRACTION)),
        )  # fmt: skip
        proba_path = path / "mood_proba.npy"
        if proba_path.is_file():
            try:
                proba = np.load(proba_path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise FileFormatError(
                    f"{proba_path} is damaged ({_short(exc)}); rebuild with `moodshift index "
                    f"--catalog <catalogue> --model <model>`."
                ) from None
            if proba.ndim != 2 or proba.shape[0] != out.n:
                raise FileFormatError(
                    f"{proba_path} has shape {proba.shape} for {out.n} tracks; rebuild with "
                    f"`moodshift index --catalog <catalogue> --model <model>`."
                )
            require_finite(proba, path=proba_path, fix="rebuild it with `moodshift index "
                           "--catalog <catalogue> --model <model>`")  # fmt: skip
            out.mood_proba = proba
        return out


def check_index_finite(index: Any, *, faiss_path: Path) -> None:
    """Refuse an index whose stored vectors hold NaN or infinity (flipped bytes).

    The vectors are read in chunks of about 4M values (a flat or HNSW index by
    ``reconstruct_n``, an IVF index list by list), so the check costs one pass over
    the vectors and no second copy (measured on 200k x 512: flat 0.12 s, IVF 0.04 s).

    Raises
    ------
    FileFormatError
        A stored vector is not finite.
    """
    faiss = require_faiss()

    fix = "rebuild it with `moodshift index --catalog <catalogue>`"
    ivf = None
    with contextlib.suppress(RuntimeError):
        ivf = faiss.extract_index_ivf(index)
    if ivf is not None:
        check_index_finite(ivf.quantizer, faiss_path=faiss_path)  # the list centroids
        lists = ivf.invlists
        for no in range(lists.nlist):
            size = lists.list_size(no)
            if size == 0:
                continue
            if lists.code_size != 4 * index.d:  # not raw float32 vectors (a compressed IVF)
                break
            codes = faiss.rev_swig_ptr(lists.get_codes(no), size * lists.code_size)
            require_finite(np.frombuffer(codes, dtype=np.float32), path=faiss_path, fix=fix)
        return
    step = max(1, CHUNK_VALUES // max(1, index.d))
    for start in range(0, index.ntotal, step):
        block = index.reconstruct_n(start, min(step, index.ntotal - start))
        require_finite(block, path=faiss_path, fix=fix)


# ---------------------------------------------------------------------- build
def build_index(
    vectors: np.ndarray,
    *,
    kind: str = "auto",
    labels: Mapping[str, Sequence[frozenset[str]]] | LabelPostings | None = None,
    seed: int = 0,
    progress: bool = True,
    exact_max_rows: int = EXACT_MAX_ROWS,
    target_recall: float = 0.95,
    hnsw_m: int = 16,
    ef_construction: int = 40,
    recall_sample: int = RECALL_SAMPLE,
    exact_filter_rows: int = EXACT_FILTER_ROWS,
    exact_filter_fraction: float = EXACT_FILTER_FRACTION,
) -> FaissIndex:
    """Build a FAISS index over unit-norm rows and measure its recall@10.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, d), float32, unit-norm rows
    kind : {"auto", "flat", "hnsw", "ivf"}
        ``auto``: ``flat`` up to ``exact_max_rows`` rows, ``hnsw`` above.
    labels : mapping column -> sequence of n frozensets, or LabelPostings, optional
        Kept as :class:`LabelPostings` so the index can turn filters into masks.
    seed : int
        Seeds the recall sample and IVF training.
    progress : bool
        Show a progress bar while adding vectors.
    target_recall : float
        ``efSearch`` (HNSW) or ``nprobe`` (IVF) is the smallest tried value whose
        recall@10 on the sample reaches this.
    hnsw_m, ef_construction : int
        HNSW graph degree and build-time beam width.
    recall_sample : int
        Number of stored vectors used as queries to measure recall@10 (each
        query's own row is left out of both result lists).
    exact_filter_rows, exact_filter_fraction : int, float
        Initial exact-fallback threshold for filtered queries (module docstring);
        with labels, raised at build time above any label value whose filtered
        recall@10 falls short of ``target_recall``.

    Returns
    -------
    FaissIndex
        ``meta`` holds ``recall_at_10``, ``recall_at_10_filtered`` (at the
        lowest selectivity still answered approximately), ``build_seconds``, params.
    """
    faiss = require_faiss()
    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}.")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"vectors must be a non-empty (n, d) array, got shape {x.shape}.")
    norms = np.linalg.norm(x[: min(len(x), 1000)], axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise InputError(
            "vectors must be unit-norm (retrieval is by cosine); pass catalog.normalized."
        )
    n, d = x.shape
    if kind == "auto":
        kind = "flat" if n <= exact_max_rows else "hnsw"
    t0 = time.perf_counter()
    params: dict[str, Any] = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        params.update(M=hnsw_m, efConstruction=ef_construction)
    else:
        # More, smaller lists than the mining join's ~2 sqrt(n) (mining/neighbors.py): a
        # served query scans its probed lists one vector at a time, so short lists pay;
        # the join multiplies whole lists as blocks, where fewer, longer ones run faster.
        nlist = int(max(1, min(n // 39, round(4 * math.sqrt(n)))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train_rows = np.sort(rng.choice(n, size=min(n, 256 * nlist), replace=False))
        index.cp.seed = seed
        index.train(x[train_rows])
        params.update(nlist=nlist)
    _add_with_progress(index, x, progress=progress, desc=f"index ({kind})")
    build_s = time.perf_counter() - t0
    if isinstance(labels, LabelPostings):
        if labels.n != n:
            raise InputError(f"label postings cover {labels.n} rows but there are {n} vectors.")
        postings: LabelPostings | None = labels
    else:
        postings = LabelPostings.from_labels(labels, n=n) if labels else None
    out = FaissIndex(
        index, kind=kind, meta={}, postings=postings, exact_rows=exact_filter_rows,
        exact_fraction=exact_filter_fraction,
    )  # fmt: skip
    out.params = params
    recall = _tune_and_measure(out, x, seed=seed, target=target_recall, sample=recall_sample)
    out.meta.update(
        kind=kind, n=n, dim=d, params=out.params, build_seconds=round(build_s, 3), **recall
    )
    return out


def _add_with_progress(index: Any, x: np.ndarray, *, progress: bool, desc: str) -> None:

    chunk = 20_000
    with tqdm(total=len(x), desc=desc, unit="vec", disable=not progress or len(x) < 50_000) as bar:
        for s in range(0, len(x), chunk):
            index.add(x[s : s + chunk])
            bar.update(min(chunk, len(x) - s))


def tuning_grid(index: FaissIndex) -> tuple[str, tuple[int, ...]]:
    """The search parameter of an approximate index and the values tried, cheapest first.

    ``efSearch`` for HNSW; ``nprobe`` for IVF, ending with every list (exact).
    """
    if index.kind == "hnsw":
        return "efSearch", (16, 32, 64, 128, 256, 512)
    if index.kind != "ivf":
        raise InputError(f"a {index.kind!r} index has no search parameter to tune.")
    nlist = int(index._ivf.nlist)
    return "nprobe", (*(v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if v < nlist), nlist)


def _tune_and_measure(
    index: FaissIndex,
    x: np.ndarray,
    *,
    seed: int,
    target: float,
    sample: int,
    max_filter_checks: int = 24,
) -> dict[str, Any]:
    """Choose efSearch / nprobe and measure recall@10 against exact search."""
    from moodshift.retrieval.search import topk_cosine  # pulls in torch: load on use

    n = len(x)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    q = x[rows]
    k = min(11, n)
    exact_i, _ = topk_cosine(q, x, k=k)

    def recall(idx: np.ndarray, ref: np.ndarray) -> float:
        # Each query is a stored vector: drop its own row from both lists.
        hits = []
        for qi, a, b in zip(rows, idx, ref, strict=True):
            a10 = [i for i in a if i != qi and i >= 0][:10]
            b10 = [i for i in b if i != qi][:10]
            hits.append(len(set(a10) & set(b10)) / max(1, len(b10)))
        return float(np.mean(hits)) if hits else 1.0

    out: dict[str, Any] = {"recall_queries": len(rows), "target_recall": target}
    if index.kind == "flat":
        out["recall_at_10"] = recall(index.search(q, k=k)[0], exact_i)
    else:
        key, values = tuning_grid(index)
        tried = {}
        for v in values:
            index.params[key] = v
            r = recall(index.search(q, k=k)[0], exact_i)
            tried[str(v)] = round(r, 4)
            if r >= target:
                break
        out["recall_at_10"] = r
        out["tuning"] = {key: tried}
    if index.kind == "flat":
        return out

    def filtered_recall(mask: np.ndarray, queries: np.ndarray) -> float:
        approx_i, _ = index.search(queries, k=10, allowed=mask)
        allowed_rows = np.flatnonzero(mask)
        ei, _ = topk_cosine(queries, x[allowed_rows], k=min(10, allowed_rows.size))
        hits = [
            len(set(a[a >= 0].tolist()) & set(allowed_rows[b].tolist())) / max(1, b.size)
            for a, b in zip(approx_i, ei, strict=True)
        ]
        return float(np.mean(hits))

    # Label filters are correlated with the embedding (a genre is a region of the
    # space), and graph or list search then misses allowed rows far from where
    # the walk starts. Check the label values answered approximately, hardest
    # (fewest rows) first, and raise the exact-search threshold above any whose
    # recall@10 falls short of the target.
    if index.postings is not None:
        counts = np.diff(index.postings.offsets)
        order = [
            i for i in np.argsort(counts, kind="stable") if counts[i] > index.exact_threshold()
        ]
        order = [i for i in order if counts[i] < n][:max_filter_checks]
        fq = q[: min(len(q), 50)]
        checked = {}
        for i in order:
            column, value = index.postings.keys[i]
            if counts[i] <= index.exact_threshold():
                continue  # already covered by a raised threshold
            r = filtered_recall(index.postings.mask({column: value}), fq)
            checked[f"{column}={value}"] = {"rows": int(counts[i]), "recall_at_10": round(r, 4)}
            if r < target:
                index.exact_rows = int(counts[i])
        out["label_filter_checks"] = checked
        out["exact_filter_rows"] = index.exact_rows
    # Filtered recall at the lowest selectivity still answered approximately
    # (random rows): the worst case of the exact-fallback rule without correlation.
    m = index.exact_threshold() + 1
    if m * 2 <= n:
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=m, replace=False)] = True
        out["recall_at_10_filtered"] = filtered_recall(mask, q[: min(len(q), 200)])
        out["filtered_fraction"] = round(m / n, 4)
    return out


# ---------------------------------------------------------------------- catalogue indexes
def index_fingerprint(
    *,
    track_ids: Sequence[Any],
    embeddings: np.ndarray,
    labels: Mapping[str, Sequence[Any]] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """What identifies the data an index serves: one hash per stored part.

    Every part the index (or the server through it) reads must be here, so that
    a change to any of them after ``moodshift index`` is caught at load time.

    Parameters
    ----------
    track_ids : sequence of n ids
    embeddings : np.ndarray, shape (n, d)
        Up to :data:`FULL_HASH_MAX_BYTES` hashed whole (BLAKE2b, about 1 GB/s);
        larger by a fixed sample of 65,536 rows plus the first and last 64, which
        catches a re-embedding (every row changes) at a small fraction of the cost.
    labels : mapping column -> n cells, optional
        The label columns the index's postings (filters) are built from.
    arrays : mapping name -> np.ndarray, optional
        Any further per-track array stored with the index (hashed whole).

    Returns
    -------
    dict
        ``n``, ``dim``, ``dtype``, ``embeddings_hash_mode`` and ``hashes``
        (part name -> hex digest).
    """
    emb = embeddings
    n, d = (int(s) for s in emb.shape)
    hashes: dict[str, str] = {}
    ids = hashlib.blake2b(digest_size=16)
    ids_arr = np.asarray(track_ids, dtype=object)
    for chunk in range(0, n, 100_000):
        ids.update("\n".join(map(str, ids_arr[chunk : chunk + 100_000])).encode())
        ids.update(b"\n")
    hashes["track_ids"] = ids.hexdigest()
    h = hashlib.blake2b(digest_size=16)
    if int(emb.nbytes) <= FULL_HASH_MAX_BYTES:
        mode = "full"
        step = max(1, (64 << 20) // max(1, d * emb.itemsize))
        for s in range(0, n, step):
            h.update(np.ascontiguousarray(emb[s : s + step]).tobytes())
    else:
        mode = "sampled"
        spread = np.linspace(0, n - 1, 65_536).astype(np.int64)
        ends = np.r_[np.arange(min(n, 64)), np.arange(max(0, n - 64), n)]
        rows = np.unique(np.concatenate([spread, ends]))
        h.update(np.ascontiguousarray(emb[rows]).tobytes())
    hashes["embeddings"] = h.hexdigest()
    if labels is not None:
        lh = hashlib.blake2b(digest_size=16)
        for column in sorted(labels):
            cells = np.asarray(labels[column], dtype=object)
            lh.update(f"\x1e{column}\x1e".encode())
            for chunk in range(0, len(cells), 100_000):
                part = ("" if v is None else str(v) for v in cells[chunk : chunk + 100_000])
                lh.update("\x1f".join(part).encode("utf-8", "surrogatepass"))
                lh.update(b"\x1f")
        hashes["labels"] = lh.hexdigest()
    for name, arr in sorted((arrays or {}).items()):
        ah = hashlib.blake2b(digest_size=16)
        a = np.ascontiguousarray(arr)
        ah.update(f"{a.dtype.str}{a.shape}".encode())
        ah.update(a.tobytes())
        hashes[name] = ah.hexdigest()
    return {"n": n, "dim": d, "dtype": str(emb.dtype), "embeddings_hash_mode": mode,
            "hashes": hashes}  # fmt: skip


def catalog_fingerprint(catalog: Any) -> dict[str, Any]:
    """:func:`index_fingerprint` of a catalogue: ids, embeddings and every label column."""
    columns = catalog.label_columns()
    return index_fingerprint(
        track_ids=catalog.track_ids,
        embeddings=catalog.embeddings,
        labels={c: catalog.labels[c].to_numpy(dtype=object) for c in columns},
    )


_PART_NAMES = {"track_ids": "track ids", "embeddings": "embeddings", "labels": "labels"}


def check_index_matches(meta: Mapping[str, Any], catalog: Any, *, where: Any = "index") -> None:
    """Raise :class:`StaleArtifactError` unless ``meta`` was built from ``catalog``.

    Every part hashed by :func:`catalog_fingerprint` must match; an index
    written before a part was hashed is stale too (it cannot be checked).
    """
    built_from = meta.get("catalog") or "<catalogue>"
    same = Path(str(where)).resolve() == (Path(str(built_from)) / "index").resolve()
    out = "" if same else f" --out {where}"
    fix = f"rebuild it with `moodshift index --catalog {built_from}{out}`"
    prov = meta.get("provenance") or {}
    mine = catalog.provenance
    if not isinstance(prov, Mapping):
        raise FileFormatError(f"{where}/index.json: 'provenance' is not an object; {fix}.")
    if prov and (
        str(prov.get("name")) != str(mine.get("name"))
        or str(prov.get("version")) != str(mine.get("version"))
        or _as_int(prov.get("dim")) != catalog.dim
    ):
        raise StaleArtifactError(
            f"the index at {where} was built from embedder {prov.get('name')} "
            f"{prov.get('version')} ({prov.get('dim')}-d) but the catalogue uses "
            f"{mine.get('name')} {mine.get('version')} ({catalog.dim}-d); {fix}."
        )
    fp = meta.get("fingerprint")
    if not fp or not isinstance(fp, Mapping) or not isinstance(fp.get("hashes"), Mapping):
        raise StaleArtifactError(
            f"the index at {where} has no (current) catalogue fingerprint, so it cannot be "
            f"checked; {fix}."
        )
    if _as_int(fp.get("n")) != len(catalog) or _as_int(fp.get("dim")) != catalog.dim:
        raise StaleArtifactError(
            f"the index at {where} covers {fp.get('n')} x {fp.get('dim')} embeddings but the "
            f"catalogue has {len(catalog)} x {catalog.dim}; {fix}."
        )
    now = catalog_fingerprint(catalog)["hashes"]
    stored = fp["hashes"]
    for part, digest in now.items():
        if stored.get(part) != digest:
            what = _PART_NAMES.get(part, part)
            raise StaleArtifactError(
                f"the index at {where} is stale: the catalogue's {what} changed since it was "
                f"built; {fix}."
            )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def default_index_dir(catalog_path: str | os.PathLike[str]) -> Path:
    return Path(catalog_path) / "index"


def catalog_postings(catalog: Any) -> LabelPostings:
    """Postings of every label column of a catalogue (what filters may use)."""
    return LabelPostings.from_frame(catalog.labels, catalog.label_columns())


def build_catalog_index(
    catalog_path: str | os.PathLike[str],
    *,
    kind: str = "auto",
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    model: Any | None = None,
) -> dict[str, Any]:
    """Build, measure and save (atomically) the index of a saved catalogue.

    Parameters
    ----------
    catalog_path : folder written by ``moodshift import``
    kind : {"auto", "flat", "hnsw", "ivf"}
    out : folder, optional
        Defaults to ``<catalog>/index``.
    model : MoodshiftModel, optional
        Store its p(mood | track) for every track (``mood_proba.npy``): the fused
        evidence where the model has one, else its tagger's, so serving does not
        recompute it; the fingerprint of what made it is recorded.
        With a ranking space (:mod:`moodshift.model.ranking`) the index holds the
        tracks *in that space*, so its neighbours are the ones queries rank by
        (``ranking_space`` in ``index.json`` records the space's fingerprint).

    Returns
    -------
    dict
        The index metadata as written to ``index.json`` (plus ``path``).
    """

    catalog = Catalog.load(catalog_path)
    t0 = time.perf_counter()
    space = getattr(model, "ranking", None)
    if model is not None:
        catalog.check_compatible(model.embedder, what="model")
    vectors = catalog.normalized if space is None else np.concatenate(
        [space.project(catalog.normalized[s : s + 65536]) for s in range(0, len(catalog), 65536)]
    )  # fmt: skip
    index = build_index(
        vectors,
        kind=kind,
        labels=catalog_postings(catalog),
        seed=seed,
        progress=progress,
    )
    index.meta["provenance"] = {k: catalog.provenance.get(k) for k in ("name", "version", "dim")}
    index.meta["fingerprint"] = catalog_fingerprint(catalog)
    index.meta["catalog"] = str(Path(catalog_path).resolve())
    if space is not None:
        index.meta["ranking_space"] = space.fingerprint()
    if model is not None and model.tagger is not None:
        from moodshift.retrieval.engine import catalog_evidence  # pulls in torch: load on use

        # The fused evidence (tagger, tag head, the catalogue's own labels), as serving uses it.
        index.mood_proba = catalog_evidence(catalog, model).proba
        index.meta["tagger"] = model.evidence_fingerprint()
    index.meta["total_seconds"] = round(time.perf_counter() - t0, 3)
    target = Path(out) if out is not None else default_index_dir(catalog_path)
    index.save(target)
    info = json.loads((target / "index.json").read_text())
    info.pop("postings", None)
    info["path"] = str(target)
    return info


def load_catalog_index(
    catalog: Any,
    *,
    catalog_path: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    mmap: bool = True,
) -> FaissIndex | None:
    """The checked index of ``catalog``, or None when there is none.

    Parameters
    ----------
    catalog : Catalog
    catalog_path : folder, optional
        Where the catalogue was loaded from; its ``index/`` subfolder is used
        when ``path`` is not given (and absent means None, not an error).
    path : folder, optional
        An explicit index folder (must exist).

    Raises
    ------
    StaleArtifactError
        If the index was built from another catalogue or embedder.
    """
    if path is None:
        if catalog_path is None:
            return None
        path = default_index_dir(catalog_path)
        if not (resolve_dir(path) / "index.json").is_file():
            return None
    return FaissIndex.load(path, mmap=mmap, catalog=catalog)
