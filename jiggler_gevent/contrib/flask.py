"""Flask: `init_app(app, allow=...)` configures jiggler_gevent from `app.config` and mounts the dashboard.

The `JIGGLER_*` keys of `app.config` are read once: `JIGGLER_REDIS_URL` and `JIGGLER_NAMESPACE` (as `configure()`
takes them), `JIGGLER_WEB_SECRET` (the dashboard's CSRF secret: set it when several processes serve the app, so that
their forms stay valid across them) and `JIGGLER_DASHBOARD_PATH` (default `/jiggler`; None: no dashboard). The
dashboard is dispatched before Flask's own routing, and every request to it first calls `allow()` inside a Flask
request context for that request, so the check can read `flask.session`, `flask_login.current_user` or the request's
headers; a request it denies gets 403 and never reaches the dashboard.
"""

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from .. import config
from ..admin.web import create_app

DEFAULT_PATH = "/jiggler"
StartResponse = Callable[..., Any]


def init_app(app: Flask, allow: Callable[[], bool] | None = None) -> None:
    """Configure jiggler_gevent from `app.config` and mount the dashboard behind `allow()` (see the module)."""
    settings = {key.removeprefix("JIGGLER_"): value for key, value in app.config.items() if key.startswith("JIGGLER_")}
    config.configure(redis_url=settings.get("REDIS_URL"), namespace=settings.get("NAMESPACE"))
    path = settings.get("DASHBOARD_PATH", DEFAULT_PATH)
    if path is None:
        return
    if allow is None:
        raise ValueError(
            "the dashboard needs an access check: init_app(app, allow=...) with a function that says whether the "
            "current request may see it (or JIGGLER_DASHBOARD_PATH = None for no dashboard)"
        )
    secret = settings.get("WEB_SECRET")
    dashboard = create_app(secret=secret.encode() if isinstance(secret, str) else secret)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {path: Guarded(app, dashboard, allow)})  # type: ignore[method-assign]


class Guarded:
    """A WSGI app that asks `allow()`, in a request context of `app`, before passing a request to `inner`."""

    def __init__(
        self, app: Flask, inner: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], allow: Callable[[], bool]
    ) -> None:
        self.app, self.inner, self.allow = app, inner, allow

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self.app.request_context(environ):
            allowed = bool(self.allow())
        if not allowed:
            body = b"Forbidden: the application's access check refused this request.\n"
            start_response(
                "403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return self.inner(environ, start_response)
