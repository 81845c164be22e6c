"""Starting the server: ``moodshift serve`` (one process, or several sharing mmapped data)."""

from __future__ import annotations

# functions' annotations at runtime, and they name classes local to create_app.
import json
import logging
import os
import time
from typing import Any

from moodshift.data.catalog import Catalog
from moodshift.errors import (
    InputError,
)
from moodshift.serving.app import create_app
from moodshift.training.model import MoodshiftModel

log = logging.getLogger(__name__)


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
            "moodshift.serving.launch:_worker_app", factory=True, workers=workers, host=host,
            port=port, access_log=access_log, log_level=log_level,
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
    """One thread per library and process (the thread policy's ``serve`` role).

    A request is one small forward pass and one search: intra-op threads only add
    hand-off cost while concurrent requests already use the cores. Measured: with
    OpenBLAS's default threads a 100k-track server spent ~9 ms of CPU per query
    spinning on 2 busy cores, 1.7 ms with one thread. ``MOODSHIFT_THREADS`` overrides.
    """
    from moodshift.threads import apply_thread_policy

    apply_thread_policy(role="serve")


def _load_app(
    *,
    catalog: str | os.PathLike[str] | Catalog,
    model: str | os.PathLike[str] | MoodshiftModel,
    index: str | os.PathLike[str] | None,
    max_k: int,
) -> Any:
    from moodshift.retrieval.index import load_catalog_index

    _limit_threads()
    cat = catalog if isinstance(catalog, Catalog) else Catalog.load(catalog, mmap=True)
    mdl = model if isinstance(model, MoodshiftModel) else MoodshiftModel.load(model)
    catalog_path = None if isinstance(catalog, Catalog) else catalog
    idx = load_catalog_index(cat, catalog_path=catalog_path, path=index)
    return create_app(catalog=cat, model=mdl, index=idx, max_k=max_k)


def _check_artifacts(*, catalog: str, model: str, index: str | None, max_k: int) -> None:
    from moodshift.retrieval.index import load_catalog_index

    cat = Catalog.load(catalog, mmap=True)
    cat.check_compatible(MoodshiftModel.load(model).embedder, what="model")
    load_catalog_index(cat, catalog_path=catalog, path=index)


def _worker_app() -> Any:
    """App factory of each ``serve(workers > 1)`` process (spec passed in the environment)."""
    return _load_app(**json.loads(os.environ[_WORKER_ENV]))
