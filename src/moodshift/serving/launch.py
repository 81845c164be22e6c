"""Starting the server: ``moodshift serve`` (one process, or several sharing mmapped data)."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from moodshift.data.catalog import Catalog
from moodshift.errors import InputError
from moodshift.model.network import MoodshiftModel
from moodshift.retrieval.request import open_artifacts
from moodshift.serving.app import create_app
from moodshift.serving.middleware import DEFAULT_ALLOWED_HOSTS
from moodshift.threads import apply_thread_policy

log = logging.getLogger(__name__)


def serve(
    *,
    catalog: str | os.PathLike[str] | Catalog,
    model: str | os.PathLike[str] | MoodshiftModel | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str | os.PathLike[str] | None = None,
    max_k: int = 100,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
    allowed_hosts: Sequence[str] | None = None,
    cors_origins: Sequence[str] = (),
    audio_roots: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Load catalogue, model and index, then run the app with uvicorn (blocks).

    Parameters
    ----------
    catalog : folder or Catalog
        Loaded memory-mapped.
    model : folder or MoodshiftModel, optional
        The trained transformation (default: the model shipped with moodshift,
        :mod:`moodshift.model.default`; the start-up line names the model that serves).
    host, port
        Where to listen.
    max_k : int
        Largest ``k`` a request may ask for.
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
    log_level : str
        uvicorn's log level.
    allowed_hosts : sequence of str, optional
        Host header names answered (``*``: any). Default: the loopback names,
        plus ``host`` when it names one interface (not ``0.0.0.0`` or ``::``).
    cors_origins : sequence of str
        Browser origins allowed to call the API (CORS); none by default.
    audio_roots : sequence of folders
        Further folders audio may be served from, besides the catalogue's own.

    Raises
    ------
    InputError
        When ``workers > 1`` is asked for with objects instead of folders.
    StaleArtifactError
        When the index no longer matches the catalogue.
    EmbedderMismatchError, DimensionMismatchError
        When the model was trained on another embedder's catalogue.
    FileFormatError
        When a folder is not a readable catalogue, model or index.

    Notes
    -----
    A client gets :data:`HEADER_TIMEOUT_S` seconds to send a request's headers
    (then the connection is closed) and ``BODY_TIMEOUT_S`` for its body (408).
    """
    import uvicorn  # uvicorn is heavy: load on use

    hosts = list(allowed_hosts) if allowed_hosts else _default_hosts(host)
    web = {"allowed_hosts": hosts, "cors_origins": list(cors_origins),
           "audio_roots": [str(r) for r in audio_roots]}  # fmt: skip
    opts = {"http": HeaderTimeoutProtocol, "timeout_keep_alive": 5}

    if workers > 1:
        if isinstance(catalog, Catalog) or isinstance(model, MoodshiftModel):
            raise InputError("serve(workers > 1) needs catalogue and model folders, not objects.")
        spec = {"catalog": str(catalog), "model": None if model is None else str(model),
                "max_k": max_k, "index": None if index is None else str(index)}  # fmt: skip
        # Fail here, once, on a stale index or a bad folder.
        source = _check_artifacts(**spec)
        os.environ[_WORKER_ENV] = json.dumps({**spec, **web, "workers": workers})
        print(f"moodshift: {workers} workers at http://{host}:{port}/, model {source}", flush=True)
        uvicorn.run(
            "moodshift.serving.launch:_worker_app", factory=True, workers=workers, host=host,
            port=port, access_log=access_log, log_level=log_level, **opts,
        )  # fmt: skip
        return
    t0 = time.perf_counter()
    app = _load_app(catalog=catalog, model=model, index=index, max_k=max_k, **web)
    state = app.state.moodshift
    print(
        f"moodshift: {state.n} tracks ({state.dim}-d), index {state.index_kind}, model "
        f"{app.state.model_source}, moods {state.moods}; ready in "
        f"{time.perf_counter() - t0:.1f} s at http://{host}:{port}/ (API docs /docs)",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=log_level, **opts)


_WORKER_ENV = "MOODSHIFT_SERVE_SPEC"
#: Seconds a client may take to send a request's headers before it is disconnected.
HEADER_TIMEOUT_S = 10.0


def _default_hosts(host: str) -> list[str]:

    hosts = list(DEFAULT_ALLOWED_HOSTS)
    if host and host not in ("0.0.0.0", "::", "") and host not in hosts:
        hosts.append(host)
    return hosts


def _header_timeout_protocol() -> type:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # uvicorn is heavy: load on use

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        """uvicorn's HTTP protocol with a deadline on each request's headers.

        uvicorn waits for headers indefinitely, so clients that send them a byte
        at a time (slowloris) hold connections open. The deadline starts when the
        connection opens and again after each response; it is cleared once a
        request's headers are complete (uvicorn then starts a request cycle).
        """

        header_timeout = HEADER_TIMEOUT_S

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._seen_cycle = None
            self._header_timer = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if getattr(self, "_header_timer", None) is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if cycle is None or (cycle is self._seen_cycle and cycle.response_complete):
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._seen_cycle:
                self._seen_cycle = self.cycle
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeaderTimeoutProtocol.__module__ = __name__
    HeaderTimeoutProtocol.__qualname__ = "HeaderTimeoutProtocol"
    return HeaderTimeoutProtocol


HeaderTimeoutProtocol = _header_timeout_protocol()


def _limit_threads() -> None:
    """One thread per library and process (the thread policy's ``serve`` role).

    A request is one small forward pass and one search: intra-op threads only add
    hand-off cost while concurrent requests already use the cores. Measured: with
    OpenBLAS's default threads a 100k-track server spent ~9 ms of CPU per query
    spinning on 2 busy cores, 1.7 ms with one thread. ``MOODSHIFT_THREADS`` overrides.
    """

    apply_thread_policy(role="serve")


def _load_app(
    *,
    catalog: str | os.PathLike[str] | Catalog,
    model: str | os.PathLike[str] | MoodshiftModel | None,
    index: str | os.PathLike[str] | None,
    max_k: int,
    allowed_hosts: Sequence[str] | None = None,
    cors_origins: Sequence[str] = (),
    audio_roots: Sequence[str | os.PathLike[str]] = (),
    workers: int = 1,
) -> Any:

    _limit_threads()
    art = open_artifacts(catalog=catalog, model=model, index=index)
    app = create_app(
        catalog=art.catalog, model=art.model, index=art.index, max_k=max_k,
        allowed_hosts=allowed_hosts or DEFAULT_ALLOWED_HOSTS, cors_origins=cors_origins,
        audio_roots=audio_roots, workers=workers,
        catalog_dir=None if isinstance(catalog, Catalog) else catalog,
    )  # fmt: skip
    app.state.model_source = art.model_source
    # The serving state is a few hundred thousand long-lived objects (one row dict per
    # track): a full garbage collection walks them all, ~110 ms at 100k tracks, and
    # lands on whichever requests are in flight. They live as long as the process, so
    # they leave the collector's generations (measured p99 effect: benchmarks/RESULTS.md, "Scale").
    gc.collect()
    gc.freeze()
    return app


def _check_artifacts(*, catalog: str, model: str | None, index: str | None, max_k: int) -> str:
    # Before the workers start: the refusals each worker's serving state would give.
    art = open_artifacts(catalog=catalog, model=model, index=index)
    art.model.check_servable()
    art.model.check_catalog(art.catalog)
    return art.model_source


def _worker_app() -> Any:
    """App factory of each ``serve(workers > 1)`` process (spec passed in the environment)."""
    return _load_app(**json.loads(os.environ[_WORKER_ENV]))
