"""The Cron page: the periodic entries the running workers published, with an "Enqueue now" action per entry."""

from typing import Any

from .. import api
from .html import Safe, arguments, join, render, timestamp
from .http import Request
from .layout import View

PATH = "/cron"


def page(view: View) -> Safe:
    """Every entry: name, schedule and time zone, job and queue, arguments, next fire time, last enqueue."""
    entries = list(api.PeriodicSet())
    if not entries:
        return Safe(
            '<p class="empty">No periodic entries: no running worker has published any. Entries come from '
            "<code>periodic(...)</code> calls in the modules a worker loads.</p>"
        )
    rows = join(_row(view, e) for e in entries)
    table = render(
        '<div class="table-wrap"><table class="rows"><thead><tr><th>Entry</th><th>Schedule</th><th>Job</th>'
        "<th>Arguments</th><th>Next</th><th>Last enqueued</th><th></th></tr></thead><tbody>{rows}</tbody>"
        "</table></div>",
        rows=rows,
    )
    summary = render(
        '<p class="summary"><b>{n}</b> entr{y}, each enqueued once per fire time by one of the workers.</p>',
        n=len(entries),
        y="y" if len(entries) == 1 else "ies",
    )
    hint = Safe(
        '<p class="hint">"Enqueue now" pushes the job at once, besides its schedule. Entries are as the workers '
        "published them at their last heartbeat; one that no running worker has any more leaves the list.</p>"
    )
    return join([summary, view.form(PATH, table), hint])


def _row(view: View, e: api.PeriodicEntry) -> Safe:
    return render(
        '<tr data-entry="{name}"><td><b>{name}</b></td><td data-label="schedule"><code>{cron}</code>'
        '<small class="tag">{tz}</small></td><td data-label="job">{job}<small class="tag">{queue}</small></td>'
        '<td class="args mono">{args}</td><td data-label="next">{next}</td><td data-label="last">{last}</td>'
        '<td class="actions"><button name="enqueue" value="{name}" class="small">Enqueue now</button></td></tr>',
        name=e.name,
        cron=e.cron,
        tz=e.tz,
        job=e.job,
        queue=e.queue,
        args=arguments(e.args, e.kwargs),
        next=timestamp(e.next_at, view.now),
        last=timestamp(e.last_at, view.now) if e.last_at is not None else "never",
    )


def action(req: Request) -> dict[str, Any]:
    """POST /cron: enqueue one entry's job now; the flash to show."""
    name = req.form.get("enqueue", "")
    entry = api.PeriodicSet().get(name) if name else None
    if entry is None:
        return {"flash": "gone" if name else "nothing"}
    entry.enqueue_now()
    return {"flash": "enqueued", "n": 1}
