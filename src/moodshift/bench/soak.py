"""Soak benchmark of ``moodshift serve``: many clients, valid and invalid requests, audio too.

``moodshift bench soak`` (or :func:`run_soak`) builds a synthetic catalogue with
real WAV files, trains a model for one epoch (only serving is measured), builds
the index with ``moodshift index``'s code, starts the real server as a
subprocess on 127.0.0.1 and runs ``clients`` closed-loop HTTP/1.1 keep-alive
clients for ``duration_s`` seconds. Each client draws its next request from a
fixed, seeded mix:

- valid: ``POST /query`` (by track id, some with a genre filter), ``GET /tracks``
  searches, ``GET /tracks/{id}``, ``GET /audio/{id}`` (whole file or a byte range),
  ``HEAD /audio/{id}``, ``GET /healthz``;
- invalid: malformed JSON, an unknown mood, ``k: true``, an unknown track id,
  a 10^30 embedding, a body over the size limit, a huge page number, a path
  outside the audio folder, a foreign Host header.

It reports, per route: requests, status counts, 5xx, timeouts, p50/p99 latency
(client-side, from sending to the last byte), and the server's resident memory
(RSS, from ``/proc``) after warm-up and after the run, plus whether the server
still answers ``/healthz`` and a query afterwards. The load generator shares the
machine with the server: read the latencies as an upper bound.

Benchmarks measure; they are not tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moodshift.bench.serve import free_port, proc_cpu_seconds, self_cpu_seconds, server_process
from moodshift.data.catalog import Catalog
from moodshift.retrieval.index import build_catalog_index
from moodshift.synthetic import make_catalog

#: A request the client gives up on after this many seconds counts as a timeout.
CLIENT_TIMEOUT_S = 10.0


def run_soak(
    *,
    n: int = 5000,
    dim: int = 64,
    clients: int = 32,
    duration_s: float = 60.0,
    audio_files: int = 200,
    audio_seconds: Sequence[float] = (1.0, 10.0),
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the soak and return its figures as a JSON-ready dict.

    Parameters
    ----------
    n, dim : int
        Size of the synthetic catalogue.
    clients : int
        Concurrent closed-loop clients.
    duration_s : float
        Length of the measured run (after a short warm-up).
    audio_files : int
        Tracks given a WAV file (16-bit mono, 22.05 kHz).
    audio_seconds : sequence of float
        File lengths used in turn (1 s is 44 kB, 10 s 441 kB).
    seed : int
        Seeds catalogue, model and request mix.
    workdir : folder, optional
        Where catalogue, model and index go (default: a temporary folder).

    Returns
    -------
    dict
        ``routes`` (per route: requests, statuses, 5xx, timeouts, p50/p99 ms),
        ``totals``, ``rss_mb`` (before, after, growth %), ``healthy_after``,
        ``machine`` and ``setup``.
    """

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="moodshift-soak-")
        workdir = tmp.name
    work = Path(workdir)
    try:
        setup = _prepare(work, n=n, dim=dim, audio_files=audio_files,
                         audio_seconds=audio_seconds, seed=seed, progress=progress)  # fmt: skip
        port = free_port()
        load_before = os.getloadavg()
        with server_process(work, port) as proc:
            url = ("127.0.0.1", port)
            mix = _Mix(setup.pop("ids"), setup.pop("audio_ids"), setup.pop("genres"), port=port,
                       dim=dim, seed=seed)  # fmt: skip
            asyncio.run(_run(url, mix, clients=min(clients, 8), duration_s=5.0))  # warm-up
            rss_before = _rss_mb(proc.pid)
            cpu0, ccpu0 = proc_cpu_seconds(proc.pid), self_cpu_seconds()
            t0 = time.perf_counter()
            records = asyncio.run(_run(url, mix, clients=clients, duration_s=duration_s))
            elapsed = time.perf_counter() - t0
            server_cpu = proc_cpu_seconds(proc.pid) - cpu0
            client_cpu = self_cpu_seconds() - ccpu0
            time.sleep(1.0)  # let the last responses' buffers go
            rss_after = _rss_mb(proc.pid)
            healthy = _healthy(url, mix)
    finally:
        if tmp is not None:
            tmp.cleanup()
    routes: dict[str, Any] = {}
    for name in sorted({r[0] for r in records}):
        rows = [r for r in records if r[0] == name]
        lat = np.array([r[2] for r in rows if r[1] > 0]) * 1e3
        statuses: dict[str, int] = {}
        for r in rows:
            key = "timeout" if r[1] == -1 else "error" if r[1] == 0 else str(r[1])
            statuses[key] = statuses.get(key, 0) + 1
        routes[name] = {
            "requests": len(rows),
            "statuses": statuses,
            "5xx": sum(1 for r in rows if r[1] >= 500),
            "timeouts": statuses.get("timeout", 0),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        }
    growth = (rss_after - rss_before) / rss_before * 100 if rss_before else float("nan")
    return {
        "setup": {**setup, "clients": clients, "duration_s": duration_s},
        "routes": routes,
        "totals": {
            "requests": len(records),
            "requests_per_s": round(len(records) / elapsed, 1),
            "5xx": sum(v["5xx"] for v in routes.values()),
            "timeouts": sum(v["timeouts"] for v in routes.values()),
            "connection_errors": sum(v["statuses"].get("error", 0) for v in routes.values()),
            "server_cpu_seconds": round(server_cpu, 1),
            "client_cpu_seconds": round(client_cpu, 1),
        },
        "rss_mb": {
            "before": round(rss_before, 1),
            "after": round(rss_after, 1),
            "growth_percent": round(growth, 2),
        },
        "healthy_after": healthy,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
    }


# ---------------------------------------------------------------------- set-up
def _prepare(
    work: Path, *, n: int, dim: int, audio_files: int, audio_seconds: Sequence[float], seed: int,
    progress: bool,
) -> dict[str, Any]:  # fmt: skip
    from moodshift.training.train import (  # pulls in torch: load on use
        TrainConfig,
        train,
    )

    cat = make_catalog(n=n, dim=dim, groups=True, seed=seed)
    rng = np.random.default_rng(seed)
    with_audio = np.sort(rng.choice(n, size=min(audio_files, n), replace=False))
    paths = np.full(n, "", dtype=object)
    for row in with_audio:
        paths[row] = f"audio/{cat.labels['track_id'].iat[row]}.wav"
    cat.labels["audio_path"] = paths
    cat.save(work / "catalog")
    (work / "catalog" / "audio").mkdir(exist_ok=True)
    sizes = []
    for j, row in enumerate(with_audio):
        secs = float(audio_seconds[j % len(audio_seconds)])
        sizes.append(_write_wav(work / "catalog" / paths[row], seconds=secs, freq=220.0 + j))
    train(cat, config=TrainConfig(epochs=1, seed=seed, val_max_seeds=200), out=work / "model",
          progress=progress)  # fmt: skip
    build_catalog_index(work / "catalog", seed=seed, progress=progress)
    loaded = Catalog.load(work / "catalog", mmap=True)
    genres = sorted({g for cell in loaded.labels["genre"] for g in str(cell).split("|") if g})
    return {
        "n": n,
        "dim": dim,
        "audio_files": int(with_audio.size),
        "audio_bytes_mean": int(np.mean(sizes)) if sizes else 0,
        "ids": loaded.labels["track_id"].astype(str).tolist(),
        "audio_ids": [str(cat.labels["track_id"].iat[r]) for r in with_audio],
        "genres": genres,
    }


def _write_wav(path: Path, *, seconds: float, freq: float, rate: int = 22050) -> int:

    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path.stat().st_size


# ---------------------------------------------------------------------- the request mix
class _Mix:
    """A seeded stream of (route label, raw HTTP request, method) tuples."""

    def __init__(
        self, ids: list[str], audio_ids: list[str], genres: list[str], *, port: int, dim: int,
        seed: int,
    ) -> None:  # fmt: skip
        self.ids, self.audio_ids, self.genres = ids, audio_ids, genres
        self.host = f"127.0.0.1:{port}"
        self.dim = dim
        self.seed = seed
        # (weight, maker): about 80 % valid requests, 20 % invalid ones.
        self.kinds = [
            (30, self._query), (8, self._query_filtered), (10, self._tracks_search),
            (8, self._track), (12, self._audio), (4, self._audio_range), (2, self._audio_head),
            (2, self._healthz),
            (2, self._bad_json), (2, self._unknown_mood), (2, self._k_true),
            (2, self._unknown_track), (2, self._huge_embedding), (2, self._too_large),
            (2, self._huge_page), (3, self._audio_escape), (3, self._bad_host),
            (2, self._unknown_audio),
        ]  # fmt: skip
        self.weights = [w for w, _ in self.kinds]

    def stream(self, client: int) -> Any:
        rng = random.Random(self.seed * 1000 + client)
        makers = [m for _, m in self.kinds]
        while True:
            yield rng.choices(makers, weights=self.weights)[0](rng)

    def _req(self, method: str, path: str, body: bytes | None = None, *,
             host: str | None = None, extra: str = "") -> bytes:  # fmt: skip
        head = f"{method} {path} HTTP/1.1\r\nHost: {host or self.host}\r\n{extra}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + (body or b"")

    def _post(self, body: Any) -> bytes:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._req("POST", "/query", data)

    def _query(self, rng: random.Random) -> tuple[str, bytes, str]:
        body = {"track_id": rng.choice(self.ids), "target_mood": rng.choice(MOODS),
                "k": 10, "strength": rng.choice([None, 0.5, 1.0])}  # fmt: skip
        return "POST /query", self._post(body), "POST"

    def _query_filtered(self, rng: random.Random) -> tuple[str, bytes, str]:
        body = {"track_id": rng.choice(self.ids), "target_mood": rng.choice(MOODS), "k": 10,
                "filters": {"genre": rng.choice(self.genres)}}  # fmt: skip
        return "POST /query", self._post(body), "POST"

    def _tracks_search(self, rng: random.Random) -> tuple[str, bytes, str]:
        q = rng.choice(["syn_00", "genre1", "inst3", "tune", ""])
        page = rng.randint(1, 5)
        return "GET /tracks", self._req("GET", f"/tracks?q={q}&page={page}"), "GET"

    def _track(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "GET /tracks/{id}", self._req("GET", f"/tracks/{rng.choice(self.ids)}"), "GET"

    def _audio(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "GET /audio/{id}", self._req("GET", f"/audio/{rng.choice(self.audio_ids)}"), "GET"

    def _audio_range(self, rng: random.Random) -> tuple[str, bytes, str]:
        start = rng.randint(0, 40_000)
        req = self._req("GET", f"/audio/{rng.choice(self.audio_ids)}",
                        extra=f"Range: bytes={start}-{start + 16_383}\r\n")  # fmt: skip
        return "GET /audio/{id}", req, "GET"

    def _audio_head(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "HEAD /audio/{id}", self._req("HEAD", f"/audio/{rng.choice(self.audio_ids)}"), "HEAD"

    def _healthz(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "GET /healthz", self._req("GET", "/healthz"), "GET"

    def _bad_json(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "POST /query (invalid)", self._post(b'{"track_id": "syn_0", "target'), "POST"

    def _unknown_mood(self, rng: random.Random) -> tuple[str, bytes, str]:
        body = {"track_id": rng.choice(self.ids), "target_mood": "furious"}
        return "POST /query (invalid)", self._post(body), "POST"

    def _k_true(self, rng: random.Random) -> tuple[str, bytes, str]:
        body = {"track_id": rng.choice(self.ids), "target_mood": "happy", "k": True}
        return "POST /query (invalid)", self._post(body), "POST"

    def _unknown_track(self, rng: random.Random) -> tuple[str, bytes, str]:
        return (
            "POST /query (invalid)",
            self._post({"track_id": "nope", "target_mood": "sad"}),
            "POST",
        )

    def _huge_embedding(self, rng: random.Random) -> tuple[str, bytes, str]:
        body = {"embedding": [rng.uniform(-1, 1) * 1e30 for _ in range(self.dim)],
                "source_mood": "sad", "target_mood": "happy"}  # fmt: skip
        return "POST /query (huge vector)", self._post(body), "POST"

    def _too_large(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "POST /query (invalid)", self._post(b'{"x": "' + b"a" * 200_000 + b'"}'), "POST"

    def _huge_page(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "GET /tracks", self._req("GET", "/tracks?page=9223372036854775807"), "GET"

    def _audio_escape(self, rng: random.Random) -> tuple[str, bytes, str]:
        path = rng.choice(["/audio/..%2F..%2Fetc%2Fpasswd", "/audio/%2Fetc%2Fpasswd",
                           "/audio/../../etc/passwd"])  # fmt: skip
        return "GET /audio (invalid)", self._req("GET", path), "GET"

    def _unknown_audio(self, rng: random.Random) -> tuple[str, bytes, str]:
        # Tracks without audio, or unknown ids: 404.
        return "GET /audio (invalid)", self._req("GET", f"/audio/{rng.choice(self.ids)}x"), "GET"

    def _bad_host(self, rng: random.Random) -> tuple[str, bytes, str]:
        return "GET /healthz (bad Host)", self._req("GET", "/healthz", host="evil.example"), "GET"


MOODS = ("calm", "energetic", "happy", "sad")


# ---------------------------------------------------------------------- clients
async def _run(
    url: tuple[str, int], mix: _Mix, *, clients: int, duration_s: float
) -> list[tuple[str, int, float]]:
    """(route, status or 0 = connection error or -1 = timeout, seconds) per request."""
    records: list[tuple[str, int, float]] = []
    deadline = time.perf_counter() + duration_s
    await asyncio.gather(*(_client(url, mix.stream(c), records, deadline) for c in range(clients)))
    return records


async def _client(
    url: tuple[str, int], stream: Any, records: list[tuple[str, int, float]], deadline: float
) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while time.perf_counter() < deadline:
            route, raw, method = next(stream)
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(*url)
                status, close = await asyncio.wait_for(
                    _exchange(conn, raw, head=method == "HEAD"), timeout=CLIENT_TIMEOUT_S
                )
            except asyncio.TimeoutError:
                records.append((route, -1, time.perf_counter() - t))
                conn = _drop(conn)
                continue
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
                records.append((route, 0, time.perf_counter() - t))
                conn = _drop(conn)
                continue
            records.append((route, status, time.perf_counter() - t))
            if close:
                conn = _drop(conn)
    finally:
        _drop(conn)


def _drop(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn[1].close()
    return None


async def _exchange(conn: Any, raw: bytes, *, head: bool) -> tuple[int, bool]:
    """Send one request and read its whole response; (status, server closes)."""
    reader, writer = conn
    writer.write(raw)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if head or status in (204, 304):
        return status, close
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, close


# ---------------------------------------------------------------------- server checks
def _rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc; NaN elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _healthy(url: tuple[str, int], mix: _Mix) -> bool:
    import httpx  # httpx is heavy: load on use

    base = f"http://{url[0]}:{url[1]}"
    try:
        ok = httpx.get(base + "/healthz", timeout=10).status_code == 200
        r = httpx.post(base + "/query", json={"track_id": mix.ids[0], "target_mood": "happy"},
                       timeout=10)  # fmt: skip
        return ok and r.status_code == 200 and len(r.json()["results"]) == 10
    except httpx.HTTPError:
        return False


def format_soak(result: dict[str, Any]) -> str:
    """A plain-text table of the soak's figures."""
    lines = [f"{'route':28s} {'requests':>8s} {'5xx':>4s} {'timeouts':>8s} {'p50 ms':>8s} "
             f"{'p99 ms':>8s}  statuses"]  # fmt: skip
    for name, r in result["routes"].items():
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
        lines.append(f"{name:28s} {r['requests']:8d} {r['5xx']:4d} {r['timeouts']:8d} "
                     f"{p50:>8s} {p99:>8s}  {r['statuses']}")  # fmt: skip
    t, m = result["totals"], result["rss_mb"]
    lines.append(
        f"total {t['requests']} requests ({t['requests_per_s']}/s), 5xx {t['5xx']}, timeouts "
        f"{t['timeouts']}, connection errors {t['connection_errors']}; server RSS "
        f"{m['before']} -> {m['after']} MiB ({m['growth_percent']:+.2f} %); healthy after: "
        f"{result['healthy_after']}; load average {result['machine']['load_average_after']}"
    )
    return "\n".join(lines)
