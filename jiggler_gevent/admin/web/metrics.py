"""The Metrics pages: per-job runs, failures and run times over the last hour (or ?minutes=), and one job's
histogram and p50/p95 per minute. Charts are SVG drawn here (the Content-Security-Policy allows no inline script
or style), with a viewBox and the full width, so they shrink to a phone's screen."""

import time
from collections.abc import Sequence

from ... import config
from .. import api
from .html import Safe, join, number, path_part, render
from .layout import View

PATH = "/metrics"
CHOICES = (60, 240, 480)  # minutes offered as links; any 1..480 works as ?minutes=
WIDTH, HEIGHT, TOP = 600, 160, 150  # the charts' viewBox, and the height of their tallest bar


def job_path(name: str) -> str:
    """The app path of one job's metrics page (the name URL-quoted)."""
    return f"{PATH}/{path_part(name)}"


def seconds(value: float | None) -> str:
    """A run time to three digits: 12.5 ms, 1.25 s, 3.5 min, 2 h; a dash for none."""
    if value is None:
        return "–"
    for limit, scale, unit in ((0.9995, 1000, "ms"), (59.95, 1, "s"), (3597, 1 / 60, "min")):
        if value < limit:
            return f"{value * scale:.3g} {unit}"
    return f"{value / 3600:.3g} h"


def _minutes(view: View) -> int:
    return view.req.int_arg("minutes", 60, 1, config.JOB_METRICS_TTL // 60)


def _choices(view: View, path: str, minutes: int) -> Safe:
    return join(
        render(
            '<a href="{href}"{cur}>{label}</a>',
            href=f"{view.url(path)}?minutes={m}",
            label=f"{m // 60} h",
            cur=Safe(' aria-current="true"' if m == minutes else ""),
        )
        for m in CHOICES
    )


def _clock(ts: int) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ts))


def bars(series: Sequence[api.JobSummary], minutes: Sequence[int], label: str) -> Safe:
    """Runs (green, those that succeeded) and failures (red, stacked on top) per minute."""
    top = max([s.runs for s in series] + [1])
    width = WIDTH / len(series)
    rects = []
    for start, s in zip(minutes, series, strict=True):
        if not s.runs:
            continue
        x = (start - minutes[0]) / 60 * width
        ok_h, bad_h = TOP * (s.runs - s.failures) / top, TOP * s.failures / top
        tip = f"{_clock(start)}: {number(s.runs)} runs, {number(s.failures)} failed"
        for css, y, h in (("ok", HEIGHT - ok_h, ok_h), ("bad", HEIGHT - ok_h - bad_h, bad_h)):
            if h > 0:
                rects.append(_rect(css, x + width * 0.1, y, max(width * 0.8, 0.8), h, tip))
    return _chart(label, join(rects), minutes, "" if rects else "no runs in this period")


def histogram(summary: api.JobSummary) -> Safe:
    """Runs per run-time bucket, shortest on the left."""
    counts = summary.histogram
    top = max(counts + [1])
    width = WIDTH / len(counts)
    labels = [f"≤ {seconds(b)}" for b in config.JOB_TIME_BUCKETS] + [f"> {seconds(config.JOB_TIME_BUCKETS[-1])}"]
    rects = [
        _rect("ok", i * width + width * 0.1, HEIGHT - TOP * n / top, width * 0.8, TOP * n / top, f"{label}: {n} runs")
        for i, (n, label) in enumerate(zip(counts, labels, strict=True))
        if n
    ]
    return render(
        '<div class="chart" data-chart="histogram"><svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" '
        'aria-label="runs per run time">{rects}</svg>{empty}</div>'
        '<div class="axis"><span>{first}</span><span>{last}</span></div>',
        w=WIDTH,
        h=HEIGHT,
        rects=join(rects),
        empty=Safe("" if rects else '<p class="chart-note">no timed runs in this period</p>'),
        first=labels[0],
        last=labels[-1],
    )


def percentiles(series: Sequence[api.JobSummary], minutes: Sequence[int]) -> Safe:
    """p50 (green) and p95 (amber) run time per minute, as lines broken where a minute had no run."""
    top = max([s.p95 or 0.0 for s in series] + [0.001])
    width = WIDTH / len(series)
    lines = []
    for css, q in (("ok", 0.5), ("warn", 0.95)):
        points: list[str] = []
        for i, s in enumerate([*series, None]):
            value = s.percentile(q) if s is not None else None
            if value is not None:
                points.append(f"{(i + 0.5) * width:.1f},{HEIGHT - TOP * value / top:.1f}")
            elif points:
                if len(points) == 1:  # a lone minute: a short dash, so it shows
                    x, y = points[0].split(",")
                    points = [f"{float(x) - width * 0.4:.1f},{y}", f"{float(x) + width * 0.4:.1f},{y}"]
                lines.append(render('<polyline class="{css}" points="{p}"></polyline>', css=css, p=" ".join(points)))
                points = []
    return _chart("p50 and p95 run time per minute", join(lines), minutes, "" if lines else "no timed runs")


def _rect(css: str, x: float, y: float, w: float, h: float, tip: str) -> Safe:
    return render(
        '<rect class="{css}" x="{x}" y="{y}" width="{w}" height="{h}"><title>{tip}</title></rect>',
        css=css,
        x=f"{x:.1f}",
        y=f"{y:.1f}",
        w=f"{w:.1f}",
        h=f"{h:.1f}",
        tip=tip,
    )


def _chart(label: str, inner: Safe, minutes: Sequence[int], empty: str) -> Safe:
    return render(
        '<div class="chart"><svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" aria-label="{label}">'
        '{inner}</svg>{empty}</div><div class="axis"><span>{first}</span><span>{last}</span></div>',
        w=WIDTH,
        h=HEIGHT,
        label=label,
        inner=inner,
        empty=render('<p class="chart-note">{t}</p>', t=empty) if empty else "",
        first=_clock(minutes[0]),
        last=_clock(minutes[-1]),
    )


def _table(view: View, jobs: Sequence[api.JobSummary], minutes: int) -> Safe:
    rows = join(
        render(
            '<tr data-job="{name}"><td class="name"><a href="{href}"><b>{name}</b></a></td>'
            '<td class="num" data-label="runs">{runs}</td><td class="num" data-label="failures">{failures}</td>'
            '<td class="num" data-label="p50">{p50}</td><td class="num" data-label="p95">{p95}</td>'
            '<td class="num" data-label="average">{avg}</td><td class="num" data-label="total">{total}</td></tr>',
            name=j.name,
            href=f"{view.url(job_path(j.name))}?minutes={minutes}",
            runs=number(j.runs),
            failures=number(j.failures),
            p50=seconds(j.p50),
            p95=seconds(j.p95),
            avg=seconds(j.average),
            total=seconds(j.total),
        )
        for j in jobs
    )
    return render(
        '<div class="table-wrap"><table class="rows" data-metrics><thead><tr><th>Job</th><th class="num">Runs</th>'
        '<th class="num">Failures</th><th class="num">p50</th><th class="num">p95</th><th class="num">Average</th>'
        '<th class="num">Total time</th></tr></thead><tbody>{rows}</tbody></table></div>',
        rows=rows,
    )


def _panel(title: str, legend: Safe | str, chart: Safe, choices: Safe | str = "") -> Safe:
    return render(
        '<section class="panel"><header><h2>{title}</h2><span class="legend">{legend}</span>'
        '<nav class="choices">{choices}</nav></header>{chart}</section>',
        title=title,
        legend=legend,
        choices=choices,
        chart=chart,
    )


RUNS_LEGEND = Safe('<i class="ok"></i>succeeded <i class="bad"></i>failed <small>per minute</small>')


def overview(view: View) -> Safe:
    """Runs and failures per minute of every job, and a row per job with its counts and run times."""
    minutes = _minutes(view)
    m = api.Metrics(minutes, now=view.now)
    chart = _panel("Runs", RUNS_LEGEND, bars(m.series(), m.minutes, "runs per minute"), _choices(view, PATH, minutes))
    summary = render(
        '<p class="summary"><b>{n}</b> job(s) ran in the last {span}, most total time first.</p>',
        n=number(len(m)),
        span=f"{minutes} min",
    )
    body = (
        _table(view, m.jobs, minutes)
        if m.jobs
        else Safe(
            '<p class="empty">No job has run in this period, or its worker has not sent its next heartbeat yet.</p>'
        )
    )
    hint = render(
        '<p class="hint">Workers add their counts with each heartbeat, so the last minute fills in a few seconds late; '
        "runs are kept {hours} hours. Payloads naming no registered job count as <code>unknown</code>. p50 and p95 "
        "are estimated from the run-time histogram.</p>",
        hours=config.JOB_METRICS_TTL // 3600,
    )
    return join([chart, summary, body, hint])


def detail(view: View, name: str) -> Safe:
    """One job: its totals, its run-time histogram, and runs, failures, p50 and p95 per minute."""
    minutes = _minutes(view)
    m = api.Metrics(minutes, now=view.now)
    summary = m.job(name) or api.JobSummary(name)
    series = m.series(name)
    facts = [
        ("Job", render('<span class="mono">{n}</span>', n=name)),
        ("Runs", number(summary.runs)),
        ("Failures", number(summary.failures)),
        ("p50", seconds(summary.p50)),
        ("p95", seconds(summary.p95)),
        ("Average", seconds(summary.average)),
        ("Total time", seconds(summary.total)),
    ]
    dl = join(render("<div><dt>{k}</dt><dd>{v}</dd></div>", k=k, v=v) for k, v in facts)
    path = job_path(name)
    pct_legend = Safe('<i class="ok"></i>p50 <i class="warn"></i>p95 <small>per minute</small>')
    back = render('<p class="hint"><a href="{href}">‹ every job</a></p>', href=f"{view.url(PATH)}?minutes={minutes}")
    return join(
        [
            back,
            render('<dl class="facts">{dl}</dl>', dl=dl),
            _panel("Run time", f"runs per bucket, {minutes} min", histogram(summary), _choices(view, path, minutes)),
            _panel("Percentiles", pct_legend, percentiles(series, m.minutes)),
            _panel("Runs", RUNS_LEGEND, bars(series, m.minutes, "runs per minute")),
        ]
    )
