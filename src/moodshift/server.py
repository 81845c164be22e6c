"""HTTP API and web page: ``moodshift serve --catalog C --model M``.

Routes (OpenAPI docs at ``/docs``)::

    GET  /                     the web page (static files under /static)
    GET  /tracks?q=&mood=&genre=&page=&page_size=    search seeds (paginated)
    GET  /tracks/{id}          one track
    POST /query                like this track (or embedding), but <mood>
    GET  /audio/{id}           the track's audio file, with HTTP range requests
    GET  /api/info             moods, filterable labels, index facts (for the page)
    GET  /map                  2-D PCA coordinates of a fixed sample of the catalogue
    GET  /healthz              liveness
    GET  /metrics              Prometheus text: requests per route/status, latency histogram

Design of the request path (``POST /query``): everything a query touches is
precomputed at startup (track id -> row dict, label postings for filters,
label columns as numpy object arrays, a fixed 2-D PCA of the catalogue, the
model's layers as numpy arrays: :class:`FastTransform`), so a query is one row
lookup, one forward pass, one index search and ``k`` array lookups. With an
approximate index (or a catalogue of at most :data:`moodshift.index.EXACT_MAX_ROWS`
tracks) it is answered inline on the event loop by the middleware (``_Guard``),
which validates the body with the same pydantic model as the documented FastAPI
route and skips routing and dependency resolution; an exact search over a
larger catalogue goes through the FastAPI route and the threadpool instead.

Measured CPU per ``POST /query`` in one server process (100k tracks, 256-d,
HNSW, k = 10; 2 shared cores, ``python -m moodshift.bench_serve``): ~1.0 ms
without a filter, ~3.4 ms with a genre filter (17 % of the tracks, answered
exactly: see :mod:`moodshift.index`); ``GET /healthz`` costs ~0.13 ms.
``serve(workers=N)`` runs N processes sharing the memory-mapped data.

Audio files are only ever looked up by track id through the catalogue:
nothing from the URL becomes a filesystem path.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route
# functions' annotations at runtime, and they name classes local to create_app.

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np

from moodshift.catalog import SEPARATOR, Catalog, l2_normalize, parse_values
from moodshift.errors import (
    InputError,
    MoodshiftError,
    UnknownLabelError,
    UnknownTrackError,
)
from moodshift.index import EXACT_MAX_ROWS, FaissIndex, LabelPostings, build_index
from moodshift.model import MoodshiftModel

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
DEFAULT_MAX_BODY = 64 * 1024
#: Upper bounds (seconds) of the latency histogram's buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MAP_SAMPLE = 2000
PCA_SAMPLE = 20_000


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
    """

    def __init__(
        self, *, catalog: Catalog, model: MoodshiftModel, index: Any | None, max_k: int
    ) -> None:
        catalog.check_compatible(model.embedder, what="model")
        self.catalog = catalog
        self.model = model
        self.max_k = int(max_k)
        self.n = len(catalog)
        self.dim = catalog.dim
        labels = catalog.labels
        self.attribute = model.attribute
        if self.attribute not in labels.columns:
            raise InputError(
                f"the model transforms {self.attribute!r} but the catalogue has no such column "
                f"(columns: {list(labels.columns)}); serve a model trained on this catalogue."
            )
        self.moods = list(model.classes)
        self._mood_index = {m: i for i, m in enumerate(self.moods)}
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
        self.has_audio = (
            labels["audio_path"].fillna("").astype(str).str.len().to_numpy() > 0
            if "audio_path" in labels.columns
            else np.zeros(self.n, dtype=bool)
        )
        if self.attribute not in self.columns:
            self.columns[self.attribute] = labels[self.attribute].astype(str).to_numpy(object)
        # Seed moods as model class codes (-1: a value the model does not know).
        self.source_codes = np.array(
            [self._mood_index.get(v, -1) for v in self.columns[self.attribute]], dtype=np.int64
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
        self.index_kind = getattr(index, "kind", type(index).__name__)
        self.index_meta = {
            k: v
            for k, v in getattr(index, "meta", {}).items()
            if k in ("kind", "params", "recall_at_10", "recall_at_10_filtered", "build_seconds")
        }
        postings = getattr(index, "postings", None)
        self.postings: LabelPostings = postings or LabelPostings.from_frame(
            labels, self.label_columns
        )
        self.inline = self.n <= EXACT_MAX_ROWS or self.index_kind in ("hnsw", "ivf")
        self._parsed: dict[str, list[str]] = {}
        self.transform = FastTransform.build(model)
        self._fit_map()
        self._search_text: Any = None
        self._search_lock = threading.Lock()
        log.info("serving state ready in %.2f s", time.perf_counter() - t0)

    # ------------------------------------------------------------------ vectors
    def unit_row(self, rows: np.ndarray | int) -> np.ndarray:
        """Unit-norm embedding(s) of catalogue rows, read from the (mapped) matrix."""
        x = np.asarray(self.catalog.embeddings[rows], dtype=np.float32)
        if x.ndim == 1:  # one row: skip np.linalg.norm's overhead
            return x / max(math.sqrt(float(x @ x)), 1e-12)
        return l2_normalize(x)

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
        self.map_points = {
            "moods": self.moods,
            "explained_variance": [round(v, 4) for v in self.pca_explained],
            "points": [
                [round(float(a), 4), round(float(b), 4), int(self.source_codes[r])]
                for (a, b), r in zip(pts, map_rows, strict=True)
            ],
        }

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

    def row_of(self, track_id: str) -> int:
        row = self.id_to_row.get(track_id)
        if row is None:
            raise UnknownTrackError(
                f"unknown track id {track_id!r}; search for one with GET /tracks?q=..."
            )
        return row

    def mood_code(self, mood: str, *, field: str) -> int:
        code = self._mood_index.get(mood)
        if code is None:
            raise _UnknownMood(field=field, value=mood, known=self.moods)
        return code

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
        start = (page - 1) * page_size
        if rows is None:
            page_rows = np.arange(start, min(self.n, start + page_size))
        else:
            page_rows = rows[start : start + page_size]
        return {
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": max(1, math.ceil(total / page_size)),
            "items": [self.record(int(r)) for r in page_rows],
        }

    def _text(self) -> Any:
        """Lower-case searchable text per track (built on first use: ~100 B per track)."""
        if self._search_text is None:
            with self._search_lock:
                if self._search_text is None:
                    import pandas as pd

                    parts = [pd.Series(self.track_ids)]
                    parts += [pd.Series(self.columns[c]) for c in self.columns]
                    text = parts[0]
                    for p in parts[1:]:
                        text = text + "\n" + p
                    self._search_text = text.str.lower()
        return self._search_text

    # ------------------------------------------------------------------ query
    def query(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a validated ``POST /query`` body (see :class:`QueryRequest`)."""
        t0 = time.perf_counter()
        target = self.mood_code(body["target_mood"], field="target_mood")
        k = int(body["k"])
        raw = body.get("strength")
        strength = self.model.default_strength if raw is None else float(raw)
        track_id, embedding = body.get("track_id"), body.get("embedding")
        if (track_id is None) == (embedding is None):
            raise _BodyError("body", "give exactly one of track_id or embedding")
        if track_id is not None:
            row = self.row_of(track_id)
            seed = self.unit_row(row)
            source = int(self.source_codes[row])
            if source < 0:
                raise _BodyError(
                    "track_id",
                    f"the seed's {self.attribute} {self.columns[self.attribute][row]!r} is not "
                    f"one the model knows ({', '.join(self.moods)})",
                )
        else:
            row = -1
            seed = self._check_embedding(embedding)
            src = body.get("source_mood")
            if src is None:
                raise _BodyError(
                    "source_mood",
                    f"with an embedding, give its source_mood (one of {', '.join(self.moods)})",
                )
            source = self.mood_code(src, field="source_mood")
        qvec = self.transform(seed, source=source, target=target, strength=strength)
        filters = body.get("filters") or None
        if filters:
            try:
                allowed = self.postings.mask(filters)
            except UnknownLabelError as exc:
                raise _BodyError("filters", str(exc)) from None
            if row >= 0:
                allowed[row] = False
            idx, sc = self.index.search(qvec[None, :], k=k, allowed=allowed)
        else:
            # The seed is the only row to leave out: fetch one more instead of
            # building an n-sized mask.
            idx, sc = self.index.search(qvec[None, :], k=k + (row >= 0))
        idx, sc = idx[0], sc[0]
        keep = (idx >= 0) & (idx != row)
        idx, sc = idx[keep][:k], sc[keep][:k]
        results = []
        for rank, (i, s) in enumerate(zip(idx.tolist(), sc.tolist(), strict=True), start=1):
            rec = self.record(i)
            rec["rank"] = rank
            rec["score"] = round(s, 5)
            results.append(rec)
        pts = self.project(np.vstack([seed, qvec, self.unit_row(idx)]) if len(idx) else
                           np.vstack([seed, qvec]))  # fmt: skip
        pts = np.round(pts.astype(np.float64), 4).tolist()
        return {
            "seed": self.record(row) if row >= 0 else None,
            "source_mood": self.moods[source],
            "target_mood": self.moods[target],
            "strength": strength,
            "k": k,
            "filters": filters or {},
            "results": results,
            "map": {"seed": pts[0], "query": pts[1], "results": pts[2:]},
            "index": self.index_kind,
            "took_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }

    def _check_embedding(self, embedding: Any) -> np.ndarray:
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.ndim != 1 or vec.size != self.dim:
            raise _BodyError(
                "embedding",
                f"dimension mismatch: the catalogue's embeddings are {self.dim}-d but the "
                f"embedding has {vec.size} values; embed with the catalogue's embedder "
                f"({self.catalog.provenance.get('name')})",
            )
        if not np.isfinite(vec).all():
            raise _BodyError("embedding", "embedding contains NaN or infinity; send finite numbers")
        if not np.any(vec):
            raise _BodyError("embedding", "embedding is all zeros; cosine similarity is undefined")
        return l2_normalize(vec[None, :])[0]

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
            "default_strength": self.model.default_strength,
            "index": {"kind": self.index_kind, **self.index_meta},
            "embedder": {k: self.catalog.provenance.get(k) for k in ("name", "version", "dim")},
            "has_audio": bool(self.has_audio.any()),
        }


class FastTransform:
    """The model's eval-mode transform of one vector, in numpy, for the request path.

    ``MoodshiftModel.transform`` goes through torch's module machinery, which
    costs about 0.5 ms per call for a single vector, more than the index search.
    Here the network's ``Linear``/``ReLU``/``Dropout`` layers become numpy
    matrix-vector products, and the mood branch (whose input is one of m x m
    one-hot differences) is precomputed for every (source, target) pair.
    :meth:`build` checks the result against ``model.transform`` on random
    vectors and falls back to it (with a log line) when they disagree or the
    network has layers this class does not know, so a change to the model
    cannot silently change the answers.
    """

    def __init__(self, model: MoodshiftModel) -> None:
        import torch
        from torch import nn

        net = model.net
        m = len(model.classes)

        def layers(seq: Any) -> list[tuple[np.ndarray, np.ndarray] | str]:
            ops: list[tuple[np.ndarray, np.ndarray] | str] = []
            for mod in seq:
                if isinstance(mod, nn.Linear):
                    w = mod.weight.detach().cpu().numpy().astype(np.float32)
                    b = mod.bias.detach().cpu().numpy().astype(np.float32)
                    ops.append((np.ascontiguousarray(w.T), b))
                elif isinstance(mod, nn.ReLU):
                    ops.append("relu")
                elif isinstance(mod, nn.Dropout):
                    continue  # identity in eval mode
                else:
                    raise TypeError(f"unsupported layer {type(mod).__name__}")
            return ops

        self.embedding_ops = layers(net.embedding_branch)
        self.head_ops = layers(net.head)
        self.residual = bool(net.arch.residual)
        eye = torch.eye(m)
        src, tgt = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
        cond = eye[tgt.reshape(-1)] - eye[src.reshape(-1)]
        with torch.inference_mode():
            cls = net.class_branch.eval()(cond).numpy().astype(np.float32)
        self.class_out = cls.reshape(m, m, -1)  # [source, target] -> branch output

    @classmethod
    def build(cls, model: MoodshiftModel, *, check: int = 16, seed: int = 0) -> Any:
        """A verified fast transform, or ``model.transform`` itself as the fallback."""
        try:
            fast = cls(model)
            rng = np.random.default_rng(seed)
            m = len(model.classes)
            for i in range(check):
                x = l2_normalize(rng.standard_normal((1, model.dim)).astype(np.float32))[0]
                s, t, st = i % m, (i * 7 + 1) % m, (0.0, 0.3, 1.0)[i % 3]
                ref = model.transform(x, source=s, target=t, strength=st)
                got = fast(x, source=s, target=t, strength=st)
                if not np.allclose(got, ref, atol=2e-5):
                    raise ValueError(f"max difference {np.abs(got - ref).max():.2e}")
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("fast transform unavailable (%s); using model.transform", exc)
            return model.transform
        return fast

    @staticmethod
    def _run(ops: list[Any], h: np.ndarray) -> np.ndarray:
        for op in ops:
            if op == "relu":
                np.maximum(h, 0.0, out=h)
            else:
                h = h @ op[0]
                h += op[1]
        return h

    def __call__(self, x: np.ndarray, *, source: int, target: int, strength: float) -> np.ndarray:
        """Transform one unit vector (shape (d,)); returns a unit vector (d,)."""
        h = self._run(self.embedding_ops, x)
        out = self._run(self.head_ops, np.concatenate([h, self.class_out[source, target]]))
        if self.residual:
            out = out + x
        # slerp(x, out, strength) for one vector (same formula as moodshift.model.slerp).
        b = out / max(float(np.linalg.norm(out)), 1e-12)
        dot = min(1.0, max(-1.0, float(x @ b)))
        omega = math.acos(dot)
        so = math.sin(omega)
        t = float(strength)
        if so < 1e-6:
            v = (1.0 - t) * x + t * b
        else:
            v = (math.sin((1.0 - t) * omega) / so) * x + (math.sin(t * omega) / so) * b
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


class _BodyError(InputError):
    """A request-body field is invalid (answered with 422 naming the field)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg


class _UnknownMood(UnknownLabelError):
    def __init__(self, *, field: str, value: str, known: list[str]) -> None:
        super().__init__(f"unknown {field.replace('_', ' ')} {value!r}; known: {', '.join(known)}")
        self.field = field
        self.known = known


# ---------------------------------------------------------------------- ASGI middleware
class _Metrics:
    """Request counts per (method, route, status) and a latency histogram per route."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[float]] = {}  # route -> bucket counts..., +Inf, sum

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        for i, b in enumerate(LATENCY_BUCKETS):
            if seconds <= b:
                h[i] += 1
                break
        else:
            h[len(LATENCY_BUCKETS)] += 1
        h[-1] += seconds

    def render(self) -> str:
        lines = [
            "# HELP moodshift_requests_total HTTP requests by method, route and status.",
            "# TYPE moodshift_requests_total counter",
        ]
        for (method, route, status), c in sorted(self.counts.items()):
            lines.append(
                f'moodshift_requests_total{{method="{method}",route="{_esc(route)}",'
                f'status="{status}"}} {c}'
            )
        lines += [
            "# HELP moodshift_request_duration_seconds Time from request to last response byte.",
            "# TYPE moodshift_request_duration_seconds histogram",
        ]
        for route, h in sorted(self.hist.items()):
            r = _esc(route)
            cum = 0.0
            for b, c in zip(LATENCY_BUCKETS, h, strict=False):
                cum += c
                lines.append(
                    f'moodshift_request_duration_seconds_bucket{{route="{r}",le="{b}"}} {int(cum)}'
                )
            cum += h[len(LATENCY_BUCKETS)]
            lines.append(
                f'moodshift_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {int(cum)}'
            )
            lines.append(f'moodshift_request_duration_seconds_sum{{route="{r}"}} {h[-1]:.6f}')
            lines.append(f'moodshift_request_duration_seconds_count{{route="{r}"}} {int(cum)}')
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Guard:
    """Pure-ASGI middleware: body-size limit (413) and request metrics.

    Written against raw ASGI rather than ``BaseHTTPMiddleware`` because the
    latter adds a task and a memory stream per request, which shows in p99.
    """

    def __init__(
        self,
        app: Any,
        *,
        metrics: _Metrics,
        max_body: int,
        fast: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        # (method, path) -> handler(body bytes) -> (status, JSON bytes). Such routes
        # are answered here, skipping routing and FastAPI's dependency machinery
        # (about a third of the server's CPU per query); the FastAPI route of the
        # same path calls the same handler, so both give identical answers.
        self.fast = fast or {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    await _send_json(
                        send, 413,
                        {"detail": f"request body larger than {self.max_body} bytes; send less"},
                    )  # fmt: skip
                    status[0] = 413
                    scope["route_name"] = "<too large>"
                    return
                handler = self.fast.get((scope["method"], scope["path"]))
                if handler is not None and _is_json(scope):
                    scope["route_name"] = scope["path"]
                    code, data = handler(body)
                    status[0] = code
                    await _send_bytes(send, code, data)
                    return
                sent = [False]

                async def replay() -> dict:
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = scope.get("route_name") or getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope["method"], name, status[0], time.perf_counter() - t0)

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    return None
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _is_json(scope: dict) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return True  # no content type: parse as JSON, as FastAPI does


async def _send_bytes(send: Any, status: int, data: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": data})


def _error_payload(exc: MoodshiftError) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of an error raised while answering a request."""
    if isinstance(exc, _UnknownMood):
        detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "unknown_mood"}]
        return 422, {"detail": detail, "known_moods": exc.known}
    if isinstance(exc, _BodyError):
        loc = ["body"] if exc.field == "body" else ["body", exc.field]
        return 422, {"detail": [{"loc": loc, "msg": exc.msg, "type": "value_error"}]}
    if isinstance(exc, UnknownTrackError):
        return 404, {"detail": str(exc)}
    return (422 if isinstance(exc, InputError) else 500), {"detail": str(exc)}


async def _send_json(send: Any, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close")],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------- the app
def create_app(
    *,
    catalog: Catalog,
    model: MoodshiftModel,
    index: Any | None = None,
    max_k: int = 100,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    inline: bool | None = None,
) -> Any:
    """The FastAPI application (routes in the module docstring).

    Parameters
    ----------
    catalog : Catalog
        Tracks to retrieve from (all of them).
    model : MoodshiftModel
        Must have been trained on embeddings of the catalogue's embedder.
    index : FaissIndex, VectorIndex, path or None
        A path is loaded with :meth:`FaissIndex.load` and checked against the
        catalogue; None builds an exact in-memory index.
    max_k : int
        Largest ``k`` a query may ask for (422 above).
    max_body_bytes : int
        Request bodies above this size get 413. Raised automatically when a
        ``dim``-d embedding in JSON (about 24 bytes per value) would not fit.
    inline : bool, optional
        Answer ``POST /query`` on the event loop (fast path) rather than in the
        threadpool. Default: when the index is approximate or the catalogue has
        at most :data:`EXACT_MAX_ROWS` tracks, i.e. when a query takes ~1 ms.

    Returns
    -------
    fastapi.FastAPI
    """
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, PlainTextResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from moodshift import __version__

    if isinstance(index, str | os.PathLike):
        index = FaissIndex.load(index, catalog=catalog)
    state = ServingState(catalog=catalog, model=model, index=index, max_k=max_k)
    if inline is not None:
        state.inline = bool(inline)
    metrics = _Metrics()
    moods = state.moods

    class QueryRequest(BaseModel):
        """Like this track (or this embedding), but in ``target_mood``."""

        model_config = ConfigDict(extra="forbid")
        track_id: str | None = Field(None, description="Seed track id (or give embedding)")
        embedding: list[float] | None = Field(
            None, description=f"Seed embedding, {state.dim} numbers (or give track_id)"
        )
        source_mood: str | None = Field(None, description=f"Mood of the embedding: {moods}")
        target_mood: str = Field(..., description=f"One of {moods}")
        k: int = Field(10, ge=1, le=max_k, description=f"Number of results, 1..{max_k}")
        strength: float | None = Field(
            None, ge=0.0, le=1.0,
            description="0 = seed, 1 = full transform; default: the model's (chosen on validation)",
        )  # fmt: skip
        filters: dict[str, str | list[str]] | None = Field(
            None, description="Label filters, e.g. {'genre': 'rock'} (any of a list)"
        )

    app = FastAPI(
        title="moodshift",
        version=__version__,
        description="Like this track, but in another mood: retrieval in embedding space.",
    )
    app.state.moodshift = state
    app.state.metrics = metrics

    def json_response(payload: Any, status: int = 200) -> Response:
        # json.dumps straight to bytes: FastAPI's jsonable_encoder walks every
        # value in Python and costs more than the search itself.
        return Response(json.dumps(payload), status_code=status, media_type="application/json")

    @app.exception_handler(MoodshiftError)
    async def _moodshift_error(request: Request, exc: MoodshiftError) -> Response:
        code, payload = _error_payload(exc)
        return json_response(payload, status=code)

    def validation_payload(errors: list[dict[str, Any]], *, prefix: tuple = ()) -> dict:
        detail = [
            {"loc": [str(p) for p in (*prefix, *e.get("loc", ()))], "msg": e["msg"],
             "type": e["type"]}
            for e in errors
        ]  # fmt: skip
        return {"detail": detail}

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return json_response(validation_payload(exc.errors()), status=422)

    def answer(req: Any) -> tuple[int, bytes]:
        """A validated ``POST /query`` body to (status, JSON bytes)."""
        try:
            return 200, json.dumps(state.query(req.model_dump())).encode()
        except MoodshiftError as exc:
            code, payload = _error_payload(exc)
            return code, json.dumps(payload).encode()

    def answer_raw(raw: bytes) -> tuple[int, bytes]:
        """``POST /query`` from the raw body (the middleware's fast path)."""
        try:
            req = QueryRequest.model_validate_json(raw)
        except ValidationError as exc:
            payload = validation_payload(exc.errors(), prefix=("body",))
            return 422, json.dumps(payload).encode()
        return answer(req)

    # ------------------------------------------------------------------ routes
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return json_response({"status": "ok", "tracks": state.n, "index": state.index_kind})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/api/info", tags=["tracks"])
    async def info() -> Response:
        return json_response(state.info())

    @app.get("/map", tags=["tracks"])
    async def catalogue_map() -> Response:
        return json_response(state.map_points)

    @app.get("/tracks", tags=["tracks"])
    def tracks(
        q: Annotated[str | None, Query(max_length=200, description="id/title/label text")] = None,
        mood: Annotated[str | None, Query(description="only this mood")] = None,
        genre: Annotated[str | None, Query(description="only this genre")] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        filters = {}
        if mood:
            filters[state.attribute] = mood
        if genre:
            filters["genre"] = genre
        try:
            out = state.search_tracks(q=q, filters=filters, page=page, page_size=page_size)
        except UnknownLabelError as exc:
            return json_response(
                {"detail": [{"loc": ["query"], "msg": str(exc), "type": "unknown_label"}]},
                status=422,
            )
        return json_response(out)

    @app.get("/tracks/{track_id:path}", tags=["tracks"])
    async def track(track_id: str) -> Response:
        row = state.row_of(track_id)
        rec = state.record(row)
        rec["map"] = np.round(state.project(state.unit_row(row)), 4)[0].tolist()
        return json_response(rec)

    @app.post("/query", tags=["query"])
    async def query(req: QueryRequest) -> Response:
        """Like this track (or embedding), but in ``target_mood``: ranked results + map.

        With an approximate index (or a small catalogue) this route is answered
        by the middleware's fast path with the same code (see ``_Guard``).
        """
        from fastapi.concurrency import run_in_threadpool

        code, data = await run_in_threadpool(answer, req)
        return Response(data, status_code=code, media_type="application/json")

    @app.get("/audio/{track_id:path}", tags=["tracks"])
    async def audio(track_id: str) -> Response:
        # The id is only a dictionary key; the path comes from the catalogue.
        row = state.id_to_row.get(track_id)
        path = state.catalog.audio_path(row) if row is not None else None
        if path is None or not path.is_file():
            what = "unknown track id" if row is None else "no audio file for this track"
            return json_response({"detail": f"{what}: {track_id!r}"}, status=404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def page() -> Response:
            return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    max_body = max(int(max_body_bytes), 24 * state.dim + 4096)
    # Inline on the event loop only when a query is fast (see the module docstring).
    fast = {("POST", "/query"): answer_raw} if state.inline else {}
    app.add_middleware(_Guard, metrics=metrics, max_body=max_body, fast=fast)
    return app


def serve(
    *,
    catalog: str | os.PathLike[str] | Catalog,
    model: str | os.PathLike[str] | MoodshiftModel,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str | os.PathLike[str] | None = None,
    max_k: int = 100,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Load catalogue, model and index, then run the app with uvicorn (blocks).

    Parameters
    ----------
    catalog : folder or Catalog
        Loaded memory-mapped.
    model : folder or MoodshiftModel
    index : folder, optional
        Defaults to ``<catalog>/index`` when that exists (built by ``moodshift
        index``); refused with :class:`StaleArtifactError` if it no longer matches.
    workers : int
        Server processes. One Python process serves queries on about one core;
        more processes share the memory-mapped catalogue and index pages. Needs
        folders (not objects) for ``catalog`` and ``model``. ``/metrics`` then
        describes the worker that answered it.
    access_log : bool
        One log line per request (off by default: it costs CPU; /metrics counts).
    """
    import uvicorn

    if workers > 1:
        if isinstance(catalog, Catalog) or isinstance(model, MoodshiftModel):
            raise InputError("serve(workers > 1) needs catalogue and model folders, not objects.")
        spec = {"catalog": str(catalog), "model": str(model), "max_k": max_k,
                "index": None if index is None else str(index)}  # fmt: skip
        _check_artifacts(**spec)  # fail here, once, on a stale index or a bad folder
        os.environ[_WORKER_ENV] = json.dumps(spec)
        print(f"moodshift: {workers} workers at http://{host}:{port}/", flush=True)
        uvicorn.run(
            "moodshift.server:_worker_app", factory=True, workers=workers, host=host, port=port,
            access_log=access_log, log_level=log_level,
        )  # fmt: skip
        return
    t0 = time.perf_counter()
    app = _load_app(catalog=catalog, model=model, index=index, max_k=max_k)
    state = app.state.moodshift
    print(
        f"moodshift: {state.n} tracks ({state.dim}-d), index {state.index_kind}, moods "
        f"{state.moods}; ready in {time.perf_counter() - t0:.1f} s at http://{host}:{port}/ "
        f"(API docs /docs)",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=log_level)


_WORKER_ENV = "MOODSHIFT_SERVE_SPEC"


def _limit_threads() -> None:
    """One thread per library: a request is one small forward pass and one search.

    Intra-op threads only add hand-off cost while concurrent requests already
    use the cores. Measured: with OpenBLAS's default threads a 100k-track server
    spent ~9 ms of CPU per query spinning on 2 busy cores, 1.7 ms with one thread.
    """
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(ImportError):
        import faiss

        faiss.omp_set_num_threads(1)
    with contextlib.suppress(ImportError):  # comes with scikit-learn
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)  # numpy's BLAS, already loaded by this module


def _load_app(
    *,
    catalog: str | os.PathLike[str] | Catalog,
    model: str | os.PathLike[str] | MoodshiftModel,
    index: str | os.PathLike[str] | None,
    max_k: int,
) -> Any:
    from moodshift.index import load_catalog_index

    _limit_threads()
    cat = catalog if isinstance(catalog, Catalog) else Catalog.load(catalog, mmap=True)
    mdl = model if isinstance(model, MoodshiftModel) else MoodshiftModel.load(model)
    catalog_path = None if isinstance(catalog, Catalog) else catalog
    idx = load_catalog_index(cat, catalog_path=catalog_path, path=index)
    return create_app(catalog=cat, model=mdl, index=idx, max_k=max_k)


def _check_artifacts(*, catalog: str, model: str, index: str | None, max_k: int) -> None:
    from moodshift.index import load_catalog_index

    cat = Catalog.load(catalog, mmap=True)
    cat.check_compatible(MoodshiftModel.load(model).embedder, what="model")
    load_catalog_index(cat, catalog_path=catalog, path=index)


def _worker_app() -> Any:
    """App factory of each ``serve(workers > 1)`` process (spec passed in the environment)."""
    return _load_app(**json.loads(os.environ[_WORKER_ENV]))
