"""Pure-ASGI middleware of the server: body limit, metrics, the inline JSON fast path."""

from __future__ import annotations

# functions' annotations at runtime, and they name classes local to create_app.
import json
import logging
import time
from typing import Any

from moodshift.errors import (
    InputError,
    MoodshiftError,
    UnknownTrackError,
)
from moodshift.serving.state import BodyFieldError, UnknownMoodError

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# ---------------------------------------------------------------------- ASGI middleware
class RequestMetrics:
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


class GuardMiddleware:
    """Pure-ASGI middleware: body-size limit (413) and request metrics.

    Written against raw ASGI rather than ``BaseHTTPMiddleware`` because the
    latter adds a task and a memory stream per request, which shows in p99.
    """

    def __init__(
        self,
        app: Any,
        *,
        metrics: RequestMetrics,
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
                    await send_json(
                        send, 413,
                        {"detail": f"request body larger than {self.max_body} bytes; send less"},
                    )  # fmt: skip
                    status[0] = 413
                    scope["route_name"] = "<too large>"
                    return
                handler = self.fast.get((scope["method"], scope["path"]))
                if handler is not None and is_json(scope):
                    scope["route_name"] = scope["path"]
                    code, data = handler(body)
                    status[0] = code
                    await send_bytes(send, code, data)
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


def is_json(scope: dict) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return True  # no content type: parse as JSON, as FastAPI does


async def send_bytes(send: Any, status: int, data: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": data})


def error_payload(exc: MoodshiftError) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of an error raised while answering a request."""
    if isinstance(exc, UnknownMoodError):
        detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "unknown_mood"}]
        return 422, {"detail": detail, "known_moods": exc.known}
    if isinstance(exc, BodyFieldError):
        loc = ["body"] if exc.field == "body" else ["body", exc.field]
        return 422, {"detail": [{"loc": loc, "msg": exc.msg, "type": "value_error"}]}
    if isinstance(exc, UnknownTrackError):
        return 404, {"detail": str(exc)}
    return (422 if isinstance(exc, InputError) else 500), {"detail": str(exc)}


async def send_json(send: Any, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close")],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": data})
