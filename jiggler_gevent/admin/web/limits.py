"""The Limits page: every limiter used on the namespace, with its kind, size and how much is in use now."""

from .. import api
from .html import Safe, join, render
from .layout import View

PATH = "/limits"


def page(view: View) -> Safe:
    """One row per limiter: name, kind, in use / size, the window or interval of a rate limiter."""
    rows = list(api.Limits())
    if not rows:
        return Safe(
            '<p class="empty">No limiters: none has been used on this namespace yet. They come from '
            "<code>limits.concurrent / window / bucket</code> and <code>@job(concurrency=N)</code>.</p>"
        )
    body = join(
        render(
            '<tr data-limit="{name}"><td><b>{name}</b></td><td data-label="kind">{kind}</td>'
            '<td data-label="in use">{in_use} / {size}</td><td data-label="per">{per}</td></tr>',
            name=x.name,
            kind=x.kind,
            in_use=x.in_use,
            size=x.size,
            per=f"{x.per:g} s" if x.kind != "concurrent" else "",
        )
        for x in rows
    )
    return render(
        '<div class="table-wrap"><table class="rows"><thead><tr><th>Limiter</th><th>Kind</th><th>In use</th>'
        "<th>Per</th></tr></thead><tbody>{body}</tbody></table></div>",
        body=body,
    )
