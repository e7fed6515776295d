"""A FastAPI application with jiggler_gevent: `await job.aenqueue(...)` from async endpoints, and the dashboard
(a WSGI app) mounted at /jiggler through a2wsgi, behind the application's own check: here a bearer token.

    JIGGLER_REDIS_URL=redis://127.0.0.1:6379/0 DASHBOARD_TOKEN=... uvicorn --factory examples.fastapi_app.app:make_app
    gjiggler worker -r examples.flask_app.jobs
"""

import hmac
import os
from typing import Any

from a2wsgi import WSGIMiddleware
from fastapi import Body, FastAPI

import jiggler_gevent
from jiggler_gevent.web import create_app

from ..flask_app.jobs import send_welcome

Scope = dict[str, Any]


class Guarded:
    """An ASGI app that lets a request through to `inner` only when `allow(scope)` says so; 403 otherwise."""

    def __init__(self, inner: Any, allow: Any) -> None:
        self.inner, self.allow = inner, allow

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.allow(scope):
            body = b"Forbidden: the application's access check refused this request.\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.inner(scope, receive, send)


def bearer(token: str) -> Any:
    """An access check: the request carries `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    def allow(scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, expected)

    return allow


def make_app(redis_url: str | None = None, namespace: str | None = None, token: str | None = None) -> FastAPI:
    """The application (settings from the arguments, else JIGGLER_REDIS_URL, JIGGLER_NAMESPACE, DASHBOARD_TOKEN)."""
    jiggler_gevent.configure(redis_url=redis_url, namespace=namespace)
    app = FastAPI()

    @app.post("/signup")
    async def signup(email: str = Body(embed=True)) -> dict[str, Any]:
        return {"jid": await send_welcome.aenqueue(email)}

    dashboard = WSGIMiddleware(create_app(secret=os.environ.get("JIGGLER_WEB_SECRET", "").encode() or None))
    app.mount("/jiggler", Guarded(dashboard, bearer(token or os.environ["DASHBOARD_TOKEN"])))
    return app
