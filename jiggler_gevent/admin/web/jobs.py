"""The job status page: find a job by its jid; its status, result or error and times; a Cancel button.

A job enqueued with `result_ttl` has its status, result or error and times stored; any other job is looked for
where it waits or runs (api.Job), which costs a scan, so this page reads one job, never a list.
"""

from typing import Any

from ... import config
from .. import api
from .html import Safe, as_json, clip, form_text, join, path_part, render, timestamp
from .http import Request, Response
from .layout import View

PATH = "/jobs"
NOT_ENDED = ("scheduled", "queued", "running", "retrying")  # what Cancel can still stop
STATUS_CSS = {
    "done": "ok",
    "dead": "bad",
    "cancelled": "bad",
    "retrying": "warn",
    "running": "busy",
    "scheduled": "sched",
}
WHERE = {  # status -> (page that lists the job, its label)
    "scheduled": ("/scheduled", "Scheduled"),
    "retrying": ("/retries", "Retries"),
    "dead": ("/dead", "Dead"),
    "running": ("/busy", "Busy"),
    "queued": ("/queues", "Queues"),
}


def job_path(jid: str) -> str:
    """The app path of one job's status page (the jid URL-quoted)."""
    return f"{PATH}/{path_part(jid)}"


def lookup_form(view: View, jid: str = "") -> Safe:
    """A GET form that asks for a jid."""
    return render(
        '<form method="get" action="{action}" class="lookup" role="search">'
        '<label for="jid">Job id</label><input id="jid" name="jid" value="{jid}" required autocomplete="off" '
        'spellcheck="false" placeholder="the jid enqueue returned"><button>Show</button></form>',
        action=view.url(PATH),
        jid=jid,
    )


def index(view: View) -> Response:
    """/jobs: the lookup form; /jobs?jid=X goes to that job's page."""
    jid = view.req.query.get("jid", "").strip()
    if jid:
        return Response.redirect(view.url(job_path(jid)))
    hint = Safe(
        '<p class="hint">Every job has a status while it waits or runs. A job enqueued with '
        "<code>result_ttl</code> also keeps its status, result or error for that many seconds after it ends. "
        "Batch pages link here for the jobs that failed.</p>"
    )
    return Response(view.page("Job status", join([lookup_form(view), hint])))


def detail(view: View, jid: str) -> Safe:
    """One job: status, times, result or error, where it is listed, and Cancel while it has not ended."""
    info = api.Job(jid).info()
    status = info["status"]
    ended = status in ("done", "dead", "cancelled")
    facts: list[tuple[str, Any]] = [
        ("JID", render('<span class="mono">{jid}</span>', jid=jid)),
        ("Status", render('<span class="tag {css}" data-status>{s}</span>', css=STATUS_CSS.get(status, ""), s=status)),
    ]
    if "started_at" in info:
        facts.append(("Started", timestamp(info["started_at"], view.now)))
    if "updated_at" in info:
        facts.append(("Ended" if ended else "Last change", timestamp(info["updated_at"], view.now)))
    if "workflow" in info:
        href = view.url(f"/workflows/{path_part(info['workflow'])}")
        facts.append(("Workflow", render('<a class="mono" href="{href}">{wid}</a>', href=href, wid=info["workflow"])))
    if status in WHERE:
        path, label = WHERE[status]
        facts.append(("Listed in", render('<a href="{href}">{label}</a>', href=view.url(path), label=label)))
    dl = join(render("<div><dt>{k}</dt><dd>{v}</dd></div>", k=k, v=v) for k, v in facts)
    parts = [lookup_form(view), render('<dl class="facts wide">{dl}</dl>', dl=dl)]
    if status in NOT_ENDED:
        button = render(
            '<div class="toolbar"><button name="cancel" value="{jid}" class="danger">Cancel job</button></div>',
            jid=path_part(jid),  # read back with form_text
        )
        parts.append(view.form(job_path(jid), button, confirm=f"Cancel job {jid}?", css="cancel"))
    if "result" in info:
        parts.append(render('<h2>Result</h2><pre class="code">{v}</pre>', v=as_json(info["result"], indent=2)))
        # as_json shows at most html.SHOWN characters: a result of megabytes does not make a page of megabytes
    if info.get("error_class") or info.get("error_message"):
        parts.append(
            render(
                '<h2>Error</h2><p class="error"><b>{cls}</b>: {msg}</p>',
                cls=clip(info.get("error_class"), 200),
                msg=clip(info.get("error_message")),
            )
        )
    parts.append(_note(status, tracked="updated_at" in info))
    return join(parts)


def _note(status: str, tracked: bool) -> Safe:
    if status == "unknown":
        return Safe(
            '<p class="empty">No job with this id waits, runs or is in the dead set, and no status is stored for '
            "it: it may never have existed, or it ended without <code>result_ttl</code> (or its "
            "<code>result_ttl</code> has passed).</p>"
        )
    if tracked:
        return Safe(
            '<p class="hint">Enqueued with <code>result_ttl</code>: its status is stored as it changes, and kept '
            "that many seconds after it ends.</p>"
        )
    return render(
        '<p class="hint">Not enqueued with <code>result_ttl</code>: its status is looked up where the job waits, '
        "runs or lies dead, and nothing of it is kept after it succeeds (a cancellation is remembered {days} "
        "days).</p>",
        days=config.CANCEL_KEEP // 86400,
    )


def action(req: Request, jid: str) -> tuple[dict[str, Any], str] | None:
    """POST /jobs/JID: cancel the job; the flash to show and the page to go back to (None: not understood)."""
    if form_text(req.form.get("cancel", "")) != jid:
        return None
    found = api.Job(jid).cancel()
    return ({"flash": "cancelled", "n": 1} if found else {"flash": "not-cancelled"}), job_path(jid)
