"""Pure-ASGI middleware of the server: Host check, security headers, body limit, metrics,
and the inline JSON fast path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from moodshift.errors import (
    InputError,
    MoodshiftError,
    UnknownTrackError,
)
from moodshift.retrieval.request import BodyFieldError, UnknownMoodError

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024
#: Host names answered by default: loopback only (a DNS-rebinding page gets 400).
DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Seconds a client may take to send a request body.
BODY_TIMEOUT_S = 10.0
#: The page's scripts, styles, images and requests come from this server only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
#: Upper bounds (seconds) of the latency histogram's buckets.
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


def host_name(value: bytes) -> str:
    """The host name of a Host header value, lower-case, without port or IPv6 brackets."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class GuardMiddleware:
    """Pure-ASGI middleware: Host allow-list (400), security headers, body-size limit
    (413) and timeout (408), and request metrics.

    Written against raw ASGI rather than ``BaseHTTPMiddleware`` because the
    latter adds a task and a memory stream per request, which shows in p99.

    Parameters
    ----------
    allowed_hosts : sequence of str
        Host names answered (``"*"``: any). A request whose Host header names
        another gets 400: a page on another site that re-points its own domain
        at this address (DNS rebinding) sends its own domain as Host.
    cors_origins : sequence of str
        Origins that get ``Access-Control-Allow-Origin`` on fast-path answers
        (the inner CORS middleware handles the other routes and preflights).
    """

    def __init__(
        self,
        app: Any,
        *,
        metrics: RequestMetrics,
        max_body: int,
        fast: dict[tuple[str, str], Any] | None = None,
        allowed_hosts: Any = DEFAULT_ALLOWED_HOSTS,
        cors_origins: Any = (),
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        hosts = {h.strip().lower().strip("[]") for h in allowed_hosts if h.strip()}
        self.any_host = "*" in hosts
        self.allowed_hosts = frozenset(hosts)
        self.cors_origins = frozenset(o.encode() for o in cors_origins)
        self.body_timeout = float(body_timeout)
        # (method, path) -> async handler(body bytes) -> (status, JSON bytes). Such routes
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
        origin = None
        host = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value
            elif key == b"origin":
                origin = value
        cors = origin if origin is not None and origin in self.cors_origins else None

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if cors is not None and b"access-control-allow-origin" not in present:
                    headers += [(b"access-control-allow-origin", cors), (b"vary", b"Origin")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            if (
                not self.any_host
                and host is not None
                and (host_name(host) not in self.allowed_hosts)
            ):
                scope["route_name"] = "<bad host>"
                await send_json(
                    send_wrapper, 400,
                    {"detail": "invalid Host header; start the server with --allowed-hosts "
                               "naming this host"},
                )  # fmt: skip
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                try:
                    body = await asyncio.wait_for(
                        self._read_body(scope, receive), timeout=self.body_timeout
                    )
                except asyncio.TimeoutError:
                    scope["route_name"] = "<slow body>"
                    await send_json(
                        send_wrapper, 408,
                        {"detail": f"request body not received within {self.body_timeout:g} s"},
                    )  # fmt: skip
                    return
                if body is None:
                    await send_json(
                        send_wrapper, 413,
                        {"detail": f"request body larger than {self.max_body} bytes; send less"},
                    )  # fmt: skip
                    scope["route_name"] = "<too large>"
                    return
                handler = self.fast.get((scope["method"], scope["path"]))
                if handler is not None and is_json(scope):
                    scope["route_name"] = scope["path"]
                    code, data = await handler(body)
                    await send_bytes(send_wrapper, code, data)
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
    if isinstance(exc, InputError):
        # The same shape as every other 422 (FastAPI's HTTPValidationError).
        return 422, {"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}
    return 500, {"detail": str(exc)}


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
