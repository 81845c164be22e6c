"""Micro-batching of concurrent queries: requests that arrive together share one search.

While a batch is being answered (in a worker thread), the requests that
arrive queue up; when a worker is free, all of them form the next batch. The
window therefore adapts to the load by itself: a lone request is answered at
once (there is nothing to wait for), and under 32 concurrent clients each batch
holds the requests that came in during the previous one, answered with one
batched transform (a matrix product) and one batched search
(:meth:`moodshift.serving.state.ServingState.query_batch`).

``concurrency`` batches may run at once (default :data:`CONCURRENCY`): the
heavy parts of a batch (matrix products, FAISS searches, memory-bound scans)
release the GIL, so a second worker thread keeps a second core busy while the
first is in Python, and the event loop stays free to parse requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: The most requests answered together (bounds one batch's latency and memory).
MAX_BATCH = 64
#: Batches answered at once, each in its own worker thread.
CONCURRENCY = 2


class MicroBatcher:
    """Collects concurrent calls and answers them with one call of ``fn`` per batch.

    Parameters
    ----------
    fn : callable
        ``fn(list of items) -> list of answers`` (same length and order); run in
        a worker thread so the event loop keeps accepting requests meanwhile.
    max_batch : int
    concurrency : int
        Batches in flight at once (worker threads).
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int = MAX_BATCH,
        concurrency: int = CONCURRENCY,
    ):
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.concurrency = concurrency
        # Dedicated workers: the next batch forms while they run, and the hop is
        # cheaper than a general thread pool's.
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="moodshift-batch"
        )
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._running = 0
        #: Sizes of the batches answered so far (count per size), for metrics and benchmarks.
        self.sizes: dict[int, int] = {}

    def render(self) -> str:
        """Prometheus text: batches answered, queries in them, and the largest batch."""
        batches = sum(self.sizes.values())
        queries = sum(n * c for n, c in self.sizes.items())
        return (
            "# HELP moodshift_query_batches_total Micro-batches of POST /query answered.\n"
            "# TYPE moodshift_query_batches_total counter\n"
            f"moodshift_query_batches_total {batches}\n"
            "# HELP moodshift_query_batched_total Queries answered in those micro-batches.\n"
            "# TYPE moodshift_query_batched_total counter\n"
            f"moodshift_query_batched_total {queries}\n"
            "# HELP moodshift_query_batch_size_max The largest micro-batch so far.\n"
            "# TYPE moodshift_query_batch_size_max gauge\n"
            f"moodshift_query_batch_size_max {max(self.sizes, default=0)}\n"
        )

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its answer."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._running < self.concurrency:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        """One worker's loop: answer batches while requests are queued."""
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
                try:
                    answers = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self.fn, [item for item, _ in batch]
                    )
                except Exception as exc:  # answer every waiter, never leave one hanging
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), ans in zip(batch, answers, strict=True):
                    if not fut.done():
                        fut.set_result(ans)
        finally:
            self._running -= 1
