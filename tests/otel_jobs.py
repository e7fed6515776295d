"""Jobs for tests/test_otel.py; a worker loads them with `-r tests.otel_jobs`, which is where instrument() is called.

In the worker (JIGGLER_OTEL_EXPORT=redis), importing this module sets up an SDK TracerProvider whose spans are
written as JSON lines to the Redis list NS:t:otel-spans of the worker's namespace, then calls instrument(), as
docs/observability.md tells users to do. The test process imports it only for the job objects.
"""

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from jiggler_gevent import config, job
from jiggler_gevent.contrib.opentelemetry import instrument


def spans_key(namespace: str) -> str:
    return f"{namespace}:t:otel-spans"


def span_record(span: ReadableSpan) -> dict:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class RedisSpanExporter(SpanExporter):
    """Each finished span as a JSON line RPUSHed to the test namespace's span list."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = config.redis_client()
        key = spans_key(config.current().namespace)
        client.rpush(key, *(json.dumps(span_record(s), default=str) for s in spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


if os.environ.get("JIGGLER_OTEL_EXPORT") == "redis":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedisSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument()


@job(retries=0)
def traced(value: str) -> str:
    """Starts a span of its own, which must nest under the run's span."""
    with trace.get_tracer("tests.otel_jobs").start_as_current_span("inside job"):
        return value


@job(retries=0)
def traced_failure(message: str) -> None:
    raise ValueError(message)
