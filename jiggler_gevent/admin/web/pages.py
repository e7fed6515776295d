"""The dashboard, busy and queue pages, and the JSON the live chart polls."""

import time
from typing import Any, cast

from .. import api
from .html import (
    Safe,
    arguments,
    as_json,
    clip,
    duration,
    form_text,
    human_bytes,
    job_label,
    join,
    number,
    path_part,
    render,
    timestamp,
)
from .http import Request, Response
from .layout import View

CARDS = [  # (Stats attribute, label, css class, link)
    ("processed", "Processed", "ok", None),
    ("failed", "Failed", "bad", None),
    ("busy", "Busy", "busy", "/busy"),
    ("enqueued", "Enqueued", "", "/queues"),
    ("scheduled_size", "Scheduled", "sched", "/scheduled"),
    ("retry_size", "Retries", "warn", "/retries"),
    ("dead_size", "Dead", "bad", "/dead"),
]
POLL_CHOICES = (2, 5, 10, 30)
BUSY_REFRESH = 5  # seconds between the Busy page's refreshes of itself (the heartbeats' pace)


def queue_path(name: str) -> str:
    """The app path of one queue's page (the name URL-quoted)."""
    return "/queues/" + path_part(name)


def live_numbers() -> dict[str, Any]:
    """What the dashboard polls: counters, sizes and Redis figures."""
    s = api.Stats()
    data: dict[str, Any] = {attr: getattr(s, attr) for attr, *_ in CARDS}
    data.update(processes=s.processes, time=time.time(), redis=api.redis_info())
    return data


def stats_json(req: Request) -> Response:
    return Response(as_json(live_numbers()), content_type="application/json", headers=[("Cache-Control", "no-store")])


def dashboard(view: View) -> Safe:
    s, req = view.stats, view.req
    poll = req.int_arg("poll", 5, 1, 300)
    days = req.int_arg("days", 30, 7, 180)
    cards = join(
        render(
            '<a class="card {css}" href="{href}"><span>{label}</span><b data-stat="{attr}">{n}</b></a>',
            css=css,
            href=view.url(link) if link else "#live",
            label=label,
            attr=attr,
            n=number(getattr(s, attr)),
        )
        for attr, label, css, link in CARDS
    )
    info = api.redis_info()
    redis_box = render(
        '<dl class="facts"><div><dt>{server}</dt><dd data-redis="version">{v}</dd></div>'
        '<div><dt>Memory</dt><dd data-redis="used_memory">{m}</dd></div>'
        '<div><dt>Peak</dt><dd data-redis="peak_memory">{p}</dd></div>'
        '<div><dt>Clients</dt><dd data-redis="clients">{c}</dd></div>'
        '<div><dt>Uptime</dt><dd>{u} d</dd></div><div><dt>Processes</dt><dd data-stat="processes">{n}</dd></div>'
        "</dl>",
        server=info["server"],
        v=info["version"],
        m=info["used_memory"],
        p=info["peak_memory"],
        c=info["clients"],
        u=info["uptime_days"],
        n=number(s.processes),
    )
    options = join(
        render('<option value="{v}"{sel}>every {v} s</option>', v=v, sel=Safe(" selected" if v == poll else ""))
        for v in sorted(set(POLL_CHOICES) | {poll})
    )
    live = render(
        '<section class="panel" id="live"><header><h2>Live</h2><span class="legend"><i class="ok"></i>processed '
        '<i class="bad"></i>failed <small>per poll</small></span>'
        '<label class="poll">refresh <select data-poll-select>{options}<option value="0">paused</option>'
        "</select></label></header>"
        '<div class="chart" data-live-chart data-poll="{poll}" data-src="{src}">'
        '<svg viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="jobs per poll"></svg>'
        '<p class="chart-note" data-chart-note>waiting for the first samples…</p></div></section>',
        options=options,
        poll=poll,
        src=view.url("/stats.json"),
    )
    return join([render('<div class="cards">{c}</div>', c=cards), live, history(view, days), redis_box])


def history(view: View, days: int) -> Safe:
    """Processed and failed per day as server-drawn SVG bars (no script needed)."""
    h = view.stats.history(days)
    top = max(h["processed"] + [1])
    width = 600 / days
    bars = []
    for i, (day, ok, bad) in enumerate(zip(h["dates"], h["processed"], h["failed"], strict=False)):
        x = i * width
        for value, css in ((ok, "ok"), (bad, "bad")):
            height = 150 * value / top
            bars.append(
                render(
                    '<rect class="{css}" x="{x}" y="{y}" width="{w}" height="{h}">'
                    "<title>{day}: {ok} processed, {bad} failed</title></rect>",
                    css=css,
                    x=Safe(f"{x + 1:.1f}"),
                    y=Safe(f"{155 - height:.1f}"),
                    w=Safe(f"{max(width - 2, 1):.1f}"),
                    h=Safe(f"{height:.1f}"),
                    day=day,
                    ok=number(ok),
                    bad=number(bad),
                )
            )
    choices = join(
        render(
            '<a href="{href}"{cur}>{d} d</a>',
            href=view.url(f"/?days={d}"),
            d=d,
            cur=Safe(' aria-current="true"' if d == days else ""),
        )
        for d in (7, 30, 90)
    )
    return render(
        '<section class="panel"><header><h2>History</h2><span class="legend">{total} processed, '
        '{failed} failed in {days} days</span><nav class="choices">{choices}</nav></header>'
        '<div class="chart"><svg viewBox="0 0 600 160" preserveAspectRatio="none" role="img" '
        'aria-label="jobs per day">{bars}</svg>{empty}</div>'
        '<div class="axis"><span>{first}</span><span>{last}</span></div></section>',
        total=number(sum(h["processed"])),
        failed=number(sum(h["failed"])),
        days=days,
        choices=choices,
        bars=join(bars),
        first=h["dates"][0],
        last=h["dates"][-1],
        empty=Safe("" if sum(h["processed"]) else '<p class="chart-note">no jobs in this period</p>'),
    )


def busy(view: View) -> Safe:
    processes = view.stats.process_list
    if not processes:
        return Safe('<p class="empty">No worker process is running.</p>')
    rows, jobs = [], []
    for p in processes:
        info = p.info
        quiet = Safe('<span class="tag warn">quiet</span>') if info.get("quiet") else Safe("")
        rows.append(
            render(
                '<tr><td><b>{host}</b> {quiet}<br><small class="mono">{identity}</small></td>'
                '<td class="num" data-label="pid">{pid}</td><td data-label="queues">{queues}</td>'
                '<td class="num" data-label="busy">{busy} / {conc}</td><td class="num" data-label="rss">{rss}</td>'
                '<td data-label="started">{started}</td><td data-label="heartbeat">{beat}</td></tr>',
                host=info.get("hostname"),
                quiet=quiet,
                identity=p.identity,
                pid=info.get("pid"),
                queues=", ".join(str(q) for q in _listed(info.get("queues"))),
                busy=info.get("busy", 0),
                conc=info.get("concurrency"),
                rss=human_bytes(info.get("rss")),
                started=timestamp(info.get("started_at"), view.now),
                beat=timestamp(info.get("beat"), view.now),
            )
        )
        for work in p.jobs:
            jobs.append(_running_row(view, p, work))
    table = render(
        '<div class="table-wrap"><table class="rows"><thead><tr><th>Process</th><th class="num">PID</th>'
        '<th>Queues</th><th class="num">Busy</th><th class="num">RSS</th><th>Started</th>'
        "<th>Heartbeat</th></tr></thead><tbody>{rows}</tbody></table></div>",
        rows=join(rows),
    )
    running = (
        render(
            '<div class="table-wrap"><table class="rows"><thead><tr><th>Process</th><th>Job</th>'
            '<th>Queue</th><th>Arguments</th><th>Progress</th><th class="num">Running for</th></tr></thead>'
            "<tbody>{rows}</tbody></table></div>",
            rows=join(jobs),
        )
        if jobs
        else Safe('<p class="empty">No job is running.</p>')
    )
    return render(
        '<div data-live-refresh="{every}">{table}<h2>Running jobs</h2>{running}'
        '<p class="hint">As of each process’s last heartbeat (every few seconds); the page refreshes itself.</p>'
        "</div>",
        every=BUSY_REFRESH,
        table=table,
        running=running,
    )


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _running_row(view: View, p: api.Process, work: dict[str, Any]) -> Safe:
    payload = cast("dict[str, Any]", work.get("payload") if isinstance(work.get("payload"), dict) else {})
    run_at = work.get("run_at")
    age = duration(view.now - run_at) if isinstance(run_at, (int, float)) else "–"
    return render(
        '<tr><td class="mono">{host}:{pid}</td><td>{name}<br><small class="mono">{jid}</small></td>'
        '<td data-label="queue">{queue}</td><td class="args mono">{args}</td>'
        '<td data-label="progress">{progress}</td><td class="num" data-label="running for">{age}</td></tr>',
        host=p.info.get("hostname"),
        pid=p.info.get("pid"),
        name=job_label(work.get("display_name"), payload.get("name")),
        jid=payload.get("jid"),
        queue=work.get("queue") or payload.get("queue"),
        args=arguments(work.get("display_args", []), work.get("display_kwargs")),
        progress=_job_progress(work),
        age=age,
    )


def _job_progress(work: dict[str, Any]) -> Safe:
    """What a running job reported (jiggler_gevent.progress, an iterable job's checkpoints): a bar with its
    percentage, the message, the iterations; a dash when it reported nothing."""
    fraction, message, iterations = work.get("progress"), work.get("message"), work.get("iterations")
    parts = []
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        pct = min(max(100 * fraction, 0.0), 100.0)
        parts.append(
            render(
                '<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{n}">'
                '<svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true"><rect class="ok" x="0" '
                'y="0" width="{w}" height="10"></rect></svg><small data-progress>{n}%</small></div>',
                n=f"{pct:.0f}",
                w=Safe(f"{pct:.2f}"),
            )
        )
    if isinstance(message, str) and message:
        parts.append(render("<small data-progress-message>{m}</small>", m=message))
    if isinstance(iterations, int) and not isinstance(iterations, bool):
        parts.append(render("<small data-iterations>{n} iterations</small>", n=number(iterations)))
    return join(parts, "<br>") if parts else Safe("–")


def queues(view: View) -> Safe:
    qs = api.Queue.all()
    if not qs:
        return Safe('<p class="empty">No queue yet: nothing has been enqueued in this namespace.</p>')
    rows = []
    for q in qs:
        size = len(q)
        clear = view.form(
            queue_path(q.name),
            Safe('<button name="bulk" value="clear" class="danger small">Clear</button>'),
            confirm=f"Delete all {size} job(s) in queue {q.name}?",
            css="inline",
        )
        rows.append(
            render(
                '<tr><td><a href="{href}"><b>{name}</b></a>{paused}</td><td class="num">{size}</td>'
                '<td class="num">{latency}</td><td class="actions">{clear}</td></tr>',
                href=view.url(queue_path(q.name)),
                name=q.name,
                paused=_PAUSED_TAG if q.paused else "",
                size=number(size),
                latency=_latency(q.latency) if size else "–",
                clear=clear,
            )
        )
    return render(
        '<div class="table-wrap"><table><thead><tr><th>Queue</th><th class="num">Size</th>'
        '<th class="num">Latency</th><th></th>'
        "</tr></thead><tbody>{rows}</tbody></table></div>",
        rows=join(rows),
    )


_PAUSED_TAG = Safe(' <small class="tag" data-paused>paused</small>')


def _pause_form(view: View, q: api.Queue) -> Safe:
    """The Pause button of a running queue, or the Resume button of a paused one."""
    button = (
        '<button name="bulk" value="resume">Resume</button>'
        if q.paused
        else '<button name="bulk" value="pause">Pause</button>'
    )
    return view.form(queue_path(q.name), Safe(button), css="toolbar")


def _latency(seconds: float) -> str:
    return "under 1 s" if seconds < 1 else duration(seconds)


def queue(view: View, name: str) -> Safe:
    q = api.Queue(name)
    req = view.req
    per = req.int_arg("per", 25, 1, 200)
    total = len(q)
    page = req.int_arg("page", 1, 1, max(1, -(-total // per)))
    offset = (page - 1) * per
    rows = [
        render(
            '<tr><td class="num">{pos}</td><td>{name}{prio}<br><small class="mono">{jid}</small></td>'
            '<td class="args mono">{args}</td><td>{enq}</td><td class="actions">'
            '<button name="delete" value="{key}" class="danger small">Delete</button></td></tr>',
            pos=number(offset + i + 1),
            name=job_label(e.display_name, e.name),
            prio=render(" <small data-priority>priority {p}</small>", p=str(e.priority)) if e.priority else "",
            jid=clip(e.jid, 200),
            args=arguments(e.display_args, e.display_kwargs),
            enq=timestamp(e.enqueued_at, view.now),
            key=path_part(f"{e.jid}@{offset + i}"),  # read back with form_text
        )
        for i, e in enumerate(q.page(offset, per))
    ]
    summary = render(
        '<p class="summary"><b>{n}</b> job(s) waiting, the oldest for {lat}.{paused}</p>',
        n=number(total),
        lat=_latency(q.latency) if total else "–",
        paused=Safe(" <b data-paused>Paused</b>: no worker starts a job from it.") if q.paused else "",
    )
    clear = view.form(
        queue_path(name),
        Safe('<button name="bulk" value="clear" class="danger">Clear queue</button>'),
        confirm=f"Delete all {total} job(s) in queue {name}?",
        css="toolbar",
    )
    pause = _pause_form(view, q)
    groups = _groups(q)
    if not rows:
        return join([summary, pause, Safe('<p class="empty">This queue is empty.</p>')])
    table = view.form(
        f"{queue_path(name)}?page={page}&per={per}",
        render(
            '<div class="table-wrap"><table class="rows"><thead><tr><th>#</th><th>Job</th><th>Arguments</th>'
            "<th>Enqueued</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>",
            rows=join(rows),
        ),
    )
    return join([summary, pause, groups, clear, table, view.pager(queue_path(name), page, per, total)])


GROUPS_SHOWN = 100  # groups listed on a queue's page, in the order of their turns


def _groups(q: api.Queue) -> Safe:
    """The queue's groups with jobs waiting and their sizes (none when it has no group)."""
    sizes = q.groups()
    if not sizes:
        return Safe("")
    rows = [
        render('<tr><td class="mono">{g}</td><td class="num">{n}</td></tr>', g=clip(group, 200), n=number(size))
        for group, size in list(sizes.items())[:GROUPS_SHOWN]
    ]
    more = f" (the first {GROUPS_SHOWN} in turn)" if len(sizes) > GROUPS_SHOWN else ""
    return render(
        '<h3 data-groups>{n} group(s), started in turn{more}</h3><div class="table-wrap"><table class="rows">'
        "<thead><tr><th>Group</th><th>Waiting</th></tr></thead><tbody>{rows}</tbody></table></div>",
        n=number(len(sizes)),
        more=more,
        rows=join(rows),
    )


def queue_action(req: Request, name: str) -> tuple[dict[str, Any], str] | None:
    """POST /queues/NAME: delete one job (by jid near its position), clear, pause or resume the queue.

    Returns the flash to show and the page to go back to, or None for a form it does not understand.
    """
    q = api.Queue(name)
    bulk = req.form.get("bulk")
    if bulk == "clear":
        return {"flash": "cleared", "n": q.clear()}, "/queues"
    if bulk == "pause":
        q.pause()
        return {"flash": "paused"}, queue_path(name)
    if bulk == "resume":
        q.resume()
        return {"flash": "resumed"}, queue_path(name)
    jid, _, pos = form_text(req.form.get("delete", "")).rpartition("@")
    if not jid or not pos.isdigit():
        return None
    entry = api.queue_entry_near(q, int(pos), jid)
    if entry is None or not entry.delete():
        return {"flash": "missing"}, queue_path(name)
    return {"flash": "deleted", "n": 1}, queue_path(name)
