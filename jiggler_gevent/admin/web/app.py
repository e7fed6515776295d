"""The dashboard as one WSGI application: routing, CSRF, security headers, static files, errors.

Mount it anywhere: `gjiggler web` serves it on gevent's WSGI server, the Django view adapts it, and any
WSGI stack can call it (it honours SCRIPT_NAME, so links work under a prefix). Every read and write goes
through jiggler_gevent.api.
"""

import logging
import mimetypes
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from ... import config
from . import batches, cron, jobs, limits, metrics, pages, sets, workflows
from .auth import CHALLENGE, BasicAuth
from .html import Safe, render
from .http import Csrf, Request, Response
from .layout import View

log = logging.getLogger("jiggler_gevent.web")

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
SET_ROUTE = re.compile(r"^/(scheduled|retries|dead)(?:/(.+))?$")
QUEUE_ROUTE = re.compile(r"^/queues/(.+)$")
BATCH_ROUTE = re.compile(r"^/batches/(.+)$")
WORKFLOW_ROUTE = re.compile(r"^/workflows/(.+)$")
JOB_ROUTE = re.compile(r"^/jobs/(.+)$")
METRICS_ROUTE = re.compile(r"^/metrics/(.+)$")

StartResponse = Callable[..., Any]


class Dashboard:
    """The WSGI app. `secret` signs CSRF tokens (random per process unless given, e.g. from Django's);
    `auth`, when given, puts every page, static file and action behind HTTP basic auth."""

    def __init__(self, secret: bytes | None = None, auth: BasicAuth | None = None) -> None:
        self.csrf = Csrf(secret)
        self.auth = auth

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.auth is not None and not self.auth.allows(environ):
            # Checked before the request is parsed, so an unauthenticated POST body is never read.
            resp = Response("authentication required", "401 Unauthorized", "text/plain; charset=utf-8", [CHALLENGE])
        else:
            resp = self.respond(Request(environ))
        start_response(resp.status, resp.headers + SECURITY_HEADERS + [("Content-Length", str(len(resp.body)))])
        return [] if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD" else [resp.body]

    def respond(self, req: Request) -> Response:
        """The response to `req`; a failure is a 503 (Redis) or a 500, with the same headers as any page."""
        try:
            return self.handle(req)
        except redis.RedisError as exc:
            log.warning("redis error serving %s: %s", req.path, exc)
            return Response(f"Redis did not answer: {exc}", "503 Service Unavailable", "text/plain; charset=utf-8")
        except Exception:
            log.exception("error serving %s", req.path)
            return Response("internal error: see the dashboard's log", "500 Internal Server Error", "text/plain")

    def handle(self, req: Request) -> Response:
        if req.path.startswith("/static/"):
            return static(req.path[len("/static/") :])
        if req.path == "/stats.json":
            return pages.stats_json(req)
        if req.method not in ("GET", "HEAD", "POST"):
            return Response(
                "method not allowed", "405 Method Not Allowed", "text/plain", headers=[("Allow", "GET, HEAD, POST")]
            )
        token, fresh = self.csrf.token_for(req)
        if req.method == "POST":
            resp = self.post(req)
        else:
            resp = self.get(View(req, token))
        if fresh:
            resp.headers.append(Csrf.cookie_header(token, req))
        resp.headers.append(("Cache-Control", "no-store"))
        return resp

    def get(self, view: View) -> Response:
        path = view.req.path
        simple = {
            "/": ("Dashboard", pages.dashboard),
            "/busy": ("Busy", pages.busy),
            "/queues": ("Queues", pages.queues),
            cron.PATH: ("Cron", cron.page),
            limits.PATH: ("Limits", limits.page),
            batches.PATH: ("Batches", batches.listing),
            workflows.PATH: ("Workflows", workflows.listing),
            metrics.PATH: ("Metrics", metrics.overview),
        }
        if path in simple:
            title, fn = simple[path]
            return Response(view.page(title, fn(view)))
        if path == jobs.PATH:
            return jobs.index(view)
        m = QUEUE_ROUTE.match(path)
        if m:
            return Response(view.page(f"Queue {m.group(1)}", pages.queue(view, m.group(1))))
        m = JOB_ROUTE.match(path)
        if m:
            return Response(view.page("Job status", jobs.detail(view, m.group(1))))
        m = BATCH_ROUTE.match(path)
        if m:
            return self._batch(view, m.group(1))
        m = WORKFLOW_ROUTE.match(path)
        if m:
            return self._workflow(view, m.group(1))
        m = METRICS_ROUTE.match(path)
        if m:
            return Response(view.page(f"Metrics of {m.group(1)}", metrics.detail(view, m.group(1))))
        m = SET_ROUTE.match(path)
        if m:
            kind = sets.KINDS[m.group(1)]
            if m.group(2) is None:
                return Response(view.page(kind.title, sets.listing(view, kind)))
            body = sets.detail(view, kind, m.group(2))
            if body is not None:
                return Response(view.page(f"{kind.title} job", body))
            missing = render(
                '<p class="empty">This job is no longer in the {set} set: it may have run, been retried '
                'or deleted. <a href="{back}">Back to the list</a>.</p>',
                set=kind.title.lower(),
                back=view.url(kind.path),
            )
            return Response(view.page("Job not found", missing), "404 Not Found")
        return Response(view.page("Not found", Safe('<p class="empty">No such page.</p>')), "404 Not Found")

    def _batch(self, view: View, bid: str) -> Response:
        return self._kept(view, "Batch", batches.detail(view, bid), batches.PATH)

    def _workflow(self, view: View, wid: str) -> Response:
        return self._kept(view, "Workflow", workflows.detail(view, wid), workflows.PATH)

    @staticmethod
    def _kept(view: View, title: str, body: Safe | None, back: str) -> Response:
        """The page of a batch or a workflow (`body`), or a 404 when it is unknown or expired (None)."""
        if body is not None:
            return Response(view.page(title, body))
        missing = render(
            '<p class="empty">No such {what}: it is unknown, or it expired ({days} days after its last change). '
            '<a href="{back}">Back to the list</a>.</p>',
            what=title.lower(),
            days=config.BATCH_TTL // 86400,
            back=view.url(back),
        )
        return Response(view.page(f"{title} not found", missing), "404 Not Found")

    def post(self, req: Request) -> Response:
        if not self.csrf.check(req):
            return Response(
                "This form has expired or did not come from this dashboard (CSRF check failed). "
                "Go back, reload the page and try again.",
                "403 Forbidden",
                "text/plain; charset=utf-8",
            )
        result: tuple[dict[str, Any], str] | None = None
        m = QUEUE_ROUTE.match(req.path)
        if m:
            result = pages.queue_action(req, m.group(1))
        m = SET_ROUTE.match(req.path)
        if m:
            kind = sets.KINDS[m.group(1)]
            result = sets.action(req, kind), kind.path
        if req.path == cron.PATH:
            result = cron.action(req), cron.PATH
        m = JOB_ROUTE.match(req.path)
        if m:
            result = jobs.action(req, m.group(1))
        if result is None:
            return Response("unknown action", "400 Bad Request", "text/plain")
        outcome, back = result
        return Response.redirect(req.url(back) + _query(req, outcome))


def _query(req: Request, outcome: dict[str, Any]) -> str:
    keep = {k: req.query[k] for k in ("page", "per") if req.query.get(k, "").isdigit()}
    keep.update({k: str(v) for k, v in outcome.items()})
    return "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in keep.items())


def static(name: str) -> Response:
    """A file from web/static, by plain name only (no paths)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", "404 Not Found", "text/plain")
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
        ctype += "; charset=utf-8"
    return Response(path.read_bytes(), content_type=ctype, headers=[("Cache-Control", "public, max-age=3600")])


def create_app(secret: bytes | None = None, auth: tuple[str, str] | None = None) -> Dashboard:
    """A new dashboard WSGI app reading the configured namespace (see jiggler_gevent.configure).

    `auth=(user, password)` asks every request for HTTP basic auth; without it the app has no login of its own.
    """
    return Dashboard(secret, BasicAuth(*auth) if auth is not None else None)
