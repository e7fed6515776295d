"""The dashboard end to end in headless Chromium (Debian's `chromium`, driven by Playwright; no downloaded browser).

`gjiggler web` and `gjiggler worker` run as subprocesses on the test namespace. Screenshots go to
test-artifacts/. Without Chromium the tests are skipped locally, and fail when CI=true.

Some tests also take the screenshots the documentation shows (docs/dashboard.md), with `docs_shot`: into docs/images/
when JIGGLER_DOCS_SCREENSHOTS=1 (`JIGGLER_DOCS_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_web_browser.py
tests/test_web_metrics.py`, then commit the PNGs), otherwise into the test's tmp dir, so that a normal run takes them
too but leaves the tree alone.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jiggler_gevent import Batch, api, config
from tests import jobs
from tests.conftest import ROOT, gjiggler_command, wait_for

CHROMIUM = os.environ.get("JIGGLER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"
DOCS_IMAGE_MAX_BYTES = 200_000  # each PNG committed for the documentation stays small
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"the browser tests need {reason} (apt-get install chromium; pip install playwright)", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def dashboard_url(ns) -> Iterator[str]:
    """`gjiggler web --port 0` on the test namespace; its base URL."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"web-{ns.namespace}.log", "wb")
    proc = subprocess.Popen(
        gjiggler_command(ns, "web", "--port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = proc.stdout.readline().decode()
        m = re.search(r"(http://\S+)/ ", line)
        assert m, f"gjiggler web did not print its URL: {line!r}"
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    yield pg
    context.close()


def shot(page, name: str, **kw) -> Path:
    path = ARTIFACTS / f"web-{name}.png"
    page.screenshot(path=str(path), full_page=True, **kw)
    assert path.stat().st_size > 1000
    return path


def docs_shot(page, name: str, tmp_path: Path) -> Path:
    """The documentation's screenshot `name`.png of the page as it is now (see the module's docstring)."""
    folder = DOCS_IMAGES if os.environ.get("JIGGLER_DOCS_SCREENSHOTS") == "1" else tmp_path
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    size = path.stat().st_size
    assert 1000 < size < DOCS_IMAGE_MAX_BYTES, f"{path.name} is {size} bytes"
    return path


def _key(label: str) -> str:
    return f"{config.current().namespace}:{label}"


def test_dashboard_numbers_and_chart_update_after_jobs_run(page, dashboard_url, start_worker, r, tmp_path):
    from playwright.sync_api import expect

    start_worker("-c", "4")
    wait_for(lambda: len(api.ProcessSet()) == 1, 40, "the worker's first heartbeat")
    page.goto(dashboard_url + "/?poll=1")
    processed = page.locator('.card [data-stat="processed"]')
    assert processed.inner_text() == "0"
    shot(page, "dashboard-before")
    key = _key("browser:count")
    for i in range(7):
        jobs.record.enqueue(key, i)
    wait_for(lambda: r.llen(key) == 7, 40, "the worker to run the jobs")
    # no reload: the number changes when the worker's next heartbeat flushes its counters
    expect(processed).to_have_text("7", timeout=60_000)
    assert page.locator('[data-stat="processes"]').inner_text() == "1"
    expect(page.locator("[data-live-chart] polyline")).to_have_count(2, timeout=30_000)
    assert page.locator('[data-redis="version"]').inner_text() == api.redis_info()["version"]
    shot(page, "dashboard-after")
    docs_shot(page, "dashboard", tmp_path)
    assert page.errors == []
    # the Busy page while a job runs (a process shows its running jobs from its next heartbeat on)
    jobs.nap.enqueue(_key("browser:nap"), 30)
    wait_for(lambda: api.Stats().busy == 1, 40, "the worker's heartbeat to show the running job")
    page.goto(dashboard_url + "/busy")
    assert "tests.jobs.nap" in page.locator("main").inner_text()
    docs_shot(page, "busy", tmp_path)
    assert page.errors == []


def test_retry_a_dead_job_by_clicking(page, dashboard_url, start_worker, r, tmp_path):
    start_worker("-q", "work", "-c", "2")
    key = _key("browser:dead")
    jid = jobs.fail_times.set(queue="work", retries=0).enqueue(key, 1)  # fails once, then succeeds
    wait_for(lambda: len(api.DeadSet()) == 1, 60, "the job to die")
    page.goto(dashboard_url + "/dead")
    row = page.locator("tr", has_text=jid)
    assert "planned failure 1 of 1" in row.inner_text()
    shot(page, "dead-before")
    docs_shot(page, "dead", tmp_path)
    row.locator('button[name="retry"]').click()
    page.wait_for_url(re.compile(r"/dead\?page=1&per=25&flash=retried&n=1$"))
    assert "1 job(s) sent back to their queue." in page.locator(".flash").inner_text()
    wait_for(lambda: r.llen(key) == 2, 60, "the retried job to run again")
    assert len(api.DeadSet()) == 0
    page.goto(dashboard_url + "/dead")
    assert "No dead jobs." in page.locator("main").inner_text()
    shot(page, "dead-after")
    assert page.errors == []


def test_clear_a_queue_by_clicking(page, dashboard_url, tmp_path):
    for i in range(5):
        jobs.record.set(queue="parked").enqueue(_key("browser:parked"), i)
    page.goto(dashboard_url + "/queues")
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    shot(page, "queues-before")
    docs_shot(page, "queues", tmp_path)
    page.locator("tr", has_text="parked").locator('button[value="clear"]').click()
    page.wait_for_url(re.compile(r"/queues\?flash=cleared&n=5$"))
    assert dialogs == ["Delete all 5 job(s) in queue parked?"]
    assert len(api.Queue("parked")) == 0 and "5 job(s) cleared." in page.locator(".flash").inner_text()
    shot(page, "queues-after")


def test_script_in_arguments_renders_as_text(page, dashboard_url, start_worker):
    payload = "<script>window.__pwned = true; alert('pwned')</script>"
    jobs.record.set(queue="parked").enqueue(_key("browser:xss"), payload)
    start_worker("-q", "work")
    jobs.always_fail.set(queue="work").enqueue(_key("browser:") + payload)
    wait_for(lambda: len(api.DeadSet()) == 1, 60, "the job to die")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in ("/queues/parked", "/dead"):
        page.goto(dashboard_url + path)
        assert payload in page.locator("td.args").first.inner_text()
        assert page.evaluate("window.__pwned") is None
    page.locator("td a").first.click()
    assert payload in page.locator("pre.code").first.inner_text()
    assert dialogs == [] and page.evaluate("window.__pwned") is None
    shot(page, "xss-detail")


def _fit_a_phone(
    browser, dashboard_url, pages, docs: dict[str, str] | None = None, tmp_path: Path | None = None
) -> None:
    """Each (path, screenshot name) on a 390 px phone screen: the page itself never scrolls sideways (wide
    tables scroll inside their own box). `docs` names the paths whose screenshot the documentation shows too."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    pg = context.new_page()
    try:
        for path, name in pages:
            pg.goto(dashboard_url + path)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
            shot(pg, name)
            if docs and path in docs and tmp_path is not None:
                docs_shot(pg, docs[path], tmp_path)
    finally:
        context.close()


def test_phone_sized_screens(browser, dashboard_url, start_worker, tmp_path):
    start_worker("-q", "work")
    jobs.always_fail.set(queue="work").enqueue(_key("browser:phone"))
    jobs.record.enqueue_in(600, _key("browser:phone"), "later")
    wait_for(lambda: len(api.DeadSet()) == 1, 60, "the job to die")
    _fit_a_phone(
        browser,
        dashboard_url,
        (("/", "phone-dashboard"), ("/dead", "phone-dead"), ("/busy", "phone-busy"), ("/cron", "phone-cron")),
        docs={"/": "phone-dashboard"},
        tmp_path=tmp_path,
    )


def test_cron_page_enqueue_now_by_clicking(page, dashboard_url, start_worker, r, tmp_path):
    key = _key("browser:cron")
    env = {"JIGGLER_TEST_CRON": "parked,hourly", "JIGGLER_TEST_CRON_KEY": key}
    start_worker("-r", "tests.cron_jobs", "-q", "reports", "--heartbeat-interval", "0.5", env=env)
    wait_for(lambda: len(api.PeriodicSet()) == 2, 40, "the worker's periodic table")
    page.goto(dashboard_url + "/cron")
    row = page.locator('tr[data-entry="hourly-report"]')
    assert "0 * * * *" in row.inner_text() and "Europe/Berlin" in row.inner_text() and "never" in row.inner_text()
    assert page.locator('tr[data-entry="every-second"]').count() == 1
    shot(page, "cron-before")
    docs_shot(page, "cron", tmp_path)
    row.locator('button[name="enqueue"]').click()
    page.wait_for_url(re.compile(r"/cron\?flash=enqueued&n=1$"))
    assert "1 periodic job(s) enqueued now." in page.locator(".flash").inner_text()
    wait_for(lambda: r.llen(key) == 1, 40, "the enqueued job to run")
    assert r.lrange(key, 0, -1) == ['["eu", true]']
    shot(page, "cron-after")
    assert page.errors == []


def test_batches_page_draws_progress_and_links_to_a_failed_job(browser, page, dashboard_url, tmp_path):
    batch = Batch(description="browser import")
    with batch:
        jids = [jobs.record.set(queue="parked").enqueue(_key("browser:batch"), i) for i in range(4)]
    assert api.Job(jids[0]).cancel()  # counts as the batch's one failure
    page.goto(dashboard_url + "/batches")
    row = page.locator(f'tr[data-batch="{batch.bid}"]')
    assert "browser import" in row.inner_text() and "in progress" in row.inner_text()
    track = row.locator('[role="progressbar"] svg').bounding_box()
    failed = row.locator('[role="progressbar"] rect.bad').bounding_box()
    assert track["width"] > 50 and abs(failed["width"] - track["width"] / 4) < 2  # 1 of 4 jobs, drawn in red
    shot(page, "batches")
    docs_shot(page, "batches", tmp_path)
    row.locator("a").click()
    page.locator("table[data-failed] a", has_text=jids[0]).click()
    assert page.locator("[data-status]").inner_text() == "cancelled"
    shot(page, "job-cancelled")
    docs_shot(page, "job-status", tmp_path)
    _fit_a_phone(browser, dashboard_url, (("/batches", "phone-batches"), (f"/jobs/{jids[1]}", "phone-job")))
    assert page.errors == []


def test_busy_page_shows_a_running_jobs_progress_and_refreshes_itself(page, dashboard_url, start_worker, r):
    from playwright.sync_api import expect

    from tests import iter_jobs

    start_worker("-r", "tests.iter_jobs", "--heartbeat-interval", "0.2")
    jid = iter_jobs.steps.enqueue(_key("browser:steps"), 400, 0.05)
    wait_for(lambda: api.Job(jid).info().get("progress"), 40, "the job's first progress")
    page.goto(dashboard_url + "/busy")
    row = page.locator("tr", has_text=jid)
    message = row.locator("[data-progress-message]")
    expect(message).to_contain_text("of 400", timeout=20_000)
    expect(row.locator("[data-iterations]")).to_contain_text("iterations")
    expect(row.locator('[role="progressbar"]')).to_have_count(1)
    first = message.inner_text()
    # no reload: the page refreshes its running jobs by itself
    expect(row.locator("[data-progress-message]")).not_to_have_text(first, timeout=30_000)
    shot(page, "busy-progress")
    assert page.errors == []
    assert api.Job(jid).cancel() is True
