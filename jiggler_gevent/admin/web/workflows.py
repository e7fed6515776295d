"""The Workflows pages: recent workflows with their status; one workflow drawn as its graph of steps.

The graph is SVG drawn here (the Content-Security-Policy allows no inline script or style): a column per depth (the
longest run of steps before a step), a box per step coloured by its status and linking to its job page, and a line
from each step to each step that waits for it.
"""

from ... import config
from ...workflow import Step
from .. import api
from .html import Safe, as_json, clip, join, number, path_part, render, timestamp
from .jobs import STATUS_CSS, job_path
from .layout import View

PATH = "/workflows"
DRAWN = 300  # steps drawn on a workflow's page; the rest are counted
BOX_W, BOX_H, GAP_X, GAP_Y = 170, 38, 50, 14  # a step's box and the space between boxes, in SVG units
STATE_CSS = {"succeeded": "ok", "failed": "bad", "cancelled": "bad", "running": "busy"}


def workflow_path(wid: str) -> str:
    """The app path of one workflow's page (the id URL-quoted)."""
    return f"{PATH}/{path_part(wid)}"


def state(status: str) -> Safe:
    """The workflow's status as a tag."""
    return render('<span class="tag {css}" data-status>{s}</span>', css=STATE_CSS.get(status, ""), s=status)


def listing(view: View) -> Safe:
    """The workflows, newest first, paged."""
    workflows = api.Workflows()
    per = view.req.int_arg("per", 25, 1, 200)
    total = len(workflows)
    page = view.req.int_arg("page", 1, 1, max(1, -(-total // per)))
    found = [wf.summary() for wf in workflows.page((page - 1) * per, per)]
    if not found:
        return Safe(
            '<p class="empty">No workflows: none has been created on this namespace, or all have expired. They come '
            "from <code>chain(...)</code>, <code>group(...)</code> and <code>chord(...)</code>.</p>"
        )
    rows = join(
        render(
            '<tr data-workflow="{wid}"><td><a class="mono" href="{href}">{wid}</a></td>'
            '<td data-label="created">{created}</td><td class="num" data-label="steps">{done} / {total}</td>'
            '<td data-label="status">{state}</td></tr>',
            wid=row["id"],
            href=view.url(workflow_path(row["id"])),
            created=timestamp(row["created_at"], view.now),
            done=number(row["succeeded"]),
            total=number(row["total"]),
            state=state(row["status"]),
        )
        for row in found
    )
    table = render(
        '<div class="table-wrap"><table class="rows"><thead><tr><th>Workflow</th><th>Created</th>'
        '<th class="num">Steps succeeded</th><th>Status</th></tr></thead><tbody>{rows}</tbody></table></div>',
        rows=rows,
    )
    summary = render('<p class="summary"><b>{n}</b> workflow(s), newest first.</p>', n=number(total))
    hint = render(
        '<p class="hint">A workflow fails when one of its steps ends dead or cancelled: no step after it starts. '
        "Its data expires {days} days after its last change.</p>",
        days=config.BATCH_TTL // 86400,
    )
    return join([summary, table, view.pager(PATH, page, per, total, newest_first=True), hint])


def depths(steps: list[Step]) -> list[int]:
    """Each step's column: the longest run of steps before it (a step comes after every step it waits for)."""
    depth: list[int] = []
    for step in steps:
        depth.append(1 + max((depth[i] for i in step.after), default=-1))
    return depth


def graph(view: View, steps: list[Step]) -> Safe:
    """The steps as boxes in columns by depth, joined by lines to the steps after them; each box links to its job."""
    depth = depths(steps)
    rows: dict[int, int] = {}
    at: list[tuple[float, float]] = []
    for d in depth:
        at.append((d * (BOX_W + GAP_X), rows.get(d, 0) * (BOX_H + GAP_Y)))
        rows[d] = rows.get(d, 0) + 1
    width = (max(depth) + 1) * (BOX_W + GAP_X) - GAP_X
    height = max(rows.values()) * (BOX_H + GAP_Y) - GAP_Y
    lines = [
        render(
            '<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"></line>',
            x1=f"{at[i][0] + BOX_W:.0f}",
            y1=f"{at[i][1] + BOX_H / 2:.0f}",
            x2=f"{at[s.index][0]:.0f}",
            y2=f"{at[s.index][1] + BOX_H / 2:.0f}",
        )
        for s in steps
        for i in s.after
    ]
    boxes = [
        render(
            '<a href="{href}" data-step="{i}" data-status="{status}"><title>step {i}: {name} ({status})</title>'
            '<rect class="{css}" x="{x}" y="{y}" width="{w}" height="{h}" rx="4"></rect>'
            '<text x="{tx}" y="{ty1}">{short}</text><text class="sub" x="{tx}" y="{ty2}">{status}</text></a>',
            href=view.url(job_path(s.jid)),
            i=s.index,
            name=s.name,
            status=s.status,
            css=STATUS_CSS.get(s.status, "wait" if s.status == "waiting" else "none"),
            x=f"{at[s.index][0]:.0f}",
            y=f"{at[s.index][1]:.0f}",
            w=BOX_W,
            h=BOX_H,
            tx=f"{at[s.index][0] + 8:.0f}",
            ty1=f"{at[s.index][1] + 16:.0f}",
            ty2=f"{at[s.index][1] + 31:.0f}",
            short=clip(s.name.rsplit(".", 1)[-1], 22),
        )
        for s in steps
    ]
    return render(
        '<div class="workflow-graph"><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="the workflow\'s steps and their status">{lines}{boxes}</svg></div>',
        w=width,
        h=height,
        lines=join(lines),
        boxes=join(boxes),
    )


def detail(view: View, wid: str) -> Safe | None:
    """One workflow: status, times, result or error, and its steps drawn; None when unknown or expired."""
    try:
        info = api.Workflow(wid).info()
    except LookupError:
        return None
    facts = [
        ("Workflow", render('<span class="mono">{wid}</span>', wid=wid)),
        ("Status", state(info["status"])),
        ("Created", timestamp(info["created_at"], view.now)),
        ("Ended", timestamp(info["finished_at"], view.now) if info["finished_at"] else "not yet"),
        ("Steps succeeded", f"{number(info['succeeded'])} of {number(info['total'])}"),
    ]
    dl = join(render("<div><dt>{k}</dt><dd>{v}</dd></div>", k=k, v=v) for k, v in facts)
    steps = [Step(**s) for s in info["steps"]]
    parts = [render('<dl class="facts wide">{dl}</dl>', dl=dl), Safe("<h2>Steps</h2>"), graph(view, steps[:DRAWN])]
    if len(steps) > DRAWN:
        parts.append(
            render('<p class="hint">The first {n} steps are drawn, of {total}.</p>', n=DRAWN, total=len(steps))
        )
    if "result" in info:
        parts.append(render('<h2>Result</h2><pre class="code">{v}</pre>', v=as_json(info["result"], indent=2)))
    if "error" in info:
        error, jid = info["error"], info["failed_jid"]
        where = Safe(" (the workflow was cancelled)")
        if jid:
            where = render(' (step <a class="mono" href="{href}">{jid}</a>)', href=view.url(job_path(jid)), jid=jid)
        parts.append(
            render(
                '<h2>Error</h2><p class="error"><b>{cls}</b>: {msg}{where}</p>',
                cls=clip(error.get("error_class"), 200),
                msg=clip(error.get("error_message")),
                where=where,
            )
        )
    return join(parts)
