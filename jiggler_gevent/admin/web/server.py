"""`gjiggler web`: the dashboard on gevent's WSGI server, until SIGTERM or Ctrl-C."""

import logging
import signal
import sys

import gevent
from gevent.pywsgi import WSGIServer

from ... import config, gevent_types
from .app import create_app

log = logging.getLogger("jiggler_gevent.web")


def serve(host: str = "127.0.0.1", port: int = 9292, auth: tuple[str, str] | None = None) -> None:
    """Serve the dashboard; port 0 picks a free one. Prints the URL it listens on.

    `auth=(user, password)` puts it behind HTTP basic auth."""
    server: gevent_types.WSGIServer = WSGIServer((host, port), create_app(auth=auth), log=log, error_log=log)
    server.start()
    bound_host, bound_port = server.address[:2]
    cfg = config.current()
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(
        f"jiggler dashboard on http://{shown}:{bound_port}/ (namespace {cfg.namespace}, "
        f"Redis {config.redacted(cfg.url)})",
        flush=True,
    )
    gevent.signal_handler(signal.SIGTERM, server.stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop(timeout=1)
    sys.stdout.flush()
