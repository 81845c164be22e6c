"""Micro-batching: concurrent queries share one search and get the answers they would alone."""

from __future__ import annotations

import asyncio

import httpx

from moodshift.errors import MoodshiftError
from moodshift.serving.batching import MicroBatcher
from moodshift.serving.state import ServingState


def test_batcher_groups_what_arrives_together_and_a_lone_call_waits_for_nothing():
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * 10 for i in items]

    async def run() -> tuple[list[int], int]:
        b = MicroBatcher(fn)
        together = await asyncio.gather(*(b.submit(i) for i in range(10)))
        alone = await b.submit(7)
        return together, alone

    together, alone = asyncio.run(run())
    assert together == [i * 10 for i in range(10)] and alone == 70
    assert calls == [list(range(10)), [7]]


def test_two_batches_run_at_once_and_one_worker_runs_them_in_turn():
    """With ``concurrency=2`` a request arriving while a batch runs starts a second batch."""
    import threading

    def run(concurrency: int) -> list[BaseException | int]:
        barrier = threading.Barrier(2, timeout=2)

        def fn(items: list[int]) -> list[int]:
            barrier.wait()  # passes only when two batches are in flight together
            return items

        async def main() -> list[BaseException | int]:
            b = MicroBatcher(fn, concurrency=concurrency)

            async def later() -> int:
                await asyncio.sleep(0.1)
                return await b.submit(1)

            return await asyncio.gather(b.submit(0), later(), return_exceptions=True)

        return asyncio.run(main())

    assert run(2) == [0, 1]
    assert all(isinstance(r, threading.BrokenBarrierError) for r in run(1))


def test_batcher_passes_errors_to_every_waiter():
    def fn(items: list[int]) -> list[int]:
        raise RuntimeError("boom")

    async def run() -> list[BaseException | int]:
        b = MicroBatcher(fn)
        return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))


def _same(batched: dict, alone: dict) -> bool:
    """Equal answers, floats to 1e-4: batched and lone matrix products round differently.

    Scores are rounded to 5 decimals, so a last-bit difference can show as 1e-5.
    """

    def close(a: object, b: object) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(map(close, a, b))
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) <= 1e-4
        return a == b

    batched, alone = ({k: v for k, v in a.items() if k != "took_ms"} for a in (batched, alone))
    return close(batched, alone)


def test_batched_answers_equal_single_answers(serve_catalog, serve_model):
    state = ServingState(catalog=serve_catalog, model=serve_model, index=None, max_k=50)
    ids = serve_catalog.labels["track_id"].tolist()
    bodies = [
        {"track_id": ids[i], "target_mood": m, "k": k, "evidence": ev}
        for i, (m, k, ev) in enumerate(
            [("happy", 5, "auto"), ("sad", 10, "auto"), ("calm", 3, "none"), ("happy", 7, "auto"),
             ("energetic", 5, "probe"), ("nope", 5, "auto"), ("sad", 4, "labels")]
        )
    ]  # fmt: skip
    filtered = {"track_id": ids[9], "target_mood": "calm", "k": 5, "filters": {"genre": "genre1"}}
    bodies.append(filtered)
    batch = state.query_batch(bodies)
    for body, ans in zip(bodies, batch, strict=True):
        if body["target_mood"] == "nope":
            assert not isinstance(ans, dict)  # the error stays with its own request
            continue
        assert _same(ans, state.query(body))


def test_a_bad_body_fails_alone_in_a_batch_of_mixed_strengths(serve_catalog, serve_model):
    state = ServingState(catalog=serve_catalog, model=serve_model, index=None, max_k=50)
    ids = serve_catalog.labels["track_id"].tolist()
    bodies = [{"track_id": ids[i], "target_mood": "happy", "k": 4, "strength": s}
              for i, s in enumerate([0.2, 1.5, 0.9])]  # fmt: skip
    got = state.query_batch(bodies)
    assert isinstance(got[1], MoodshiftError) and "strength" in str(got[1])
    for i in (0, 2):
        assert _same(got[i], state.query(bodies[i]))
        assert got[i]["strength"] == bodies[i]["strength"]


def test_concurrent_requests_are_batched(live_server, serve_catalog):
    ids = serve_catalog.labels["track_id"].tolist()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as c:
            return await asyncio.gather(*(
                c.post("/query", json={"track_id": ids[i], "target_mood": "happy", "k": 5})
                for i in range(32)
            ))  # fmt: skip

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    with httpx.Client(base_url=live_server, timeout=30) as c:
        for i in (0, 13, 31):
            alone = c.post("/query", json={"track_id": ids[i], "target_mood": "happy", "k": 5})
            got = [x["track_id"] for x in responses[i].json()["results"]]
            assert got == [x["track_id"] for x in alone.json()["results"]]
        metrics = c.get("/metrics").text
    sizes = [float(line.split()[-1]) for line in metrics.splitlines()
             if line.startswith("moodshift_query_batch_size_max")]  # fmt: skip
    assert sizes and max(sizes) > 1
