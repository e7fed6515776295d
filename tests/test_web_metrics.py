"""The Metrics pages: their data at the WSGI level (metrics written by a heartbeat in this process), and in
headless Chromium after a real worker (`-r tests.metric_jobs`) ran jobs: the charts are drawn, on a desktop and on
a 375 px phone screen without sideways scrolling."""

import re
import time

import pytest

from jiggler_gevent import api
from jiggler_gevent.server.job_metrics import Counters
from jiggler_gevent.web import create_app
from tests import metric_jobs
from tests.conftest import wait_for
from tests.test_job_metrics import beater
from tests.test_web import Browser
from tests.test_web_browser import browser, dashboard_url, docs_shot, page, shot  # noqa: F401 (fixtures)


@pytest.fixture
def web(ns) -> Browser:
    return Browser(create_app())


def write(ns, r, runs: list[tuple[str, float, bool]]) -> None:
    """Record (job, seconds, failed) runs as a worker does, and write them with one heartbeat."""
    counters = Counters(known=lambda name: name.startswith("app."))
    for name, seconds, failed in runs:
        counters.record(name, seconds, failed)
    assert beater(r, ns.keys, counters).beat()


def _row(text: str, name: str) -> str:
    m = re.search(rf'<tr data-job="{re.escape(name)}">.*?</tr>', text)
    assert m, f"no row for job {name}"
    return m.group(0)


def test_metrics_page_lists_jobs_and_draws_runs_per_minute(web, ns, r):
    empty = web.get("/metrics")
    assert empty.code == 200 and 'aria-current="page">Metrics' in empty.text and "No job has run" in empty.text
    write(ns, r, [("app.report", 0.3, False)] * 4 + [("app.mail", 0.02, False)] * 9 + [("app.mail", 0.02, True)])
    got = web.get("/metrics")
    assert got.code == 200 and "<b>2</b> job(s) ran in the last 60 min" in got.text
    report, mail = _row(got.text, "app.report"), _row(got.text, "app.mail")
    assert got.text.index('data-job="app.report"') < got.text.index('data-job="app.mail"')  # most total time first
    assert 'href="/metrics/app.report?minutes=60"' in report
    assert 'data-label="runs">4<' in report and 'data-label="failures">0<' in report
    # p50 and p95 are estimated inside a bucket, (250 ms, 500 ms] and (10 ms, 25 ms], but never past the slowest run.
    assert 'data-label="p50">300 ms<' in report and 'data-label="total">1.2 s<' in report
    assert 'data-label="runs">10<' in mail and 'data-label="failures">1<' in mail and 'data-label="p95">20' in mail
    # This minute's bar: 14 runs, the tallest (150 high), 13 green and 1 red on top, in a 600 x 160 viewBox.
    assert 'viewBox="0 0 600 160"' in got.text
    bars = re.findall(r'<rect class="(ok|bad)" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)">', got.text)
    assert [(c, float(h)) for c, _, h in bars] == [("ok", pytest.approx(150 * 13 / 14, abs=0.1)), ("bad", 10.7)]
    assert "14 runs, 1 failed" in got.text
    wide = web.get("/metrics?minutes=480")
    assert '<a href="/metrics?minutes=480" aria-current="true">8 h</a>' in wide.text and "last 480 min" in wide.text
    assert "last 60 min" in web.get("/metrics?minutes=lots").text


def test_job_metrics_page_draws_histogram_and_percentiles(web, ns, r):
    write(ns, r, [("app.report", 0.3, False)] * 3 + [("app.report", 7.0, True)])
    got = web.get("/metrics/app.report?minutes=30")
    assert got.code == 200 and 'aria-current="page">Metrics' in got.text
    assert "<dt>Runs</dt><dd>4</dd>" in got.text and "<dt>Failures</dt><dd>1</dd>" in got.text
    assert "<dt>Total time</dt><dd>7.9 s</dd>" in got.text
    hist = re.search(r'data-chart="histogram">(.*?)</svg>', got.text).group(1)
    # 600 wide / 18 buckets: the (0.25 s, 0.5 s] bucket is the 7th, (5 s, 10 s] the 11th.
    assert re.findall(r'x="([\d.]+)" y="[\d.]+" width="[\d.]+" height="([\d.]+)"><title>([^<]*)', hist) == [
        ("203.3", "150.0", "≤ 500 ms: 3 runs"),
        ("336.7", "50.0", "≤ 10 s: 1 runs"),
    ]
    assert got.text.count('<polyline class="ok"') == 1 and got.text.count('<polyline class="warn"') == 1
    assert 'href="/metrics?minutes=30">‹ every job' in got.text
    none = web.get("/metrics/app.never")
    assert none.code == 200 and "<dt>Runs</dt><dd>0</dd>" in none.text and "no timed runs" in none.text


def test_job_names_are_escaped_and_quoted(web, ns, r):
    name = '<img src=x onerror="alert(1)">/x'
    r.hset(ns.keys.metrics(int(time.time() // 60)), mapping={f"{name}|runs": 1, f"{name}|ms": 5, f"{name}|h5": 1})
    got = web.get("/metrics")
    assert "<img" not in got.text and "&lt;img src=x" in got.text
    assert 'href="/metrics/%3Cimg%20src%3Dx%20onerror%3D%22alert%281%29%22%3E%2Fx?minutes=60"' in got.text
    detail = web.get("/metrics/" + name)
    assert detail.code == 200 and "<img" not in detail.text and "<dt>Runs</dt><dd>1</dd>" in detail.text


def test_metrics_pages_in_a_browser_and_on_a_phone(browser, page, dashboard_url, start_worker, r, tkey, tmp_path):  # noqa: F811
    metric_jobs.quick.enqueue_bulk([(tkey("quick"),)] * 20)
    metric_jobs.broken.enqueue_bulk([(tkey("broken"),)] * 3)
    metric_jobs.sleepy.enqueue_bulk([(tkey("sleepy"), 0.3)] * 2)
    start_worker("-r", "tests.metric_jobs", "-c", "10", "--heartbeat-interval", "0.2")
    wait_for(lambda: sum(j.runs for j in api.Metrics(5)) == 25, 40, "25 runs in the metrics")
    page.goto(dashboard_url + "/metrics")
    row = page.locator('tr[data-job="tests.metric_jobs.quick"]')
    assert "20" in row.locator('[data-label="runs"]').inner_text()
    _assert_drawn(page, "section.panel svg rect.ok")
    _assert_drawn(page, "section.panel svg rect.bad")
    shot(page, "metrics")
    docs_shot(page, "metrics", tmp_path)
    page.locator('tr[data-job="tests.metric_jobs.sleepy"] a').click()
    page.wait_for_url(re.compile(r"/metrics/tests\.metric_jobs\.sleepy\?minutes=60$"))
    box = _assert_drawn(page, '[data-chart="histogram"] rect.ok')
    assert box["height"] > 100  # the one bucket holding every run is the tallest bar
    assert page.locator("svg polyline.ok").count() == 1
    shot(page, "metrics-job")
    docs_shot(page, "metrics-job", tmp_path)
    assert page.errors == []

    phone = browser.new_context(viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True)
    try:
        pg = phone.new_page()
        for path, name in (("/metrics", "phone-metrics"), ("/metrics/tests.metric_jobs.sleepy", "phone-metrics-job")):
            pg.goto(dashboard_url + path)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{path} is {width} px wide on a 375 px screen"
            svg = pg.locator("section.panel svg").first.bounding_box()
            assert 250 < svg["width"] <= 375 and svg["x"] >= 0 and svg["x"] + svg["width"] <= 375
            _assert_drawn(pg, "section.panel svg rect.ok")
            shot(pg, name)
    finally:
        phone.close()


def _assert_drawn(pg, selector: str) -> dict:
    """The first element matching `selector` has a size on screen and is what is painted at its centre."""
    el = pg.locator(selector).first
    el.scroll_into_view_if_needed()
    box = el.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, f"{selector} is not drawn: {box}"
    hit = pg.evaluate(
        "([x, y, sel]) => document.elementFromPoint(x, y) === document.querySelector(sel)",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, selector],
    )
    assert hit, f"{selector} is hidden under something else"
    return box
