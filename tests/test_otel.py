"""OpenTelemetry (contrib.opentelemetry): a PRODUCER span per push in this process (in-memory exporter), a
CONSUMER span per run in a worker subprocess that calls instrument() in its -r module (spans exported to Redis)."""

import json
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from jiggler_gevent.contrib import opentelemetry as otel
from tests import otel_jobs
from tests.conftest import ROOT, wait_for


@pytest.fixture
def exporter():
    """instrument() in this process with a private SDK provider whose spans stay in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otel.instrument(tracer_provider=provider)
    yield memory
    otel.uninstrument()
    provider.shutdown()


@pytest.fixture
def worker(start_worker):
    return start_worker("-r", "tests.otel_jobs", env={"JIGGLER_OTEL_EXPORT": "redis"})


def consumer_spans(r, ns, count):
    key = otel_jobs.spans_key(ns.namespace)
    raw = wait_for(lambda: (lambda v: v if len(v) >= count else None)(r.lrange(key, 0, -1)), 15, f"{count} spans")
    return [json.loads(s) for s in raw]


def test_run_span_continues_the_push_trace(ns, r, exporter, worker):
    jid = otel_jobs.traced.enqueue("hello")
    (producer,) = exporter.get_finished_spans()
    assert producer.name == f"{otel_jobs.traced.name} publish"
    assert producer.kind is SpanKind.PRODUCER
    assert producer.attributes["messaging.system"] == "jiggler_gevent"
    assert producer.attributes["messaging.destination.name"] == "default"
    assert producer.attributes["messaging.message.id"] == jid

    spans = consumer_spans(r, ns, 2)
    by_name = {s["name"]: s for s in spans}
    inside = by_name.pop("inside job")
    (consumer,) = by_name.values()
    assert consumer["name"] == producer.name.replace(" publish", " process")
    assert consumer["kind"] == "CONSUMER"
    assert consumer["trace_id"] == format(producer.context.trace_id, "032x")
    assert consumer["parent_id"] == format(producer.context.span_id, "016x")
    assert consumer["status"] == "UNSET"
    assert consumer["attributes"]["messaging.system"] == "jiggler_gevent"
    assert consumer["attributes"]["messaging.destination.name"] == "default"
    assert consumer["attributes"]["messaging.message.id"] == jid
    # The run's span is current while the job runs: a span the job starts is its child.
    assert inside["trace_id"] == consumer["trace_id"]
    assert inside["parent_id"] == consumer["span_id"]


def test_failing_run_records_the_exception(ns, r, exporter, worker):
    otel_jobs.traced_failure.enqueue("boom")
    (producer,) = exporter.get_finished_spans()
    (consumer,) = consumer_spans(r, ns, 1)
    assert consumer["kind"] == "CONSUMER"
    assert consumer["trace_id"] == format(producer.context.trace_id, "032x")
    assert consumer["status"] == "ERROR"
    assert consumer["attributes"]["error.type"] == "ValueError"
    (event,) = consumer["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "boom"


def test_push_carries_the_trace_context(ns, r, exporter):
    otel_jobs.traced.enqueue("x")
    (raw,) = r.lrange(ns.keys.queue("default"), 0, -1)
    (producer,) = exporter.get_finished_spans()
    version, trace_id, span_id, flags = json.loads(raw)["trace"]["traceparent"].split("-")
    assert version == "00"
    assert (trace_id, span_id) == (f"{producer.context.trace_id:032x}", f"{producer.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_uninstrument_stops_tracing(ns, r, exporter):
    otel.uninstrument()
    assert not otel.is_instrumented()
    otel_jobs.traced.enqueue("x")
    assert exporter.get_finished_spans() == ()
    (raw,) = r.lrange(ns.keys.queue("default"), 0, -1)
    assert "trace" not in json.loads(raw)


def test_nothing_of_opentelemetry_is_imported_without_instrument(ns):
    # redis-py (8.x) itself imports parts of opentelemetry when it is installed, for its own metrics: what is
    # loaded once redis is imported is the baseline, and enqueueing without instrument() must add nothing to it.
    code = textwrap.dedent(
        f"""
        import sys
        import redis

        def otel():
            return sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry."))

        baseline = otel()
        from jiggler_gevent import config, job
        import jiggler_gevent.contrib.opentelemetry
        config.configure(redis_url={ns.url!r}, namespace={ns.namespace!r})

        @job
        def nothing():
            pass

        assert nothing.enqueue()
        assert "opentelemetry.propagate" not in sys.modules
        assert "jiggler_gevent.contrib.opentelemetry._middleware" not in sys.modules
        print(sorted(set(otel()) - set(baseline)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
