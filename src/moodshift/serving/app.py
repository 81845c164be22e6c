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
approximate index (or a catalogue of at most :data:`moodshift.retrieval.index.EXACT_MAX_ROWS`
tracks) it is answered inline on the event loop by the middleware (``GuardMiddleware``),
which validates the body with the same pydantic model as the documented FastAPI
route and skips routing and dependency resolution; an exact search over a
larger catalogue goes through the FastAPI route and the threadpool instead.

Measured CPU per ``POST /query`` in one server process (100k tracks, 256-d,
HNSW, k = 10; 2 shared cores, ``python -m moodshift.bench.serve``): ~1.0 ms
without a filter, ~3.4 ms with a genre filter (17 % of the tracks, answered
exactly: see :mod:`moodshift.retrieval.index`); ``GET /healthz`` costs ~0.13 ms.
``serve(workers=N)`` runs N processes sharing the memory-mapped data.

Audio files are only ever looked up by track id through the catalogue:
nothing from the URL becomes a filesystem path.
"""


# No ``from __future__ import annotations`` here: FastAPI reads the route
# functions' annotations at runtime, and they name classes local to create_app.

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.errors import (
    MoodshiftError,
    UnknownLabelError,
)
from moodshift.retrieval.index import FaissIndex
from moodshift.serving.middleware import (
    DEFAULT_MAX_BODY,
    GuardMiddleware,
    RequestMetrics,
    error_payload,
)
from moodshift.serving.state import ServingState
from moodshift.training.model import MoodshiftModel

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")


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
    metrics = RequestMetrics()
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
        evidence: Literal["auto", "labels", "probe", "none"] = Field(
            "auto",
            description="Mood evidence in ranking: labels where known and the model's tagger "
            "elsewhere (auto), labels only, the tagger only (probe), or none",
        )
        max_per_artist: int | None = Field(
            None, ge=1, le=max_k, description="At most this many results per artist"
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
        code, payload = error_payload(exc)
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
            code, payload = error_payload(exc)
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
        by the middleware's fast path with the same code (see ``GuardMiddleware``).
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
    app.add_middleware(GuardMiddleware, metrics=metrics, max_body=max_body, fast=fast)
    return app
