"""Serving state: everything a request touches, precomputed at start-up.

See :mod:`moodshift.serving.app` for the HTTP side; a query's checks and search are the
library's own (:class:`moodshift.retrieval.request.Retriever`), formatted here as JSON.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from moodshift.data.catalog import Catalog, file_inside
from moodshift.errors import InputError, MoodshiftError
from moodshift.model.evidence import label_density
from moodshift.model.fast import NumpyTransform
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.engine import EVIDENCE_MODES, MoodEvidence, QueryEngine
from moodshift.retrieval.index import EXACT_MAX_ROWS, FaissIndex, LabelPostings, build_index
from moodshift.retrieval.labelling import set_label, to_label
from moodshift.retrieval.playlist import describe_journey, mood_journey
from moodshift.retrieval.request import (
    PreparedQuery,
    QueryRequest,
    Retriever,
)
from moodshift.values import SEPARATOR, l2_normalize, parse_values

log = logging.getLogger(__name__)


#: Tracks drawn for the 2-D map (``GET /map``), from the PCA's sample.
MAP_SAMPLE = 2000
#: Tracks the map's PCA is fitted on (a seeded sample: the map is the same every start).
PCA_SAMPLE = 20_000
#: Suggestions chosen at once for ``GET /label/next`` (kept until the next label).
SUGGEST_CACHE = 12


class LabelsReadOnlyError(MoodshiftError):
    """Labels given on the page cannot be saved (read-only folder, several workers): 409."""


# ---------------------------------------------------------------------- state
class ServingState:
    """Everything the request path needs, computed once at startup.

    Parameters
    ----------
    catalog : Catalog
    model : MoodshiftModel
    index : FaissIndex or VectorIndex, optional
        Without one, an exact in-memory FAISS index is built (fine up to
        :data:`EXACT_MAX_ROWS` tracks; above, build one with ``moodshift index``).
    max_k : int
    audio_roots : sequence of folders
        Where audio may be served from, besides the catalogue's folder (the one
        relative audio paths resolve against). See :meth:`audio_file`.
    catalog_dir : folder, optional
        The folder ``catalog`` was loaded from: labels given on the page are saved
        there (:meth:`set_label`). Without it, labelling is refused.
    workers : int
        Server processes sharing the catalogue; above 1 labelling is refused (each
        process would hold its own labels and overwrite the others' saves).

    Raises
    ------
    InputError
        If the model cannot serve the catalogue (:meth:`MoodshiftModel.check_catalog`).
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        model: MoodshiftModel,
        index: Any | None,
        max_k: int,
        audio_roots: Sequence[str | os.PathLike[str]] = (),
        catalog_dir: str | os.PathLike[str] | None = None,
        workers: int = 1,
    ) -> None:
        # Refused before any work: an embedder mismatch (the rest of the start-up checks
        # are the request layer's, below).
        catalog.check_compatible(model.embedder, what="model")
        self.catalog = catalog
        self.model = model
        self.max_k = int(max_k)
        self.n = len(catalog)
        self.dim = catalog.dim
        labels = catalog.labels
        self.attribute = model.attribute
        if self.attribute not in labels.columns:
            # A catalogue without the column (an untagged music folder) is all unlabelled:
            # the model's tagger judges every track.
            labels = labels.assign(**{self.attribute: ""})
        self.moods = list(model.classes)
        self.track_ids = labels["track_id"].astype(str).to_numpy(dtype=object)
        self.id_to_row = {t: i for i, t in enumerate(self.track_ids)}
        self.label_columns = catalog.label_columns()
        show = [c for c in ("title", "artist") if c in labels.columns]
        self.columns: dict[str, np.ndarray] = {
            c: labels[c].fillna("").astype(str).to_numpy(dtype=object)
            for c in [*self.label_columns, *show]
        }
        # Columns holding several values per cell are returned as lists.
        self.multi = {
            c
            for c in self.label_columns
            if c in ("genre", "instruments")
            or labels[c].astype(str).str.contains(SEPARATOR, regex=False).any()
        }
        roots = [catalog.root] if catalog.root is not None else []
        roots += [Path(r) for r in audio_roots]
        # Resolved once: a served file must resolve (symlinks followed) under one of these.
        self.audio_roots = [Path(os.path.realpath(r)) for r in roots]
        self.has_audio = (
            labels["audio_path"].fillna("").astype(str).str.len().to_numpy() > 0
            if "audio_path" in labels.columns
            else np.zeros(self.n, dtype=bool)
        )
        if self.attribute not in self.columns:
            self.columns[self.attribute] = (
                labels[self.attribute].fillna("").astype(str).to_numpy(object)
            )

        t0 = time.perf_counter()
        if index is None:
            if self.n > EXACT_MAX_ROWS:
                log.warning(
                    "no index for %d tracks: exact search on every query is slow; build one "
                    "with `moodshift index --catalog ...`",
                    self.n,
                )
            index = build_index(catalog.normalized, kind="flat", progress=False, recall_sample=50)
        if isinstance(index, FaissIndex) and (index.n != self.n or index.dim != self.dim):
            raise InputError(
                f"the index holds {index.n} x {index.dim} vectors but the catalogue "
                f"{self.n} x {self.dim}; rebuild it with `moodshift index --catalog ...`."
            )
        self.index = index
        # The one request path of the library, the CLI and the server: checks, the
        # index's stored p(mood | track), filters through its label postings, the engine.
        self.retriever = Retriever(catalog=catalog, model=model, index=index)
        self.index_kind = self.retriever.index_kind
        self.index_meta = {
            k: v
            for k, v in getattr(index, "meta", {}).items()
            if k in ("kind", "params", "recall_at_10", "recall_at_10_filtered", "build_seconds")
        }
        # Queries run in a worker thread (serving.batching), so the middleware may answer
        # them without FastAPI's routing whatever the index.
        self.inline = True
        self._parsed: dict[str, list[str]] = {}
        self.fast_path = isinstance(self.engine.transform, NumpyTransform)
        # The default evidence's candidate blocks are built now, not by the first query.
        self.engine.warm("auto")
        self._fit_map()
        self._search_text: Any = None
        self._search_lock = threading.Lock()
        self.catalog_dir = None if catalog_dir is None else Path(catalog_dir)
        self.workers = int(workers)
        # One label at a time: each save writes the whole catalogue folder.
        self._label_lock = threading.Lock()
        self._suggested: np.ndarray | None = None
        self._density: np.ndarray | None = None
        log.info("serving state ready in %.2f s", time.perf_counter() - t0)

    # What depends on the labels lives in the retriever, rebuilt there by relabelled().
    @property
    def evidence(self) -> MoodEvidence:
        return self.retriever.evidence

    @property
    def engine(self) -> QueryEngine:
        return self.retriever.engine

    @property
    def postings(self) -> LabelPostings:
        return self.retriever.postings

    # ------------------------------------------------------------------ vectors
    def unit_row(self, rows: np.ndarray | int) -> np.ndarray:
        """Unit-norm embedding(s) of catalogue rows, read from the (mapped) matrix."""
        if np.ndim(rows) == 0:
            return self.retriever.unit_row(int(rows))
        return l2_normalize(np.asarray(self.catalog.embeddings[rows], dtype=np.float32))

    def _fit_map(self) -> None:
        """A fixed PCA (2 components) of a seeded sample of the catalogue's unit vectors."""
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(self.n, size=min(self.n, PCA_SAMPLE), replace=False))
        x = self.unit_row(sample).astype(np.float64)
        self.pca_mean = x.mean(axis=0)
        xc = x - self.pca_mean
        cov = xc.T @ xc / max(1, len(xc) - 1)
        vals, vecs = np.linalg.eigh(cov)
        comp = vecs[:, ::-1][:, :2].T
        if comp.shape[0] < 2:  # a 1-d catalogue: second axis is flat
            comp = np.vstack([comp, np.zeros_like(comp)])
        # Fix signs so that the map does not flip between runs or machines.
        signs = np.sign(comp[np.arange(2), np.abs(comp).argmax(axis=1)])
        self.pca_components = (comp * signs[:, None]).astype(np.float32)
        self.pca_mean = self.pca_mean.astype(np.float32)
        total = float(np.trace(cov)) or 1.0
        self.pca_explained = [float(v) / total for v in vals[::-1][:2]]
        map_rows = sample if len(sample) <= MAP_SAMPLE else np.sort(
            rng.choice(sample, size=MAP_SAMPLE, replace=False)
        )  # fmt: skip
        pts = self.project(self.unit_row(map_rows))
        self._map_rows = map_rows
        self.map_points = {
            "moods": self.moods,
            "explained_variance": [round(v, 4) for v in self.pca_explained],
            "points": [
                [round(float(a), 4), round(float(b), 4), self._map_mood(int(r))]
                for (a, b), r in zip(pts, map_rows, strict=True)
            ],
        }

    def _map_moods(self) -> None:
        """Refresh the map's mood codes (after the labels changed)."""
        for point, r in zip(self.map_points["points"], self._map_rows.tolist(), strict=True):
            point[2] = self._map_mood(int(r))

    def _map_mood(self, row: int) -> int:
        """A track's mood code on the map: its label, else the tagger's guess (-1: neither)."""
        lab = int(self.evidence.labels[row])
        if lab >= 0 or self.evidence.predicted is None:
            return lab
        return int(self.evidence.predicted[row])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """2-D map coordinates, shape (m, 2), of unit vectors of shape (m, d)."""
        return (np.atleast_2d(vectors) - self.pca_mean) @ self.pca_components.T

    # ------------------------------------------------------------------ records
    def record(self, row: int) -> dict[str, Any]:
        """JSON-ready description of one track (labels, title, audio URL)."""
        tid = self.track_ids[row]
        out: dict[str, Any] = {"track_id": tid}
        for c, arr in self.columns.items():
            v = arr[row]
            if c in self.multi:
                # Few distinct cells (label combinations): parse each once.
                parsed = self._parsed.get(v)
                if parsed is None:
                    parsed = self._parsed[v] = sorted(parse_values(v))
                v = list(parsed)
            out[c] = v
        out["audio_url"] = f"/audio/{quote(tid, safe='')}" if self.has_audio[row] else None
        return out

    def described(self, row: int) -> dict[str, Any]:
        """:meth:`record` with the track's mood as results show it: its label, else the
        tagger's guess and its probability (``mood``, ``mood_source``, ``mood_probability``)."""
        mood = self.evidence.describe(np.array([row]), classes=self.moods)[0]
        return {**self.record(row), **mood}

    def row_of(self, track_id: str) -> int:
        """The catalogue row of a track id (:class:`UnknownTrackError` when absent)."""
        return self.catalog.index_of(track_id)

    def mood_code(self, mood: str, *, field: str) -> int:
        """The class index of ``mood`` (:class:`UnknownMoodError` naming ``field``)."""
        return self.retriever.mood_code(mood, field=field)

    # ------------------------------------------------------------------ audio
    def audio_file(self, row: int) -> tuple[Path, os.stat_result, str] | None:
        """The track's audio file if it may be served: (resolved path, stat, media type).

        None unless the catalogue's path, with every symlink resolved, is a regular
        file under one of :attr:`audio_roots` with an audio media type (by suffix).
        """
        path = self.catalog.audio_path(row)
        real = None if path is None else file_inside(path, roots=self.audio_roots)
        media_type = None if real is None else audio_media_type(real)
        if media_type is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return real, st, media_type

    # ------------------------------------------------------------------ track search
    def search_tracks(
        self, *, q: str | None, filters: Mapping[str, str], page: int, page_size: int
    ) -> dict[str, Any]:
        mask = self.postings.mask(filters) if filters else None
        exact_row = -1
        if q:
            text = self._text()
            needle = q.strip().lower()
            hit = text.str.contains(needle, regex=False).to_numpy()
            mask = hit if mask is None else mask & hit
            exact_row = self.id_to_row.get(q.strip(), -1)
        rows = np.flatnonzero(mask) if mask is not None else None
        total = self.n if rows is None else int(rows.size)
        if rows is not None and exact_row >= 0 and mask is not None and mask[exact_row]:
            # An exact id match is what the user most likely wants: list it first.
            rows = np.concatenate([[exact_row], rows[rows != exact_row]])
        # Python ints: a page number near 2**63 must give an empty page, not overflow numpy.
        start = (int(page) - 1) * int(page_size)
        if start >= total or start < 0:
            page_rows: Any = ()
        elif rows is None:
            page_rows = range(start, min(self.n, start + page_size))
        else:
            page_rows = rows[start : start + page_size]
        return {
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": max(1, math.ceil(total / page_size)),
            "items": [self.described(int(r)) for r in page_rows],
        }

    def _text(self) -> Any:
        """Lower-case searchable text per track (built on first use: ~100 B per track)."""
        if self._search_text is None:
            with self._search_lock:
                if self._search_text is None:
                    parts = [pd.Series(self.track_ids)]
                    parts += [pd.Series(self.columns[c]) for c in self.columns]
                    text = parts[0]
                    for p in parts[1:]:
                        text = text + "\n" + p
                    self._search_text = text.str.lower()
        return self._search_text

    # ------------------------------------------------------------------ query
    def query(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a validated ``POST /query`` body (see ``QueryRequest`` in the app)."""
        out = self.query_batch([body])[0]
        if isinstance(out, MoodshiftError):
            raise out
        return out

    def query_batch(self, bodies: list[Mapping[str, Any]]) -> list[dict[str, Any] | MoodshiftError]:
        """Answer several validated bodies; compatible ones share one engine search.

        Bodies with the same evidence and artist cap are searched together, each
        with its own strength and filter: one batched transform and one batched
        search (the micro-batch of concurrent requests). Each answer equals
        :meth:`query`'s, up to the last bits of its scores: a batched matrix
        product rounds differently from a lone one.

        Returns
        -------
        list
            Per body, its answer, or the :class:`MoodshiftError` it raised.
        """
        t0 = time.perf_counter()
        out: list[dict[str, Any] | MoodshiftError] = []
        ready: list[PreparedQuery] = []
        for body in bodies:
            try:
                ready.append(self.retriever.prepare(QueryRequest.from_body(body)))
            except MoodshiftError as exc:
                out.append(exc)  # the error stays with its own request
                continue
            out.append({})
        found = iter(zip(ready, self.retriever.search(ready), strict=True))
        for i, slot in enumerate(out):
            if not isinstance(slot, MoodshiftError):
                p, result = next(found)
                # A query vector that became NaN: that request alone is refused (422).
                out[i] = (
                    result if isinstance(result, MoodshiftError) else self._finish(p, *result, t0)
                )
        return out

    def _finish(
        self, p: PreparedQuery, rows: np.ndarray, scores: np.ndarray, qvec: np.ndarray, t0: float
    ) -> dict[str, Any]:
        keep = rows >= 0
        idx, sc = rows[keep], scores[keep]
        moods = self.evidence.describe(idx, classes=self.moods, mode=p.evidence)
        results = []
        for rank, (i, s_, m) in enumerate(zip(idx.tolist(), sc.tolist(), moods, strict=True), 1):
            rec = self.record(i)
            rec.update(rank=rank, score=round(s_, 5), **m)
            results.append(rec)
        pts = self.project(np.vstack([p.seed, qvec, self.unit_row(idx)]) if len(idx) else
                           np.vstack([p.seed, qvec]))  # fmt: skip
        pts = np.round(pts.astype(np.float64), 4).tolist()
        return {
            "seed": self.record(p.row) if p.row >= 0 else None,
            "source_mood": self.moods[p.source],
            "source_mood_source": p.source_kind,
            "source_mood_probability": p.source_probability,
            "target_mood": self.moods[p.target],
            "strength": p.reported_strength,
            "evidence": p.evidence,
            "k": p.k,
            "filters": p.filters,
            "results": results,
            "map": {"seed": pts[0], "query": pts[1], "results": pts[2:]},
            "index": self.index_kind,
            "took_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }  # fmt: skip

    def playlist(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a validated ``POST /playlist`` body with ``{"tracks": [...]}``."""
        t0 = time.perf_counter()
        row = self.row_of(body["track_id"])
        target = self.mood_code(body["to"], field="to")
        via = None if body.get("via") is None else self.mood_code(body["via"], field="via")
        items = mood_journey(self.engine, seed_row=row, target=target,
                             length=int(body.get("length") or 12), via=via,
                             max_per_artist=body.get("max_per_artist"))  # fmt: skip
        tracks = [
            {**self.record(it.row), **entry}
            for it, entry in zip(items, describe_journey(self.engine, items), strict=True)
        ]
        # The playlist rule (docs/security.md): audio only from inside an audio root.
        left_out = 0
        for it, t in zip(items, tracks, strict=True):
            if t["audio_url"] is not None and self.audio_file(it.row) is None:
                t["audio_url"], left_out = None, left_out + 1
        # The seed's mood as the results show theirs (label, or the tagger's guess and its p).
        seed = self.described(row)
        return {"seed": seed, "to": self.moods[target], "tracks": tracks,
                "audio_left_out": left_out,
                "took_ms": round((time.perf_counter() - t0) * 1e3, 3)}  # fmt: skip

    # ------------------------------------------------------------------ labelling
    def label_refusal(self) -> str | None:
        """Why labels given on the page cannot be saved now (None: they can)."""
        if self.workers > 1:
            return (f"labelling needs one server process, and this one runs {self.workers}: "
                    "restart `moodshift serve` without --workers, or label with "
                    "`moodshift label --catalog ...`")  # fmt: skip
        if self.catalog_dir is None:
            return ("the server was given a catalogue object, not its folder, so labels "
                    "have nowhere to be saved; serve the catalogue folder")  # fmt: skip
        # The save replaces the folder: both it and its parent must be writable.
        folder = self.catalog_dir
        if not all(os.access(d, os.W_OK) for d in (folder, folder.resolve().parent)):
            return (f"the catalogue folder {folder} is read-only; make it (and its parent) "
                    "writable, or label with `moodshift label` where it is")  # fmt: skip
        return None

    def suggest(self, *, n: int) -> dict[str, Any]:
        """The ``n`` unlabelled tracks whose labels would help most (``GET /label/next``).

        The same choice as ``moodshift label``
        (:func:`moodshift.retrieval.labelling.to_label`), on the evidence served now.
        """
        proba = self.evidence.proba
        if proba is None:
            raise InputError("this model has no mood tagger to learn from labels; retrain it "
                             "with `moodshift train`")  # fmt: skip
        suggested = self._suggested
        if suggested is None or len(suggested) < n:
            if self._density is None:  # labels do not change it: once per server
                self._density = label_density(self.catalog.embeddings)
            suggested, _ = to_label(model=self.model, embeddings=self.catalog.embeddings,
                                    labels=self.evidence.labels, k=max(n, SUGGEST_CACHE),
                                    proba=proba, density=self._density)  # fmt: skip
            self._suggested = suggested
        tracks = []
        for r in suggested[:n].tolist():
            rec = self.described(r)
            rec["probabilities"] = {m: round(float(v), 4) for m, v in
                                    zip(self.moods, proba[r].tolist(), strict=True)}  # fmt: skip
            tracks.append(rec)
        return {"attribute": self.attribute, "moods": self.moods,
                "labelled": int((self.evidence.labels >= 0).sum()), "tracks": tracks,
                "refusal": self.label_refusal()}  # fmt: skip

    def set_label(self, *, track_id: str, mood: str) -> dict[str, Any]:
        """Save the user's mood for a track and serve with it at once (``POST /label``).

        The label goes into the catalogue folder atomically (the writer ``moodshift
        label`` uses), then the retriever rebuilds p(mood | track), the engine's
        evidence and the label postings (:meth:`Retriever.relabelled`), so the next
        query and the next suggestion use it.

        Raises
        ------
        UnknownTrackError
            For a track id the catalogue does not hold (404).
        UnknownMoodError
            For a mood the model does not know (422, naming the known moods).
        LabelsReadOnlyError
            When the labels cannot be saved (:meth:`label_refusal`; 409).
        """
        row = self.row_of(track_id)
        code = self.mood_code(mood, field="mood")
        with self._label_lock:
            refusal = self.label_refusal()
            if refusal is not None:
                raise LabelsReadOnlyError(refusal)
            assert self.catalog_dir is not None
            old = self.catalog.labels[self.attribute].iat[row] if (
                self.attribute in self.catalog.labels.columns) else None  # fmt: skip
            set_label(self.catalog, row=row, attribute=self.attribute, value=self.moods[code])
            try:
                self.catalog.save(self.catalog_dir)  # atomic: a crash keeps the previous one
            except OSError as exc:
                # Memory and disk stay the same: the label is not half-taken.
                if old is None:
                    self.catalog.labels.drop(columns=self.attribute, inplace=True)
                else:
                    self.catalog.labels.loc[self.catalog.labels.index[row], self.attribute] = old
                raise LabelsReadOnlyError(
                    f"the label could not be saved in {self.catalog_dir} ({exc}); make the "
                    "folder writable") from None  # fmt: skip
            self.retriever.relabelled()
            self.columns[self.attribute][row] = self.moods[code]
            self._search_text = None
            self._suggested = None
            self._map_moods()
        log.info("labelled %s as %s in %s", track_id, self.moods[code], self.catalog_dir)
        return {"track": self.described(row),
                "labelled": int((self.evidence.labels >= 0).sum())}  # fmt: skip

    def info(self) -> dict[str, Any]:
        filters = {}
        for c in self.postings.columns():
            vals = self.postings.values(c)
            filters[c] = vals[:500]
        return {
            "n_tracks": self.n,
            "dim": self.dim,
            "attribute": self.attribute,
            "moods": self.moods,
            "filters": filters,
            "max_k": self.max_k,
            "default_strength": self.engine.settings.strength_label,
            "evidence": {
                "modes": list(EVIDENCE_MODES),
                "tagger": self.model.tagger is not None,
                **self.engine.settings.to_dict(),
            },
            "labelled": int((self.evidence.labels >= 0).sum()),
            "fast_path": self.fast_path,
            "index": {"kind": self.index_kind, **self.index_meta},
            "embedder": {k: self.catalog.provenance.get(k) for k in ("name", "version", "dim")},
            "has_audio": bool(self.has_audio.any()),
            "labelling": self.label_refusal() is None,
        }


#: Audio media types by file suffix (``mimetypes`` misses some, e.g. ``.opus``).
AUDIO_TYPES = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".oga": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4", ".aac": "audio/aac",
    ".aif": "audio/aiff", ".aiff": "audio/aiff", ".weba": "audio/webm", ".mid": "audio/midi",
}  # fmt: skip


def audio_media_type(path: Path) -> str | None:
    """The audio media type of a file name, or None when it is not audio."""
    known = AUDIO_TYPES.get(path.suffix.lower())
    if known:
        return known
    guess, _ = mimetypes.guess_type(path.name)
    return guess if guess and guess.startswith("audio/") else None
