"""The frame every page shares: navigation with live counts, flash messages, forms with the CSRF field."""

import string
import time
from pathlib import Path

from ... import __version__, config
from .. import api
from .html import Safe, esc, join, number, render
from .http import CSRF_FIELD, Request

TEMPLATE = string.Template((Path(__file__).parent / "templates" / "layout.html").read_text(encoding="utf-8"))

# (path, label, Stats attribute shown as a badge)
SECTIONS: list[tuple[str, str, str | None]] = [
    ("/", "Dashboard", None),
    ("/busy", "Busy", "busy"),
    ("/queues", "Queues", "enqueued"),
    ("/scheduled", "Scheduled", "scheduled_size"),
    ("/retries", "Retries", "retry_size"),
    ("/dead", "Dead", "dead_size"),
    ("/metrics", "Metrics", None),
    ("/batches", "Batches", None),
    ("/workflows", "Workflows", None),
    ("/cron", "Cron", None),
    ("/limits", "Limits", None),
    ("/jobs", "Job status", None),
]

# ?flash=CODE&n=N after an action: fixed texts, so nothing from the URL is echoed but a number.
FLASH = {
    "retried": "{n} job(s) sent back to their queue.",
    "deleted": "{n} job(s) deleted.",
    "cleared": "{n} job(s) cleared.",
    "missing": "That job is no longer there (it may have run or moved).",
    "nothing": "Nothing selected.",
    "enqueued": "{n} periodic job(s) enqueued now.",
    "gone": "That periodic entry is no longer published by any running worker.",
    "cancelled": "Job cancelled: if it was waiting it will never start; if it runs, it stops at its next safe point.",
    "not-cancelled": "Nothing to cancel: the job was not found waiting or running (it may have ended).",
    "paused": "Queue paused: no worker starts a job from it until it is resumed (running jobs finish).",
    "resumed": "Queue resumed: its jobs start now.",
}


class View:
    """What a page renderer gets: the request, its CSRF token and a Stats snapshot for the frame."""

    def __init__(self, req: Request, token: str) -> None:
        self.req, self.token = req, token
        self.now = time.time()
        self._stats: api.Stats | None = None

    @property
    def stats(self) -> api.Stats:
        if self._stats is None:
            self._stats = api.Stats()
        return self._stats

    def url(self, path: str) -> str:
        return self.req.url(path)

    def form(self, action: str, inner: Safe, confirm: str = "", css: str = "") -> Safe:
        """A POST form to `action` (an app path) carrying the CSRF token; `confirm` asks first."""
        return render(
            '<form method="post" action="{action}" class="{css}" data-confirm="{confirm}">'
            '<input type="hidden" name="{field}" value="{token}">{inner}</form>',
            action=self.url(action),
            css=css,
            confirm=confirm,
            field=CSRF_FIELD,
            token=self.token,
            inner=inner,
        )

    def pager(self, path: str, page: int, per: int, total: int, newest_first: bool = False) -> Safe:
        """Previous / next links and 'page N of M'."""
        pages = max(1, -(-total // per))
        if pages == 1:
            return Safe("")

        def link(p: int, label: str) -> Safe:
            if p < 1 or p > pages:
                return render('<span class="off">{label}</span>', label=label)
            return render('<a href="{href}">{label}</a>', href=f"{self.url(path)}?page={p}&per={per}", label=label)

        return render(
            '<nav class="pager">{prev}<span>page {page} of {pages}</span>{next}</nav>',
            prev=link(page - 1, "‹ newer" if newest_first else "‹ prev"),
            page=number(page),
            pages=number(pages),
            next=link(page + 1, "older ›" if newest_first else "next ›"),
        )

    def page(self, title: str, body: Safe, status: str = "200 OK") -> Safe:
        """The whole document."""
        return Safe(
            TEMPLATE.substitute(
                title=esc(title),
                root=esc(self.req.root),
                static=esc(self.url("/static")),
                nav=self._nav(),
                flash=self._flash(),
                body=body,
                namespace=esc(config.current().namespace),
                version=esc(__version__),
                redis_url=esc(config.redacted(config.current().url)),
                now=esc(time.strftime("%H:%M:%S UTC", time.gmtime(self.now))),
            )
        )

    def _nav(self) -> Safe:
        items = []
        for path, label, attr in SECTIONS:
            current = self.req.path == path or (path != "/" and self.req.path.startswith(path + "/"))
            badge = (
                render('<b data-stat="{attr}">{n}</b>', attr=attr, n=number(getattr(self.stats, attr))) if attr else ""
            )
            items.append(
                render(
                    '<a href="{href}"{cur}>{label}{badge}</a>',
                    href=self.url(path),
                    cur=Safe(' aria-current="page"' if current else ""),
                    label=label,
                    badge=badge,
                )
            )
        return join(items)

    def _flash(self) -> Safe:
        text = FLASH.get(self.req.query.get("flash", ""))
        if not text:
            return Safe("")
        try:
            n = int(self.req.query.get("n", "0"))
        except ValueError:
            n = 0
        return render('<p class="flash" role="status">{text}</p>', text=text.format(n=number(n)))
