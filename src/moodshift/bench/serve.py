"""Load benchmark of ``moodshift serve``: latency percentiles and throughput of ``POST /query``.

:func:`run_serve_bench` builds a synthetic catalogue (default 100k tracks), trains
a model for a couple of epochs (speed, not quality, is measured), builds the
catalogue's index with ``moodshift index``'s code (HNSW at this size), then starts
the real server as a subprocess (``python -m moodshift.cli serve``) on 127.0.0.1
and runs closed-loop clients against it: each client sends its next request as
soon as the previous answer arrived, so with ``c`` clients there are always
``c`` requests in flight and, by Little's law, mean latency = c / throughput.

The clients are a small asyncio HTTP/1.1 keep-alive loop (like ``wrk``) rather
than httpx: they share the machine's cores with the server, and a cheaper
client leaves more of them to the server. ``client="httpx"`` uses
``httpx.AsyncClient`` instead, for comparison. Either way, on a small machine
the numbers include the cost of generating the load: read them as a lower
bound on what the server does alone. Every run records the CPU seconds the
server and the client used and the machine's load average.

Benchmarks measure; they are not tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moodshift.data.catalog import Catalog
from moodshift.errors import InputError, MoodshiftError
from moodshift.retrieval.index import build_catalog_index
from moodshift.synthetic import make_catalog
from moodshift.threads import limited_threads

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def run_serve_bench(
    *,
    n: int = 100_000,
    dim: int = 256,
    clients: Sequence[int] = (1, 8, 32),
    requests: int = 3000,
    duration_s: float = 15.0,
    seed: int = 0,
    epochs: int = 2,
    k: int = 10,
    filter_fraction: float = 0.2,
    kind: str = "auto",
    client: str = "raw",
    warmup: int = 300,
    workers: int = 1,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``POST /query`` latency and throughput at several client counts.

    Parameters
    ----------
    n, dim : int
        Size of the synthetic catalogue.
    clients : sequence of int
        Concurrent closed-loop clients, one run each.
    requests, duration_s : int, float
        Each run stops after this many requests or this many seconds, whichever
        comes first (warm-up not counted).
    seed : int
        Seeds the catalogue, the model and the request mix.
    epochs : int
        Training epochs of the model (only its speed matters here).
    k : int
        Results per query.
    filter_fraction : float
        Fraction of queries that carry a genre filter (filtered search).
    kind : str
        Index kind passed to ``build_catalog_index``.
    client : {"raw", "httpx"}
        Load generator (see the module docstring).
    warmup : int
        Requests sent (with 8 clients) before the first measured run.
    workers : int
        Server processes (``serve(workers=...)``); 1 runs ``moodshift serve`` itself.
    workdir : folder, optional
        Where catalogue, model and index are written (default: a temporary folder).

    Returns
    -------
    dict
        ``setup`` (sizes and build timings, index recall), ``runs`` (one per client
        count: p50/p90/p99/max latency in ms, requests per second, errors, CPU
        seconds of server and client), ``machine`` (cores, load averages) and a note.

    Raises
    ------
    InputError
        For an unknown ``client``.
    MoodshiftError
        When the benchmark server exits or does not answer ``/healthz`` in time.
    """

    if client not in ("raw", "httpx"):
        raise InputError(f"unknown client {client!r}; use 'raw' or 'httpx'.")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="moodshift-bench-serve-")
        workdir = tmp.name
    work = Path(workdir)
    setup: dict[str, Any] = {"n": n, "dim": dim, "k": k, "epochs": epochs, "client": client,
                             "workers": workers, "filter_fraction": filter_fraction}  # fmt: skip
    load_before = os.getloadavg()
    try:
        setup |= bench_artifacts(work, n=n, dim=dim, kind=kind, seed=seed, epochs=epochs,
                                 progress=progress)  # fmt: skip
        bodies = _request_bodies(Catalog.load(work / "catalog", mmap=True), seed=seed, k=k,
                                 filter_fraction=filter_fraction)  # fmt: skip
        port = free_port()
        t0 = time.perf_counter()
        with server_process(work, port, workers=workers) as proc:
            setup["server_start_seconds"] = round(time.perf_counter() - t0, 2)
            url = ("127.0.0.1", port)
            asyncio.run(_load(url, bodies, clients=8, requests=warmup, duration_s=60.0,
                              client=client))  # fmt: skip
            runs = []
            for c in clients:
                cpu_server0 = proc_cpu_seconds(proc.pid)
                cpu_client0 = self_cpu_seconds()
                res = asyncio.run(
                    _load(url, bodies, clients=c, requests=requests, duration_s=duration_s,
                          client=client)
                )  # fmt: skip
                res["server_cpu_seconds"] = round(proc_cpu_seconds(proc.pid) - cpu_server0, 2)
                res["client_cpu_seconds"] = round(self_cpu_seconds() - cpu_client0, 2)
                res["load_average_1m"] = round(os.getloadavg()[0], 2)
                runs.append(res)
                if progress:
                    print(
                        f"clients={c:3d}  p50={res['p50_ms']:.2f} ms  p99={res['p99_ms']:.2f} ms  "
                        f"{res['requests_per_s']:.0f} req/s  errors={res['errors']}",
                        file=sys.stderr,
                        flush=True,
                    )
            server_metrics = _server_query_histogram(url)
            server_info = _server_info(url)
        in_process = in_process_cost(work, bodies)
    finally:
        if tmp is not None:
            tmp.cleanup()
    by_clients = {r["clients"]: r for r in runs}
    ratio = None
    if 1 in by_clients and 32 in by_clients and by_clients[1]["p99_ms"] > 0:
        ratio = round(by_clients[32]["p99_ms"] / by_clients[1]["p99_ms"], 2)
    return {
        "setup": setup,
        "runs": runs,
        # Same run: the 32-client p99 over the lone client's (queueing, not work, grows).
        "p99_ratio_32_to_1": ratio,
        # What answering costs without HTTP: the server's own function, in this process.
        "in_process": in_process,
        # The server answered with the numpy transform (not the torch fallback).
        "fast_path": server_info.get("fast_path"),
        "batching": server_info.get("batching"),
        "server_histogram_query": server_metrics,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "note": (
            "closed-loop clients on 127.0.0.1; the load generator runs on the same machine and "
            "shares its cores with the server (see server/client CPU seconds per run); "
            "latency is measured by the client from sending the request to the last byte."
        ),
    }


def bench_artifacts(
    work: Path, *, n: int, dim: int, kind: str, seed: int, epochs: int, progress: bool
) -> dict[str, Any]:
    """A synthetic catalogue, a briefly trained model and the catalogue's index in ``work``.

    Made as ``moodshift import``, ``train`` and ``index`` make them (``catalog/``,
    ``model/``, ``catalog/index/``), or reused when an earlier run left ones that fit.

    Returns
    -------
    dict
        ``catalog_seconds`` and ``train_seconds`` (or ``reused``), and ``index``: its
        kind, parameters, recall and build time.
    """
    from moodshift.training.train import (  # pulls in torch: load on use
        TrainConfig,
        train,
    )

    setup: dict[str, Any] = {}
    info = _reusable(work, n=n, dim=dim, kind=kind)
    if info is None:
        t0 = time.perf_counter()
        cat = make_catalog(n=n, dim=dim, groups=True, seed=seed)
        cat.save(work / "catalog")
        setup["catalog_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        model = train(cat, config=TrainConfig(epochs=epochs, seed=seed, val_max_seeds=500),
                      out=work / "model", progress=progress)  # fmt: skip
        setup["train_seconds"] = round(time.perf_counter() - t0, 2)
        del cat
        # With the model: its tagger's p(mood | track) is stored, as `moodshift index --model`.
        info = build_catalog_index(work / "catalog", kind=kind, seed=seed, progress=progress,
                                   model=model)  # fmt: skip
    else:
        setup["reused"] = str(work)
    setup["index"] = {
        key: info.get(key)
        for key in ("kind", "params", "recall_at_10", "recall_at_10_filtered",
                    "filtered_fraction", "exact_filter_rows", "build_seconds", "total_seconds")
    }  # fmt: skip
    return setup


def run_request_bench(
    *,
    n: int = 100_000,
    dim: int = 256,
    seed: int = 0,
    epochs: int = 2,
    k: int = 10,
    kind: str = "auto",
    filter_fraction: float = 0.2,
    count: int = 512,
    processes: int = 3,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``moodshift query``'s answer time against the server's, for the same queries, one run.

    On an indexed synthetic catalogue (:func:`bench_artifacts`), the same request bodies
    go, one at a time, through the server's answer function
    (:meth:`ServingState.query_batch` of one body, as ``in_process`` times it) and through
    the CLI's path (:meth:`Searcher.open`, then :meth:`Searcher.query`: what
    ``moodshift query`` runs after loading), interleaved so that both see the same load,
    with one thread per library. Then ``moodshift query`` itself runs as a process
    ``processes`` times: loading the catalogue, model and index is most of its wall time.

    Returns
    -------
    dict
        ``setup``; ``server_ms_per_query`` and ``cli_ms_per_query`` (CPU ms, and wall
        ms under ``*_wall_ms_per_query``), ``cli_over_server``; ``index`` (what served the
        CLI's answers); ``cli_process_seconds`` (each whole ``moodshift query`` run).
    """
    from moodshift.retrieval.search import Searcher  # pulls in torch: load on use

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="moodshift-bench-request-")
        workdir = tmp.name
    work = Path(workdir)
    try:
        setup = {"n": n, "dim": dim, "k": k, "filter_fraction": filter_fraction}
        setup |= bench_artifacts(work, n=n, dim=dim, kind=kind, seed=seed, epochs=epochs,
                                 progress=progress)  # fmt: skip
        bodies = [json.loads(b) for b in _request_bodies(
            Catalog.load(work / "catalog", mmap=True), seed=seed, k=k,
            filter_fraction=filter_fraction, count=count)]  # fmt: skip
        state = serving_state(work)
        searcher = Searcher.open(catalog=work / "catalog", model=work / "model")
        cpu = {"server": 0.0, "cli": 0.0}
        wall = {"server": 0.0, "cli": 0.0}
        served = set()
        with limited_threads(1):
            for b in bodies[:64]:  # warm-up: first touches of the mapped files
                state.query_batch([b])
                searcher.query(**b)
            for b in bodies:
                for who in ("server", "cli"):
                    c0, w0 = time.process_time(), time.perf_counter()
                    if who == "server":
                        state.query_batch([b])
                    else:
                        served.add(searcher.query(**b).index)
                    cpu[who] += time.process_time() - c0
                    wall[who] += time.perf_counter() - w0
        runs = [_cli_query_seconds(work, bodies[i]) for i in range(processes)]
    finally:
        if tmp is not None:
            tmp.cleanup()
    per = {who: round(v / len(bodies) * 1e3, 3) for who, v in cpu.items()}
    per_wall = {who: round(v / len(bodies) * 1e3, 3) for who, v in wall.items()}
    return {
        "setup": setup,
        "queries": len(bodies),
        "threads": 1,
        "server_ms_per_query": per["server"],
        "cli_ms_per_query": per["cli"],
        "server_wall_ms_per_query": per_wall["server"],
        "cli_wall_ms_per_query": per_wall["cli"],
        "cli_over_server": round(per["cli"] / per["server"], 2) if per["server"] else None,
        "index": sorted(served),
        "cli_process_seconds": runs,
    }


def _cli_query_seconds(work: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Wall seconds of one whole ``moodshift query`` process, and the index it reported."""
    cmd = [sys.executable, "-m", "moodshift.cli", "query", "--catalog", str(work / "catalog"),
           "--model", str(work / "model"), "--track", body["track_id"], "--mood",
           body["target_mood"], "-k", str(body["k"]), "--json"]  # fmt: skip
    for column, value in (body.get("filters") or {}).items():
        cmd += ["--filter", f"{column}={value}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise MoodshiftError(f"moodshift query failed: {done.stderr.strip()[-300:]}")
    return {"seconds": round(seconds, 2), "index": json.loads(done.stdout)["index"]}


def serving_state(work: Path) -> Any:
    """The server's state over a benchmark folder (catalogue, model and index), in process."""
    from moodshift.retrieval.request import open_artifacts  # pulls in torch: load on use
    from moodshift.serving.state import ServingState  # pulls in torch: load on use

    art = open_artifacts(catalog=work / "catalog", model=work / "model")
    return ServingState(catalog=art.catalog, model=art.model, index=art.index, max_k=100)


def in_process_cost(
    work: Path, bodies: Sequence[bytes], *, batch_sizes: Sequence[int] = (1, 32), count: int = 1024
) -> dict[str, Any]:
    """CPU milliseconds per query of the server's answer function, without HTTP.

    The same request bodies go through :meth:`ServingState.query_batch` (what a
    server's micro-batch calls) in groups of each batch size, with one thread per
    library as a server process runs. Set beside a run's ``server_cpu_seconds`` per
    request, the difference is what HTTP, validation and the event loop cost.

    Parameters
    ----------
    work : Path
        The benchmark's folder (``catalog``, ``model`` and the catalogue's index).
    bodies : sequence of bytes
        JSON request bodies.
    batch_sizes : sequence of int
    count : int
        Queries timed per batch size (after one warm-up pass of 64).

    Returns
    -------
    dict
        ``ms_per_query`` by batch size (as a string key), and ``ms_per_query_unfiltered``
        and ``ms_per_query_filtered`` likewise.
    """

    state = serving_state(work)
    parsed = [json.loads(b) for b in bodies]
    kinds = {"": parsed, "_unfiltered": [b for b in parsed if not b.get("filters")],
             "_filtered": [b for b in parsed if b.get("filters")]}  # fmt: skip
    out: dict[str, Any] = {"threads": 1}
    with limited_threads(1):
        state.query_batch(parsed[:64])
        for suffix, pool in kinds.items():
            costs: dict[str, float] = {}
            for b in batch_sizes:
                take = [pool[i % len(pool)] for i in range(count)] if pool else []
                t0 = time.process_time()
                for s in range(0, len(take), b):
                    state.query_batch(take[s : s + b])
                if take:
                    costs[str(b)] = round((time.process_time() - t0) / len(take) * 1e3, 3)
            out[f"ms_per_query{suffix}"] = costs
    return out


def _reusable(work: Path, *, n: int, dim: int, kind: str) -> dict[str, Any] | None:
    """The index metadata of an earlier run's artefacts in ``work`` if they fit, else None."""
    try:
        meta = json.loads((work / "catalog" / "index" / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if not (work / "model" / "config.json").is_file():
        return None
    if meta.get("n") != n or meta.get("dim") != dim or kind not in ("auto", meta.get("kind")):
        return None
    return meta


# ---------------------------------------------------------------------- requests
def _request_bodies(
    catalog: Any, *, seed: int, k: int, filter_fraction: float, count: int = 4096
) -> list[bytes]:
    """A fixed, seeded mix of ``POST /query`` bodies (random seeds, moods, strengths)."""
    rng = np.random.default_rng(seed + 1)
    ids = catalog.labels["track_id"].to_numpy()
    moods = sorted(set(catalog.labels["mood"]))
    genres = sorted(set(catalog.labels["genre"]))
    bodies = []
    for _ in range(count):
        body: dict[str, Any] = {
            "track_id": str(ids[rng.integers(len(ids))]),
            "target_mood": moods[rng.integers(len(moods))],
            "strength": float(rng.choice([0.5, 0.75, 1.0])),
            "k": k,
        }
        if rng.random() < filter_fraction:
            body["filters"] = {"genre": genres[rng.integers(len(genres))]}
        bodies.append(json.dumps(body).encode())
    return bodies


# ---------------------------------------------------------------------- load generator
async def _load(
    url: tuple[str, int],
    bodies: list[bytes],
    *,
    clients: int,
    requests: int,
    duration_s: float,
    client: str,
) -> dict[str, Any]:
    latencies: list[tuple[float, bool]] = []  # (seconds, had a filter)
    errors: list[str] = []
    counter = [0]
    deadline = time.perf_counter() + duration_s

    def take() -> int | None:
        if counter[0] >= requests or time.perf_counter() >= deadline:
            return None
        counter[0] += 1
        return counter[0]

    worker = _raw_worker if client == "raw" else _httpx_worker
    t0 = time.perf_counter()
    await asyncio.gather(
        *(worker(url, bodies, take, latencies, errors, offset=i * 97) for i in range(clients))
    )
    wall = time.perf_counter() - t0
    lat = np.asarray([t for t, _ in latencies]) * 1e3
    filtered = np.asarray([f for _, f in latencies], dtype=bool)
    pct = np.percentile(lat, [50, 90, 99]) if lat.size else np.full(3, np.nan)

    def split(sel: np.ndarray) -> dict[str, Any]:
        if not sel.any():
            return {"requests": 0}
        p50, p99 = np.percentile(lat[sel], [50, 99])
        return {"requests": int(sel.sum()), "p50_ms": round(float(p50), 3),
                "p99_ms": round(float(p99), 3)}  # fmt: skip

    return {
        "clients": clients,
        "requests": int(lat.size),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(wall, 3),
        "requests_per_s": round(lat.size / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(pct[0]), 3),
        "p90_ms": round(float(pct[1]), 3),
        "p99_ms": round(float(pct[2]), 3),
        "max_ms": round(float(lat.max()), 3) if lat.size else None,
        "mean_ms": round(float(lat.mean()), 3) if lat.size else None,
        "unfiltered": split(~filtered),
        "filtered": split(filtered),
    }


async def _raw_worker(
    url: tuple[str, int],
    bodies: list[bytes],
    take: Any,
    latencies: list[tuple[float, bool]],
    errors: list[str],
    *,
    offset: int,
) -> None:
    host, port = url
    head = (f"POST /query HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (i := take()) is not None:
            body = bodies[(i + offset) % len(bodies)]
            t = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            try:
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                payload = await reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append((time.perf_counter() - t, b'"filters"' in body))
            if not status_line.startswith(b"HTTP/1.1 200") or not payload.startswith(b'{"seed"'):
                errors.append(f"{status_line.decode(errors='replace').strip()} {payload[:120]!r}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _httpx_worker(
    url: tuple[str, int],
    bodies: list[bytes],
    take: Any,
    latencies: list[tuple[float, bool]],
    errors: list[str],
    *,
    offset: int,
) -> None:
    import httpx  # httpx is heavy: load on use

    host, port = url
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as c:
        while (i := take()) is not None:
            body = bodies[(i + offset) % len(bodies)]
            t = time.perf_counter()
            try:
                r = await c.post("/query", content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - t, b'"filters"' in body))
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:120]}")


# ---------------------------------------------------------------------- server process
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(work: Path, port: int, *, workers: int = 1) -> Any:
    """``moodshift serve`` in a subprocess, bound to 127.0.0.1 only; stopped on exit."""
    if workers == 1:  # exactly what a user runs
        cmd = [sys.executable, "-m", "moodshift.cli", "serve",
               "--catalog", str(work / "catalog"), "--model", str(work / "model"),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    else:
        code = (f"from moodshift.serving.launch import serve; "
                f"serve(catalog={str(work / 'catalog')!r}, "
                f"model={str(work / 'model')!r}, host='127.0.0.1', port={port}, "
                f"workers={workers})")  # fmt: skip
        cmd = [sys.executable, "-c", code]
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, proc, log_path)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 300) -> None:
    import httpx  # httpx is heavy: load on use

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MoodshiftError(
                f"the benchmark server exited with code {proc.returncode}:\n"
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise MoodshiftError(f"the benchmark server did not answer /healthz within {timeout:.0f} s")


def _server_query_histogram(url: tuple[str, int]) -> dict[str, int]:
    """The server's own latency histogram of POST /query (cumulative counts per bucket)."""
    import httpx  # httpx is heavy: load on use

    try:
        text = httpx.get(f"http://{url[0]}:{url[1]}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith('moodshift_request_duration_seconds_bucket{route="/query"'):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = int(line.rsplit(" ", 1)[1])
    return out


def _server_info(url: tuple[str, int]) -> dict[str, Any]:
    """Whether the server used the numpy fast path, and its micro-batch figures."""
    import httpx  # httpx is heavy: load on use

    base = f"http://{url[0]}:{url[1]}"
    try:
        info = httpx.get(f"{base}/api/info", timeout=10).json()
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except (httpx.HTTPError, ValueError):
        return {}
    batching = {}
    for line in text.splitlines():
        for key in ("batches_total", "batched_total", "batch_size_max"):
            if line.startswith(f"moodshift_query_{key} "):
                batching[key] = int(float(line.rsplit(" ", 1)[1]))
    if batching.get("batches_total"):
        batching["mean_batch"] = round(batching["batched_total"] / batching["batches_total"], 2)
    return {"fast_path": info.get("fast_path"), "batching": batching}


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc).

    NaN where /proc is missing. Worker processes of ``serve(workers=N)`` are
    children of the server process, hence the walk.
    """
    stats: dict[int, tuple[int, float]] = {}
    try:
        entries = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return float("nan")
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    if pid not in stats:
        return float("nan")
    total, frontier = 0.0, [pid]
    while frontier:
        p = frontier.pop()
        total += stats[p][1]
        frontier += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    t = os.times()
    return t.user + t.system
