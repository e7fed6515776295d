"""Logging set-up for the `gjiggler` commands: to stderr, as text or as one JSON object per line.

A line about a job carries its `jid` and `job`: the worker's own lines pass them (`extra=job_fields(...)`), and
every other line logged while a job runs (the job's own code, middleware) gets them from `current_job`, which
the Processor sets around each run. It is a ContextVar, so under gevent each greenlet has its own: concurrent
jobs never see each other's. A greenlet a job spawns starts with an empty context, so its lines carry neither.

With `--log-format json` every line on stderr is one JSON object: besides the log records, the tracebacks
gevent's hub prints, `warnings`, and exceptions no code caught are turned into records too.

In text (the default), a line at column 0 always begins a record: a record's first line has its control
characters escaped (a newline in a job's name or an error message shows as \n), and the lines after it (a
traceback, a stack) are indented by two spaces, so nothing a payload carries can forge a line.
"""

import json
import logging
import re
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

LOG_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"
JOB_LOG_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s [%(job)s jid=%(jid)s]: %(message)s"
JOB_FIELDS = ("jid", "job")  # set on job log lines (`extra=job_fields(...)`, or by JobFilter)

current_job: ContextVar[tuple[str, str] | None] = ContextVar("jiggler_gevent_current_job", default=None)
"""(job name, jid) of the job the current greenlet is running, or None; set by the Processor."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def job_fields(name: str, jid: str) -> dict[str, Any]:
    """The `extra` of a log line about one job: its jid and job name as fields of the record."""
    return {"jid": jid, "job": name}


class JobFilter(logging.Filter):
    """Gives each record logged while a job runs (in that job's greenlet) the job's `jid` and `job`, unless
    the record has them already. It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_job.get()
        if running is not None and not hasattr(record, "jid"):
            record.job, record.jid = running
        return True


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")  # what can end or rewrite a line; not tab
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # "\n", "\x1b", "\u2028"


def one_line(value: object) -> str:
    """str(value) with every character that could end or rewrite a line escaped as Python writes it (\n, \r...)."""
    return _CONTROL.sub(_escape, str(value))


class TextFormatter(logging.Formatter):
    """LOG_FORMAT; a job line whose message does not name its jid (one the job's own code logged) shows
    `[job jid=...]` after the logger's name. One record's first line is one line (one_line), the traceback and
    stack after it are indented: see the module's docstring."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self._job_style = logging.PercentStyle(JOB_LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        first, newline, rest = super().format(record).partition("\n")
        if not newline:
            return first
        return first + "".join("\n  " + _CONTROL_BUT_NEWLINE.sub(_escape, line) for line in rest.split("\n"))

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = {"message": one_line(record.message)}
        for name in JOB_FIELDS:
            if hasattr(record, name):
                fields[name] = one_line(getattr(record, name))
        clean = logging.makeLogRecord(dict(record.__dict__, **fields))
        jid = getattr(clean, "jid", None)
        if jid is not None and hasattr(clean, "job") and f"jid={jid}" not in clean.message:
            return self._job_style.format(clean)
        return super().formatMessage(clean)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, pid; jid and job on job lines;
    the traceback (exc_info) and stack (stack_info) as strings inside the object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_json_active = False
# Libraries a worker uses whose debug and info lines are about their own plumbing (redis-py logs each connection;
# "push_response" is redis-py's too): they stay at WARNING, under -v as well, unless configured otherwise.
QUIET_LIBRARIES = ("redis", "push_response", "urllib3", "requests")


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    """Log to stderr at INFO, our own loggers (jiggler_gevent.*) at DEBUG when `verbose`, the Redis and HTTP
    clients' at WARNING unless something set their level already (the user's code may set it later too);
    `log_format` "json" writes one JSON object a line, and sends what else would reach stderr (gevent's tracebacks,
    warnings, uncaught exceptions) through logging."""
    global _json_active
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(JobFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("jiggler_gevent").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        if library.level == logging.NOTSET:
            library.setLevel(logging.WARNING)
    if log_format == "json" and not _json_active:
        _json_active = True
        _route_stderr_writers()


def json_active() -> bool:
    """Whether setup_logging was asked for JSON: then a command's error message should be a record too."""
    return _json_active


def print_error(message: str) -> None:
    """`gjiggler: error: MESSAGE` on stderr; once JSON logging is set up, as a record of jiggler_gevent.cli."""
    if _json_active:
        logging.getLogger("jiggler_gevent.cli").error("gjiggler: error: %s", message)
    else:
        sys.stderr.write(f"gjiggler: error: {message}\n")
        sys.stderr.flush()


def _route_stderr_writers() -> None:
    """Make what Python and gevent print on stderr by themselves log records instead."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
    _route_hub_errors()


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("jiggler_gevent").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info: ExcInfo = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("jiggler_gevent").critical("uncaught exception in thread %s", name, exc_info=exc_info)


def _log_unraisable(u: Any) -> None:  # sys.UnraisableHookArgs
    message = u.err_msg or "Exception ignored in"
    exc_info = (u.exc_type, u.exc_value, u.exc_traceback) if u.exc_value is not None else None
    logging.getLogger("jiggler_gevent").error("%s: %r", message, u.object, exc_info=exc_info)


def _route_hub_errors() -> None:
    """gevent's hub prints the traceback of a greenlet that died of an exception straight to stderr: make its
    hubs (one per thread, made later, and any made already) log it instead."""
    from gevent import hub as gevent_hub
    from gevent._hub_local import get_hub_if_exists  # gevent has no public "the hub, if made"

    logging_hub = type("LoggingHub", (gevent_hub.Hub,), {"print_exception": _log_hub_error})
    gevent_hub.set_default_hub_class(logging_hub)
    existing = get_hub_if_exists()
    if existing is not None:
        existing.print_exception = _log_hub_error.__get__(existing)


def _log_hub_error(hub: Any, context: Any, kind: Any, value: Any, tb: Any) -> None:
    """Hub.print_exception, as one record of logger gevent.hub."""
    import gevent

    kind, value, tb = hub._normalize_exception(kind, value, tb)
    where = "the hub" if context is None else context if isinstance(context, str) else _describe(hub, context)
    args = ("%s failed with %s", where, getattr(kind, "__name__", "exception"))
    exc_info = (kind, value, tb) if value is not None else None
    log = logging.getLogger("gevent.hub")
    if gevent.getcurrent() is hub:  # the hub must not wait for a logging lock another greenlet holds
        gevent.spawn(log.error, *args, exc_info=exc_info)
    else:
        log.error(*args, exc_info=exc_info)


def _describe(hub: Any, context: Any) -> str:
    try:
        return str(hub.format_context(context))
    except Exception:  # gevent's own printer falls back to repr too
        return repr(context)
