"""The scheduled, retry and dead pages: paged lists, one job's detail, and the retry / delete actions.

A row is named by `jid@score`; an action finds it again with ZRANGEBYSCORE on that score (api.entry_at),
so neither a page nor an action scans the set.
"""

from typing import Any

from .. import api
from .html import Safe, arguments, as_json, clip, form_text, job_label, join, number, path_part, render, timestamp
from .http import Request
from .layout import View


class Kind:
    """One of the three sorted sets, as the dashboard shows it."""

    def __init__(
        self,
        path: str,
        title: str,
        cls: type[api.SortedSet],
        when: str,
        newest_first: bool,
        can_retry: str,
        failures: bool,
    ) -> None:
        self.path, self.title, self.cls, self.when = path, title, cls, when
        self.newest_first, self.can_retry, self.failures = newest_first, can_retry, failures


KINDS = {
    "scheduled": Kind("/scheduled", "Scheduled", api.ScheduledSet, "Due", False, "Enqueue now", False),
    "retries": Kind("/retries", "Retries", api.RetrySet, "Next retry", False, "Retry now", True),
    "dead": Kind("/dead", "Dead", api.DeadSet, "Died", True, "Retry now", True),
}


def entry_key(e: api.Entry) -> str:
    """The name of a row: jid@score (score in Python's round-trip repr)."""
    return f"{e.jid}@{e.score!r}"


def parse_key(key: str) -> tuple[str, float] | None:
    """(jid, score) of a row's name; None when it names none (no jid, or a score that is not a number: NaN is
    none, as no sorted-set score is NaN)."""
    jid, _, score = key.rpartition("@")
    try:
        value = float(score)
    except ValueError:
        return None
    return (jid, value) if jid and value == value else None


def find(kind: Kind, key: str) -> api.Entry | None:
    parsed = parse_key(key)
    return api.entry_at(kind.cls(), parsed[1], parsed[0]) if parsed else None


def job_path(kind: Kind, e: api.Entry) -> str:
    return f"{kind.path}/{path_part(entry_key(e))}"


def listing(view: View, kind: Kind) -> Safe:
    s = kind.cls()
    req = view.req
    per = req.int_arg("per", 25, 1, 200)
    total = len(s)
    page = req.int_arg("page", 1, 1, max(1, -(-total // per)))
    entries = s.page((page - 1) * per, per, newest_first=kind.newest_first)
    if not entries:
        return render('<p class="empty">No {what} jobs.</p>', what=kind.title.lower())
    rows = join(_row(view, kind, e) for e in entries)
    error_head = Safe("<th>Error</th>") if kind.failures else Safe("")
    toolbar = render(
        '<div class="toolbar"><button name="bulk" value="retry-selected">{retry} (selected)</button>'
        '<button name="bulk" value="delete-selected" class="danger">Delete selected</button>'
        '<span class="spacer"></span>'
        '<button name="bulk" value="retry-all" data-confirm="{retry} all {n} job(s)?">{retry} (all {n})</button>'
        '<button name="bulk" value="delete-all" class="danger" data-confirm="Delete all {n} job(s)?">'
        "Delete all</button></div>",
        retry=kind.can_retry,
        n=number(total),
    )
    table = render(
        '<div class="table-wrap"><table class="rows"><thead><tr>'
        '<th class="pick"><input type="checkbox" data-check-all aria-label="select all"></th>'
        "<th>{when}</th><th>Job</th><th>Arguments</th>{error_head}<th></th></tr></thead>"
        "<tbody>{rows}</tbody></table></div>",
        when=kind.when,
        error_head=error_head,
        rows=rows,
    )
    body = view.form(f"{kind.path}?page={page}&per={per}", join([toolbar, table]))
    summary = render(
        '<p class="summary"><b>{n}</b> job(s){order}.</p>',
        n=number(total),
        order=", newest first" if kind.newest_first else ", soonest first",
    )
    return join([summary, body, view.pager(kind.path, page, per, total, kind.newest_first)])


def _row(view: View, kind: Kind, e: api.Entry) -> Safe:
    key = path_part(entry_key(e))  # what the form sends back: action() reads it with form_text
    error = (
        render(
            '<td class="error"><b>{cls}</b> {msg}<br><small>retried {n}×</small></td>',
            cls=clip(e.error_class, 200),
            msg=_short(e.error_message),
            n=e.retry_count,
        )
        if kind.failures
        else Safe("")
    )
    return render(
        '<tr><td class="pick"><input type="checkbox" name="key" value="{key}" aria-label="select"></td>'
        '<td>{when}</td><td><a href="{href}">{name}</a><br><small class="mono">{jid}</small>'
        '<small class="tag">{queue}</small></td><td class="args mono">{args}</td>{error}'
        '<td class="actions"><button name="retry" value="{key}" class="small">{retry}</button>'
        '<button name="delete" value="{key}" class="danger small">Delete</button></td></tr>',
        key=key,
        when=timestamp(e.score, view.now),
        href=view.url(job_path(kind, e)),
        name=job_label(e.display_name, e.name),
        jid=clip(e.jid, 200),
        queue=e.queue,
        args=arguments(e.display_args, e.display_kwargs),
        error=error,
        retry="Enqueue" if kind.path == "/scheduled" else "Retry",
    )


def _short(text: object, limit: int = 200) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detail(view: View, kind: Kind, key: str) -> Safe | None:
    """One job: its fields, arguments, error and backtrace, with retry and delete buttons; None if gone."""
    e = find(kind, key)
    if e is None:
        return None
    facts: list[tuple[str, Any]] = [
        ("Job", e.display_name),
        *([("Run by", e.name)] if e.display_name != e.name else []),
        ("JID", e.jid),
        ("Queue", e.queue),
        (kind.when, timestamp(e.score, view.now)),
        ("Created", timestamp(e.item.get("created_at"), view.now)),
        ("Enqueued", timestamp(e.enqueued_at, view.now)),
    ]
    if kind.failures:
        facts += [
            ("Failed", timestamp(e.failed_at, view.now)),
            ("Retried", e.retry_count),
            ("Retries allowed", e.item.get("retries")),
        ]
    dl = join(render("<div><dt>{k}</dt><dd>{v}</dd></div>", k=k, v=v) for k, v in facts)
    parts = [
        render('<dl class="facts wide">{dl}</dl>', dl=dl),
        render('<h2>Arguments</h2><pre class="code">{args}</pre>', args=as_json(e.display_args, indent=2)),
    ]
    if e.display_kwargs:
        kwargs = as_json(e.display_kwargs, indent=2)
        parts.append(render('<h2>Keyword arguments</h2><pre class="code">{kw}</pre>', kw=kwargs))
    if e.error_class or e.error_message:
        cls, msg = clip(e.error_class, 200), clip(e.error_message)
        parts.append(render('<h2>Error</h2><p class="error"><b>{cls}</b>: {msg}</p>', cls=cls, msg=msg))
    if e.error_backtrace:
        parts.append(render('<pre class="code trace">{bt}</pre>', bt=clip(e.error_backtrace)))
    parts.append(
        render(
            '<details><summary>Payload as stored</summary><pre class="code">{raw}</pre></details>',
            raw=as_json(e.item, indent=2),
        )
    )
    buttons = render(
        '<div class="toolbar"><button name="retry" value="{key}">{retry}</button>'
        '<button name="delete" value="{key}" class="danger">Delete</button></div>',
        key=path_part(key),
        retry=kind.can_retry,
    )
    return join([view.form(kind.path, buttons)] + parts)


def action(req: Request, kind: Kind) -> dict[str, Any]:
    """POST to a set page: retry or delete one row, the selected rows, or all; the flash to show."""
    form = req.form
    if form.get("retry"):
        return _one(kind, form_text(form["retry"]), retry=True)
    if form.get("delete"):
        return _one(kind, form_text(form["delete"]), retry=False)
    bulk = form.get("bulk", "")
    s = kind.cls()
    if bulk == "retry-all":
        return {"flash": "retried", "n": s.retry_all()}
    if bulk == "delete-all":
        return {"flash": "deleted", "n": s.clear()}
    keys = req.form_lists.get("key", [])
    if bulk in ("retry-selected", "delete-selected") and keys:
        entries = [e for e in (find(kind, form_text(k)) for k in keys[:1000]) if e is not None]
        done = sum(1 for e in entries if (e.retry() if bulk == "retry-selected" else e.delete()))
        return {"flash": "retried" if bulk == "retry-selected" else "deleted", "n": done}
    return {"flash": "nothing"}


def _one(kind: Kind, key: str, retry: bool) -> dict[str, Any]:
    e = find(kind, key)
    if e is None or not (e.retry() if retry else e.delete()):
        return {"flash": "missing"}
    return {"flash": "retried" if retry else "deleted", "n": 1}
