"""The Batches pages: recent batches with their counts and a progress bar; one batch with the jids that failed."""

from ... import config
from .. import api
from .html import Safe, clip, join, number, path_part, render, timestamp
from .jobs import job_path
from .layout import View

PATH = "/batches"
LISTED = 200  # characters of a description a listing shows (html.SHOWN on the batch's own page)
FAILED_SHOWN = 500  # failed jids listed on a batch's page; the rest are counted


def batch_path(bid: str) -> str:
    """The app path of one batch's page (the bid URL-quoted)."""
    return f"{PATH}/{path_part(bid)}"


def progress(b: api.BatchStatus, css: str = "") -> Safe:
    """A bar: the jobs that succeeded (green), then those that failed (red), out of the total. Drawn in SVG with
    attributes, as the Content-Security-Policy allows no inline style."""
    succeeded = b.total - b.pending
    ok, bad = (100 * succeeded / b.total, 100 * b.failures / b.total) if b.total else (100.0, 0.0)
    label = f"{succeeded} of {b.total} succeeded, {b.failures} failed, {b.pending - b.failures} not run yet"
    return render(
        '<div class="progress {css}" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
        'aria-valuenow="{done}" aria-valuetext="{label}"><svg viewBox="0 0 100 10" preserveAspectRatio="none" '
        'aria-hidden="true"><title>{label}</title><rect class="ok" x="0" y="0" width="{ok}" height="10"></rect>'
        '<rect class="bad" x="{ok}" y="0" width="{bad}" height="10"></rect></svg><small>{pct}%</small></div>',
        css=css,
        total=b.total,
        done=succeeded,
        label=label,
        ok=Safe(f"{ok:.2f}"),
        bad=Safe(f"{bad:.2f}"),
        pct=f"{ok:.0f}",
    )


def state(b: api.BatchStatus) -> Safe:
    """success (every job succeeded), complete (every job ran, some failed) or in progress."""
    if b.success:
        return Safe('<span class="tag ok">success</span>')
    if b.complete:
        return Safe('<span class="tag warn">complete</span>')
    return Safe('<span class="tag">in progress</span>')


def listing(view: View) -> Safe:
    """The batches, newest first, paged."""
    batches = api.Batches()
    req = view.req
    per = req.int_arg("per", 25, 1, 200)
    total = len(batches)
    page = req.int_arg("page", 1, 1, max(1, -(-total // per)))
    found = batches.page((page - 1) * per, per)
    if not found:
        return Safe(
            '<p class="empty">No batches: none has been created on this namespace, or all have expired. They come '
            "from <code>with Batch(...):</code> blocks.</p>"
        )
    rows = join(
        render(
            '<tr data-batch="{bid}"><td><a href="{href}"><b>{desc}</b></a><br><small class="mono">{bid}</small></td>'
            '<td data-label="created">{created}</td><td class="num" data-label="total">{total}</td>'
            '<td class="num" data-label="pending">{pending}</td><td class="num" data-label="failures">{failures}</td>'
            '<td data-label="state">{state}</td><td class="bar">{bar}</td></tr>',
            bid=b.bid,
            href=view.url(batch_path(b.bid)),
            desc=clip(b.description, LISTED) or "(no description)",
            created=timestamp(b.created_at, view.now),
            total=number(b.total),
            pending=number(b.pending),
            failures=number(b.failures),
            state=state(b),
            bar=progress(b),
        )
        for b in found
    )
    table = render(
        '<div class="table-wrap"><table class="rows"><thead><tr><th>Batch</th><th>Created</th>'
        '<th class="num">Total</th><th class="num">Pending</th><th class="num">Failures</th><th>State</th>'
        "<th>Progress</th></tr></thead><tbody>{rows}</tbody></table></div>",
        rows=rows,
    )
    summary = render('<p class="summary"><b>{n}</b> batch(es), newest first.</p>', n=number(total))
    hint = render(
        '<p class="hint">Pending counts the jobs that have not succeeded yet, failed ones included. A batch is '
        "complete when every job has run (succeeded or failed), a success when every job has succeeded; its data "
        "expires {days} days after its last change.</p>",
        days=config.BATCH_TTL // 86400,
    )
    return join([summary, table, view.pager(PATH, page, per, total, newest_first=True), hint])


def detail(view: View, bid: str) -> Safe | None:
    """One batch: its counts and times, the progress bar, and the jids that failed (each linking to its job page);
    None when the batch is unknown or expired."""
    try:
        b = api.BatchStatus(bid)
    except LookupError:
        return None
    facts = [
        ("Batch", render('<span class="mono">{bid}</span>', bid=b.bid)),
        ("Description", clip(b.description) or "(none)"),
        ("Created", timestamp(b.created_at, view.now)),
        ("State", state(b)),
        ("Total", number(b.total)),
        ("Succeeded", number(b.total - b.pending)),
        ("Pending", number(b.pending)),
        ("Failures", number(b.failures)),
        ("Complete", timestamp(b.complete_at, view.now) if b.complete_at is not None else "not yet"),
        ("Success", timestamp(b.success_at, view.now) if b.success_at is not None else "not yet"),
    ]
    dl = join(render("<div><dt>{k}</dt><dd>{v}</dd></div>", k=k, v=v) for k, v in facts)
    parts = [render('<dl class="facts wide">{dl}</dl>', dl=dl), progress(b, "wide"), Safe("<h2>Failed jobs</h2>")]
    if not b.failed_jids:
        parts.append(Safe('<p class="empty">No job of this batch has failed.</p>'))
    else:
        rows = join(
            render('<tr><td><a class="mono" href="{href}">{jid}</a></td></tr>', href=view.url(job_path(jid)), jid=jid)
            for jid in b.failed_jids[:FAILED_SHOWN]
        )
        more = len(b.failed_jids) - FAILED_SHOWN
        parts.append(
            render(
                '<div class="table-wrap"><table class="rows" data-failed><thead><tr><th>Job</th></tr></thead>'
                "<tbody>{rows}</tbody></table></div>{more}",
                rows=rows,
                more=render('<p class="hint">and {n} more.</p>', n=number(more)) if more > 0 else "",
            )
        )
    return join(parts)
