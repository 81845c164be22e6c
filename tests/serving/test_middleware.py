"""The ASGI guard alone: hosts, headers, body limits, the fast path, metrics, error mapping."""

from __future__ import annotations

import asyncio
import json

import pytest

from moodshift.errors import InputError, MoodshiftError, UnknownTrackError
from moodshift.retrieval.request import BodyFieldError, UnknownMoodError
from moodshift.serving.middleware import (
    LATENCY_BUCKETS,
    GuardMiddleware,
    RequestMetrics,
    error_payload,
    host_name,
)


async def _echo_app(scope, receive, send):
    """The inner app: answers 200 with the body it received."""
    message = await receive() if scope["method"] == "POST" else {"body": b""}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"inner:" + message["body"]})


def _call(guard, *, method="GET", path="/x", headers=(), body=b"", chunks=None):
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower(), v) for k, v in headers]}  # fmt: skip
    parts = list(chunks) if chunks is not None else [body]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]  # fmt: skip
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def _guard(**kw):
    metrics = RequestMetrics()
    return GuardMiddleware(
        _echo_app,
        metrics=metrics,
        max_body=kw.pop("max_body", 100),
        allowed_hosts=kw.pop("allowed_hosts", ("localhost",)),
        **kw,
    ), metrics


def test_host_names_lose_port_and_brackets():
    assert host_name(b"LocalHost:8000") == "localhost"
    assert host_name(b"[::1]:8000") == "::1"
    assert host_name(b"::1") == "::1"  # a bare IPv6 address keeps its colons
    assert host_name(b"example.org") == "example.org"


def test_a_foreign_host_gets_400_and_every_answer_the_security_headers():
    guard, metrics = _guard()
    status, headers, body = _call(guard, headers=[(b"host", b"evil.example:80")])
    assert status == 400 and b"--allowed-hosts" in body
    status, headers, body = _call(guard, headers=[(b"host", b"localhost:8000")])
    assert (status, body) == (200, b"inner:")
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert metrics.counts == {("GET", "<bad host>", 400): 1, ("GET", "<unmatched>", 200): 1}


def test_bodies_over_the_limit_get_413_whether_announced_or_streamed():
    guard, _ = _guard(max_body=10)
    status, _, _ = _call(guard, method="POST", headers=[(b"content-length", b"11")], body=b"x")
    assert status == 413
    status, _, _ = _call(guard, method="POST", chunks=[b"123456", b"789012"])
    assert status == 413
    status, _, body = _call(guard, method="POST", chunks=[b"12345", b"67890"])
    assert (status, body) == (200, b"inner:1234567890")  # replayed whole to the inner app


def test_fast_routes_answer_json_bodies_without_the_inner_app():
    seen = []

    async def handler(body: bytes):
        seen.append(body)
        return 200, json.dumps({"ok": True}).encode()

    guard, metrics = _guard(fast={("POST", "/query"): handler})
    headers = [(b"content-type", b"application/json")]
    status, _, body = _call(guard, method="POST", path="/query", headers=headers, body=b"{}")
    assert (status, json.loads(body), seen) == (200, {"ok": True}, [b"{}"])
    # Not JSON: the inner app (FastAPI's route) answers, with its own validation.
    status, _, body = _call(guard, method="POST", path="/query",
                            headers=[(b"content-type", b"text/plain")], body=b"{}")  # fmt: skip
    assert (status, body, len(seen)) == (200, b"inner:{}", 1)
    assert metrics.counts[("POST", "/query", 200)] == 1


def test_the_latency_histogram_is_cumulative_and_counts_every_request():
    metrics = RequestMetrics()
    for seconds in (0.0001, 0.003, 0.003, 99.0):
        metrics.observe("POST", '/q"x', 200, seconds)
    text = metrics.render()
    assert 'moodshift_requests_total{method="POST",route="/q\\"x",status="200"} 4' in text
    assert 'le="0.0005"} 1' in text and 'le="0.005"} 3' in text
    assert f'le="{LATENCY_BUCKETS[-1]}"}} 3' in text and 'le="+Inf"} 4' in text
    assert 'moodshift_request_duration_seconds_count{route="/q\\"x"} 4' in text
    assert 'moodshift_request_duration_seconds_sum{route="/q\\"x"} 99.006100' in text


@pytest.mark.parametrize(
    ("exc", "status", "loc"),
    [
        (UnknownMoodError(field="target_mood", value="x", known=["a"]), 422,
         ["body", "target_mood"]),
        (BodyFieldError("strength", "bad"), 422, ["body", "strength"]),
        (BodyFieldError("body", "give one"), 422, ["body"]),
        (UnknownTrackError("unknown track id 'q'"), 404, None),
        (InputError("bad"), 422, ["body"]),
        (MoodshiftError("broken"), 500, None),
    ],
)  # fmt: skip
def test_errors_map_to_status_and_the_field_at_fault(exc, status, loc):
    code, payload = error_payload(exc)
    assert code == status
    if loc is None:
        assert payload == {"detail": str(exc)}
    else:
        assert payload["detail"][0]["loc"] == loc
