"""OpenTelemetry tracing of jobs: a PRODUCER span for each push and a CONSUMER span for each run, in one trace.

Needs `opentelemetry-api` (the `otel` extra: `pip install jiggler_gevent[otel]`) and, to export anything, an
SDK TracerProvider set up by the application. Call `instrument()` in every process that enqueues jobs and in
the worker, from a module the worker imports with `-r` (at import, before the worker starts):

    from jiggler_gevent.contrib.opentelemetry import instrument
    instrument()

The push's trace context (W3C traceparent, tracestate and baggage, through the global propagator) travels
in the payload's `trace` field; the run's span is a child of the push's span and is current while the job
runs, so spans the job starts nest under it. Nothing of OpenTelemetry is imported until `instrument()` is
called.
"""

from typing import Any

_installed: list[tuple[Any, Any]] = []  # (chain, middleware) pairs that instrument() added


def instrument(tracer_provider: Any = None) -> None:
    """Add the tracing middleware to the client and server chains (once; later calls do nothing).

    `tracer_provider` is an `opentelemetry.trace.TracerProvider`; by default the global one. In a worker,
    call it before the worker starts (in a `-r` module): the worker copies the server chain when it starts.
    """
    if _installed:
        return
    from ... import middleware
    from ._middleware import TracingClient, TracingServer, tracer

    t = tracer(tracer_provider)
    for chain, entry in ((middleware.client, TracingClient(t)), (middleware.server, TracingServer(t))):
        chain.add(entry)
        _installed.append((chain, entry))


def uninstrument() -> None:
    """Take the tracing middleware out of the chains again (a worker already started keeps its copy)."""
    while _installed:
        chain, entry = _installed.pop()
        chain.remove(entry)


def is_instrumented() -> bool:
    """True between instrument() and uninstrument()."""
    return bool(_installed)
