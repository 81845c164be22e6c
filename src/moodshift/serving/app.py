"""HTTP API and web page: ``moodshift serve --catalog C --model M``.

Routes (OpenAPI docs at ``/docs``)::

    GET  /                     the web page (static files under /static)
    GET  /tracks?q=&mood=&genre=&page=&page_size=    search seeds (paginated)
    GET  /tracks/{id}          one track
    POST /query                like this track (or embedding), but <mood>
    GET  /audio/{id}           the track's audio file, with HTTP range requests
    GET  /label/next?n=        the tracks whose mood labels would help most (active learning)
    POST /label                the user's mood for a track: saved, and served at once
    GET  /api/info             moods, filterable labels, index facts (for the page)
    GET  /map                  2-D PCA coordinates of a fixed sample of the catalogue
    GET  /healthz              liveness
    GET  /metrics              Prometheus text: requests per route/status, latency histogram

Design of the request path (``POST /query``): everything a query touches is
precomputed at startup (track id -> row dict, label postings for filters,
label columns as numpy object arrays, a fixed 2-D PCA of the catalogue, the
model's layers as numpy arrays: :class:`moodshift.model.fast.NumpyTransform`,
and each target mood's candidates when they are few enough to score as one
block), then frozen out of the garbage collector. The middleware
(``GuardMiddleware``) validates the body with the same pydantic model as the
documented FastAPI route, skipping routing, and hands it to the micro-batcher
(:mod:`moodshift.serving.batching`): queries that arrive together are answered
with one batched transform and one batched search, each with its own
strength, filter and ``k``.

Measured in one server process (100k tracks, 256-d, HNSW, k = 10, 20 % of
queries filtered by genre; 2 shared cores; see benchmarks/RESULTS.md, "Scale"): a micro-batch
of 32 costs ~0.9 ms of CPU per unfiltered query and ~2.7 ms per filtered one
(an exact scan of the filter's rows, memory-bound); alone, 2.1 and 3.7 ms.
``serve(workers=N)`` runs N processes sharing the memory-mapped data.

Audio files are only ever looked up by track id through the catalogue:
nothing from the URL becomes a filesystem path. The catalogue's path is then
resolved (symlinks included) and served only when it is a regular file with an
audio media type under one of the audio roots (the catalogue's folder, plus
``audio_roots``).

Refusals (see docs/security.md): a Host header outside
``allowed_hosts`` gets 400 (DNS rebinding); every response carries a
Content-Security-Policy without third-party origins, ``nosniff`` and
``frame-ancestors 'none'``; CORS is off unless ``cors_origins`` is given; slash
redirects are off (they would be built from the Host header); HEAD is answered
on every GET route; ``POST /query`` has one validation path (the middleware's
fast path and the route both go through ``answer_many``).
"""


# No ``from __future__ import annotations`` here: FastAPI reads the route
# functions' annotations at runtime, and they name classes local to create_app.

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np

from moodshift import __version__
from moodshift.data.catalog import Catalog
from moodshift.errors import (
    MoodshiftError,
    UnknownLabelError,
)
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.index import FaissIndex
from moodshift.serving.batching import MicroBatcher
from moodshift.serving.middleware import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_MAX_BODY,
    GuardMiddleware,
    RequestMetrics,
    error_payload,
)
from moodshift.serving.state import SUGGEST_CACHE, LabelsReadOnlyError, ServingState

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
#: Audio spans up to this size are read in one step; longer ones stream in such chunks.
AUDIO_CHUNK_BYTES = 1024 * 1024
#: Label values listed as an enum in the OpenAPI schema up to this many.
MAX_ENUM = 2000


def whole_number(value: Any) -> Any:
    """A float with no fractional part as that integer (JSON Schema's integer); else as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------- the app
def create_app(
    *,
    catalog: Catalog,
    model: MoodshiftModel,
    index: Any | None = None,
    max_k: int = 100,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    inline: bool | None = None,
    allowed_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
    cors_origins: Sequence[str] = (),
    audio_roots: Sequence[str | os.PathLike[str]] = (),
    catalog_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
) -> "FastAPI":
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
    allowed_hosts : sequence of str
        Host header names answered (port ignored); others get 400. ``"*"`` allows
        any. Default: loopback names only.
    cors_origins : sequence of str
        Origins allowed to call the API from a browser page (CORS); none by default.
    audio_roots : sequence of folders
        Folders, besides the catalogue's own (where relative audio paths
        resolve), under which audio files may be served.
    catalog_dir : folder, optional
        The folder ``catalog`` was loaded from, where ``POST /label`` saves labels
        (without it, and with ``workers > 1``, labelling is refused with 409).
    workers : int
        Server processes answering (see :func:`moodshift.serving.launch.serve`).

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    InputError
        If the model cannot serve this catalogue (see :meth:`MoodshiftModel.check_catalog`).
    StaleArtifactError
        If ``index`` is a folder built from another version of the catalogue.
    """
    from fastapi import (  # fastapi is heavy: load on use
        FastAPI,
        Query,
        Request,
    )
    from fastapi.exceptions import RequestValidationError  # fastapi is heavy: load on use
    from fastapi.responses import (  # fastapi is heavy: load on use
        FileResponse,
        PlainTextResponse,
        Response,
    )
    from fastapi.routing import APIRoute  # fastapi is heavy: load on use
    from fastapi.staticfiles import StaticFiles  # fastapi is heavy: load on use
    from pydantic import (  # with FastAPI: load on use
        BaseModel,
        BeforeValidator,
        ConfigDict,
        Field,
        ValidationError,
    )
    from starlette.concurrency import run_in_threadpool  # with FastAPI: load on use

    if isinstance(index, str | os.PathLike):
        index = FaissIndex.load(index, catalog=catalog)
    state = ServingState(
        catalog=catalog,
        model=model,
        index=index,
        max_k=max_k,
        audio_roots=audio_roots,
        catalog_dir=catalog_dir,
        workers=workers,
    )
    if inline is not None:
        state.inline = bool(inline)
    metrics = RequestMetrics()
    moods = state.moods

    # JSON Schema's "integer" includes 8.0, so a whole float is taken as the integer; true
    # and "8" stay refused (strict). Numbers in an embedding: JSON numbers only, never true
    # or "1" (a strict list[float] alone still coerced its items).
    # The bounds live inside the type: on an optional field pydantic would otherwise write
    # them as "ge"/"le" keys that JSON Schema does not know.
    Whole = Annotated[int, Field(strict=True, ge=1, le=max_k), BeforeValidator(whole_number)]
    Number = Annotated[float, Field(strict=True)]

    # The label values a filter may name: the schema says what the server accepts.
    columns = {c: state.postings.values(c) for c in state.postings.columns()}
    if all(0 < len(v) <= MAX_ENUM for v in columns.values()):
        filters_schema: dict[str, Any] | None = {
            "additionalProperties": False,
            "properties": {c: {"anyOf": [{"enum": v}, {"type": "array", "minItems": 1,
                                                       "items": {"enum": v}}]}
                           for c, v in columns.items()},
        }  # fmt: skip
    else:
        filters_schema = None

    class QueryRequest(BaseModel):
        """Like this track (or this embedding), but in ``target_mood``."""

        # Exactly one of track_id or embedding, said in the schema too (an empty track_id
        # beside an embedding is then invalid by the schema as by the server).
        model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
            {"required": ["track_id"], "properties": {
                "track_id": {"type": "string"}, "embedding": {"type": "null"}}},
            {"required": ["embedding"], "properties": {
                "embedding": {"type": "array"}, "track_id": {"type": "null"}}},
        ]})  # fmt: skip
        # Strict types: JSON true is not the number 1, and "5" is not 5.
        track_id: str | None = Field(
            None, strict=True, max_length=1000, description="Seed track id (or give embedding)"
        )
        # The length is documented here but checked by ServingState, whose message
        # names the catalogue's embedder.
        embedding: list[Number] | None = Field(
            None, strict=True,
            description=f"Seed embedding, {state.dim} numbers (or give track_id)",
            # An all-zero vector has no direction (refused by the server, so by the schema).
            json_schema_extra={"minItems": state.dim, "maxItems": state.dim,
                               "contains": {"not": {"const": 0}}},
        )  # fmt: skip
        source_mood: str | None = Field(
            None, strict=True, description=f"Mood of the embedding: {moods}",
            json_schema_extra={"enum": [*moods, None]},
        )  # fmt: skip
        target_mood: str = Field(
            ..., strict=True, description=f"One of {moods}", json_schema_extra={"enum": moods}
        )
        k: Whole = Field(10, description=f"Number of results, 1..{max_k}")
        strength: float | None = Field(
            None, strict=True, ge=0.0, le=1.0,
            description="0 = seed, 1 = full transform; default: the model's (chosen on validation)",
        )  # fmt: skip
        filters: dict[str, str | list[str]] | None = Field(
            None, strict=True, description="Label filters, e.g. {'genre': 'rock'} (any of a list)",
            json_schema_extra=filters_schema,
        )  # fmt: skip
        evidence: Literal["auto", "labels", "probe", "none"] = Field(
            "auto",
            description="Mood evidence in ranking: labels where known and the model's tagger "
            "elsewhere (auto), labels only, the tagger only (probe), or none",
        )
        max_per_artist: Whole | None = Field(
            None, description="At most this many results per artist"
        )

    class PlaylistRequest(BaseModel):
        """A mood journey from ``track_id``'s mood to ``to``."""

        model_config = ConfigDict(extra="forbid")
        track_id: str = Field(
            ..., strict=True, max_length=1000, description="Seed track id (never in the list)"
        )
        to: str = Field(
            ..., strict=True, description=f"Target mood, one of {moods}",
            json_schema_extra={"enum": moods},
        )  # fmt: skip
        via: str | None = Field(
            None, strict=True, description="A mood to pass through half-way",
            json_schema_extra={"enum": [*moods, None]},
        )  # fmt: skip
        length: Whole = Field(12, description=f"Items, 1..{max_k}")
        max_per_artist: Whole | None = Field(
            1,
            description="At most this many items per artist (null: no cap)",
        )  # fmt: skip

    class LabelRequest(BaseModel):
        """The user's mood for one track."""

        model_config = ConfigDict(extra="forbid")
        track_id: str = Field(..., strict=True, max_length=1000, description="The track")
        mood: str = Field(
            ..., strict=True, description=f"Its mood, one of {moods}",
            json_schema_extra={"enum": moods},
        )  # fmt: skip

    app = FastAPI(
        title="moodshift",
        version=__version__,
        description="Like this track, but in another mood: retrieval in embedding space.",
        # The stock docs pages load their scripts from a CDN: /docs is served locally.
        docs_url=None,
        redoc_url=None,
        # A slash redirect's Location would be built from the Host header.
        redirect_slashes=False,
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

    def answer_many(raws: list[bytes]) -> list[tuple[int, bytes]]:
        """Raw ``POST /query`` bodies answered together: the only validation path of the route.

        Both the middleware's fast path and the FastAPI route submit bodies to the
        micro-batcher, which calls this, so the same body always gets the same
        status and message.
        """
        out: list[tuple[int, bytes] | None] = [None] * len(raws)
        valid: list[int] = []
        bodies: list[dict[str, Any]] = []
        for i, raw in enumerate(raws):
            try:
                bodies.append(QueryRequest.model_validate_json(raw).model_dump())
                valid.append(i)
            except ValidationError as exc:
                payload = validation_payload(exc.errors(), prefix=("body",))
                out[i] = (422, json.dumps(payload).encode())
        for i, ans in zip(valid, state.query_batch(bodies), strict=True):
            if isinstance(ans, MoodshiftError):
                code, payload = error_payload(ans)
                out[i] = (code, json.dumps(payload).encode())
            else:
                out[i] = (200, json.dumps(ans).encode())
        return [o for o in out if o is not None]

    batcher = MicroBatcher(answer_many)
    app.state.batcher = batcher

    async def answer_batched(raw: bytes) -> tuple[int, bytes]:
        return await batcher.submit(raw)

    error_schema = {
        "type": "object",
        "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array"}]}},
        "required": ["detail"],
    }
    not_found = {404: {"description": "Unknown track id (or no audio file)",
                       "content": {"application/json": {"schema": error_schema}}}}  # fmt: skip
    validation_error = {"$ref": "#/components/schemas/HTTPValidationError"}
    query_responses: dict[int | str, Any] = {
        200: {"description": "Ranked results and map coordinates",
              "content": {"application/json": {"schema": {"type": "object", "properties": {
                  "source_mood": {"type": "string"},
                  "source_mood_source": {"enum": ["given", "label", "predicted"]},
                  "source_mood_probability": {
                      "anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
                                {"type": "null"}],
                      "description": "p(source mood | seed) when the tagger predicted it"},
              }}}}},
        404: not_found[404],
        413: {"description": "Body too large",
              "content": {"application/json": {"schema": error_schema}}},
        415: {"description": "Body not sent as JSON (Content-Type other than application/json)",
              "content": {"application/json": {"schema": validation_error}}},
        422: {"description": "Invalid body (names the field)",
              "content": {"application/json": {"schema": validation_error}}},
    }  # fmt: skip

    # ------------------------------------------------------------------ routes
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return json_response({"status": "ok", "tracks": state.n, "index": state.index_kind})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        return PlainTextResponse(
            metrics.render() + batcher.render(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    @app.get("/api/info", tags=["tracks"])
    async def info() -> Response:
        return json_response(state.info())

    @app.get("/map", tags=["tracks"])
    async def catalogue_map() -> Response:
        return json_response(state.map_points)

    genres = state.postings.values("genre") if "genre" in state.postings.columns() else []
    # The known genres, so that the schema says which values are accepted (up to a size
    # where the schema would outweigh the answers; beyond it, unknown values still get 422).
    genre_enum = {"enum": genres} if 0 < len(genres) <= MAX_ENUM else None

    @app.get("/tracks", tags=["tracks"])
    def tracks(
        q: Annotated[str | None, Query(max_length=200, description="id/title/label text")] = None,
        mood: Annotated[
            str | None,
            Query(min_length=1, description="only this mood", json_schema_extra={"enum": moods}),
        ] = None,
        genre: Annotated[
            str | None,
            Query(min_length=1, description="only this genre", json_schema_extra=genre_enum),
        ] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        filters = {}
        if mood is not None:
            filters[state.attribute] = mood
        if genre is not None:
            filters["genre"] = genre
        try:
            out = state.search_tracks(q=q, filters=filters, page=page, page_size=page_size)
        except UnknownLabelError as exc:
            return json_response(
                {"detail": [{"loc": ["query"], "msg": str(exc), "type": "unknown_label"}]},
                status=422,
            )
        return json_response(out)

    @app.get("/tracks/{track_id:path}", tags=["tracks"], responses=not_found)
    async def track(track_id: str) -> Response:
        row = state.row_of(track_id)
        rec = state.described(row)
        rec["map"] = np.round(state.project(state.unit_row(row)), 4)[0].tolist()
        return json_response(rec)

    AudioFileResponse = _audio_response_class()
    query_schema = QueryRequest.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post(
        "/query", tags=["query"], responses=query_responses,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": query_schema}}}},
    )  # fmt: skip
    async def query(request: Request) -> Response:
        """Like this track (or embedding), but in ``target_mood``: ranked results + map.

        With an approximate index (or a small catalogue) this route is answered
        by the middleware's fast path; both go through ``answer_many`` (one validation).
        """
        raw = await request.body()
        code, data = await answer_batched(raw)
        return Response(data, status_code=code, media_type="application/json")

    playlist_schema = PlaylistRequest.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post(
        "/playlist", tags=["query"], responses={**query_responses, 200: {
            "description": "The playlist", "content": {"application/json": {
                "schema": {"type": "object"}}}}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": playlist_schema}}}},
    )  # fmt: skip
    async def playlist(request: Request) -> Response:
        """A playlist that moves from the seed's mood to ``to``, strength rising along it."""
        # Validated from the raw bytes as /query is: non-JSON, too deep or wrongly typed
        # bodies all get the same 422 shape (FastAPI's own parsing answered 400 to some).
        try:
            body = PlaylistRequest.model_validate_json(await request.body()).model_dump()
        except ValidationError as exc:
            return json_response(validation_payload(exc.errors(), prefix=("body",)), status=422)
        return json_response(await run_in_threadpool(state.playlist, body))

    label_schema = LabelRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    conflict = {409: {"description": "Labels cannot be saved (read-only catalogue folder, "
                                     "several worker processes); the message says the fix",
                      "content": {"application/json": {"schema": error_schema}}}}  # fmt: skip
    described = {"type": "object", "required": ["track_id", "mood", "mood_source"]}

    @app.get("/label/next", tags=["label"], responses={
        200: {"description": "Unlabelled tracks, most helpful first, with p(mood | track)",
              "content": {"application/json": {"schema": {"type": "object", "properties": {
                  "tracks": {"type": "array", "items": described}}}}}},
        422: query_responses[422]})  # fmt: skip
    def label_next(
        n: Annotated[int, Query(ge=1, le=SUGGEST_CACHE, description="Tracks wanted")] = 4,
    ) -> Response:
        """The ``n`` tracks whose labels would help most: uncertain and representative
        (the choice ``moodshift label`` makes), each with its predicted mood."""
        return json_response(state.suggest(n=n))

    @app.post(
        "/label", tags=["label"], responses={**query_responses, **conflict, 200: {
            "description": "The track as served now", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"track": described}}}}}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": label_schema}}}},
    )  # fmt: skip
    async def label(request: Request) -> Response:
        """Save the user's mood for a track in the catalogue folder; the next query and
        suggestion use it at once."""
        try:
            body = LabelRequest.model_validate_json(await request.body()).model_dump()
        except ValidationError as exc:
            return json_response(validation_payload(exc.errors(), prefix=("body",)), status=422)
        try:
            return json_response(await run_in_threadpool(state.set_label, **body))
        except LabelsReadOnlyError as exc:
            return json_response({"detail": str(exc)}, status=409)

    audio_responses: dict[int | str, Any] = {
        200: {"description": "The audio file (HTTP range requests supported)",
              "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
        206: {"description": "Part of the audio file (Range request)",
              "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
        416: {"description": "Range not satisfiable"},
        **not_found,
    }  # fmt: skip

    @app.get(
        "/audio/{track_id:path}", tags=["tracks"], response_class=Response,
        responses=audio_responses,
    )  # fmt: skip
    async def audio(track_id: str) -> Response:
        # The id is only a dictionary key; the path comes from the catalogue, and is
        # served only when it resolves to a regular audio file under an audio root.
        row = state.id_to_row.get(track_id)
        found = state.audio_file(row) if row is not None else None
        if found is None:
            what = "unknown track id" if row is None else "no audio file for this track"
            return json_response({"detail": f"{what}: {track_id!r}"}, status=404)
        path, stat_result, media_type = found
        return AudioFileResponse(
            path, stat_result=stat_result, media_type=media_type,
            headers={"Cache-Control": "public, max-age=3600"},
        )  # fmt: skip

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return FileResponse(WEB_DIR / "docs.html", headers={"Cache-Control": "no-cache"})

    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def page() -> Response:
            return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # Every GET route answers HEAD too (players and proxies probe with it). Added
    # after the schema is generated, so that OpenAPI lists each operation once.
    app.openapi()
    for route in app.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods:
            route.methods.add("HEAD")

    max_body = max(int(max_body_bytes), 24 * state.dim + 4096)
    # Inline on the event loop only when a query is fast (see the module docstring).
    # The middleware answers /query itself (skipping routing) unless told not to; either
    # way concurrent queries share one batched search (serving.batching).
    fast = {("POST", "/query"): answer_batched} if state.inline else {}
    origins = [o.rstrip("/") for o in cors_origins if o]
    if origins:
        from starlette.middleware.cors import CORSMiddleware  # with FastAPI: load on use

        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["content-type"], max_age=600,
        )  # fmt: skip
    app.add_middleware(
        GuardMiddleware, metrics=metrics, max_body=max_body, fast=fast,
        allowed_hosts=allowed_hosts, cors_origins=origins,
    )  # fmt: skip
    return app


def _read_span(path: str | os.PathLike[str], start: int, length: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(length)


def _audio_response_class() -> Any:
    import anyio  # anyio is heavy: load on use
    from starlette.responses import FileResponse  # with FastAPI: load on use

    class AudioFileResponse(FileResponse):
        """Starlette's file response (ranges, HEAD), reading small spans in one go.

        Starlette opens, reads each 64 KiB chunk and closes in separate threadpool
        hops, each waiting for a turn of the event loop that also answers queries:
        under load a 440 kB file took about ten such turns. Spans up to
        :data:`AUDIO_CHUNK_BYTES` are read in one hop here; longer ones stream in
        chunks of that size.
        """

        chunk_size = AUDIO_CHUNK_BYTES

        async def _send_span(self, send: Any, start: int, length: int) -> None:
            data = await anyio.to_thread.run_sync(_read_span, self.path, start, length)
            await send({"type": "http.response.body", "body": data, "more_body": False})

        async def _handle_simple(
            self, send: Any, send_header_only: bool, send_pathsend: bool
        ) -> None:
            size = self.stat_result.st_size
            if send_header_only or send_pathsend or size > self.chunk_size:
                await super()._handle_simple(send, send_header_only, send_pathsend)
                return
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})  # fmt: skip
            await self._send_span(send, 0, size)

        async def _handle_single_range(
            self, send: Any, start: int, end: int, file_size: int, send_header_only: bool
        ) -> None:
            if send_header_only or end - start > self.chunk_size:
                await super()._handle_single_range(send, start, end, file_size, send_header_only)
                return
            headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-length",)]
            headers += [(b"content-range", f"bytes {start}-{end - 1}/{file_size}".encode()),
                        (b"content-length", str(end - start).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 206, "headers": headers})
            await self._send_span(send, start, end - start)

    return AudioFileResponse
