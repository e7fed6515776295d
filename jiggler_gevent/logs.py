"""Logging set-up for the `gjiggler` commands: to stderr, as text or as one JSON object per line."""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"
JOB_FIELDS = ("jid", "job")  # set on job log lines (`extra=job_fields(...)`)


def job_fields(name: str, jid: str) -> dict[str, Any]:
    """The `extra` of a log line about one job: its jid and job name as fields of the record."""
    return {"jid": jid, "job": name}


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


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    """Log to stderr at INFO, or DEBUG when `verbose`; `log_format` "json" writes one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
