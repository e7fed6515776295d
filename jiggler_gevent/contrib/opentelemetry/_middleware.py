"""The tracing middleware behind instrument(); importing this module imports opentelemetry."""

import contextvars
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ... import __version__
from ...middleware import ClientMiddleware, JobContext, ServerMiddleware

SYSTEM = "jiggler_gevent"
FIELD = "trace"  # the payload field that carries the trace context
MAX_PENDING = 10_000  # push spans whose push did not end (an error, a unique duplicate) are ended past this


def tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    return trace.get_tracer("jiggler_gevent", __version__, provider)


def _attributes(payload: dict[str, Any], operation: str, kind: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": str(payload.get("queue", "")),
        "messaging.message.id": str(payload.get("jid", "")),
        "jiggler_gevent.job.name": str(payload.get("name", "")),
    }
    for key in ("retry_count", "bid"):
        value = payload.get(key)
        if isinstance(value, int | str) and not isinstance(value, bool):
            attributes[f"jiggler_gevent.{key}"] = value
    return attributes


class TracingClient(ClientMiddleware):
    """A PRODUCER span "<job> publish" around each push; its context goes into the payload's `trace` field."""

    def __init__(self, t: trace.Tracer) -> None:
        self.tracer = t
        self.pending: dict[int, tuple[dict[str, Any], Span]] = {}

    def before_push(self, payload: dict[str, Any]) -> None:
        parent = None
        carried = payload.get(FIELD)
        if isinstance(carried, dict) and trace.get_current_span().get_span_context().is_valid is False:
            parent = propagate.extract(carried)  # pushed again (a periodic or re-enqueued payload): same trace
        span = self.tracer.start_span(
            f"{payload.get('name', '?')} publish",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=_attributes(payload, "publish", "send"),
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span, parent))
        if carrier:
            payload[FIELD] = carrier
        stale = self.pending.pop(id(payload), None)
        if stale is not None:
            stale[1].end()
        self.pending[id(payload)] = (payload, span)
        while len(self.pending) > MAX_PENDING:
            _, old = self.pending.pop(next(iter(self.pending)))
            old.end()

    def after_push(self, payload: dict[str, Any]) -> None:
        entry = self.pending.pop(id(payload), None)
        if entry is not None:
            entry[1].end()


class TracingServer(ServerMiddleware):
    """A CONSUMER span "<job> process" around each run, child of the push's span and current while it runs."""

    def __init__(self, t: trace.Tracer) -> None:
        self.tracer = t
        self.running: dict[int, tuple[Span, contextvars.Token[otel_context.Context]]] = {}

    def before_process(self, ctx: JobContext) -> None:
        carried = ctx.payload.get(FIELD)
        parent = propagate.extract(carried) if isinstance(carried, dict) else None
        span = self.tracer.start_span(
            f"{ctx.name} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes(ctx.payload, "process", "process"),
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self.running[id(ctx)] = (span, token)

    def after_process(self, ctx: JobContext) -> None:
        entry = self.running.pop(id(ctx), None)
        if entry is None:
            return
        span, token = entry
        exc = ctx.exception
        if exc is not None:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        # Called from another greenlet when the job was abandoned (a stuck job): its context is not ours to detach.
        if trace.get_current_span() is span:
            otel_context.detach(token)
