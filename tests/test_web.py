"""The web dashboard at the WSGI level: every page and action, against a real Redis with real jobs.

Failed jobs reach the retry and dead sets by running in a real worker; the rest is pushed with the API.
"""

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import pytest

from jiggler_gevent import api, config
from jiggler_gevent.web import create_app
from tests import jobs
from tests.conftest import ROOT, gjiggler_command, wait_for

XSS = "<script>alert('pwned')</script>"


class Page:
    """One response: status code, headers and text."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.code = int(status.split()[0])
        self.headers = headers
        self.text = body.decode("utf-8")

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, "the page has no form with a CSRF field"
        return m.group(1)


class Browser:
    """Calls the WSGI app directly, keeping cookies like a browser."""

    def __init__(self, app: Any, root: str = "") -> None:
        self.app, self.root = app, root
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: Any | None = None) -> Page:
        path, _, query = path.partition("?")
        body = urlencode(form or {}, doseq=True).encode()
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": self.root,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "test",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
        }
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured.update(status=status, headers=headers)

        out = b"".join(self.app(environ, start_response))
        page = Page(captured["status"], captured["headers"], out)
        for name, value in page.headers:
            if name.lower() == "set-cookie":
                jar: SimpleCookie = SimpleCookie()
                jar.load(value)
                self.cookies.update({k: m.value for k, m in jar.items()})
        return page

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, Any]) -> Page:
        """POST with the CSRF token the forms carry (the cookie's value; a GET first if there is none)."""
        if "jiggler_csrf" not in self.cookies:
            self.get("/")
        return self.request("POST", path, dict(form, csrf=self.cookies["jiggler_csrf"]))


@pytest.fixture
def web(ns) -> Browser:
    return Browser(create_app())


def _sets_filled(start_worker, label: str) -> dict[str, Any]:
    """A worker turns real failures into dead and retry entries; then jobs are queued and scheduled."""
    key = f"{config.current().namespace}:{label}"  # under the test namespace, so it is deleted after
    w = start_worker("-q", "work", "-c", "4")
    dead_jid = jobs.always_fail.set(queue="work").enqueue(key + ":dead")
    xss_jid = jobs.always_fail.set(queue="work").enqueue(key + XSS)
    retry_jid = jobs.fail_times.set(queue="work").enqueue(key + ":retry", 5)
    wait_for(lambda: len(api.DeadSet()) == 2 and len(api.RetrySet()) == 1, 60, "dead and retry entries")
    assert w.stop() == 0
    sched_jid = jobs.record.enqueue_in(3600, key + ":sched", "later")
    queued = [jobs.record.set(queue="parked").enqueue(key + ":q", f"v{i}") for i in range(3)]
    jobs.record.set(queue="parked").enqueue(key + ":q", XSS)
    return {"dead": dead_jid, "xss": xss_jid, "retry": retry_jid, "sched": sched_jid, "queued": queued}


def test_every_page_renders_the_jobs_in_every_set(web, start_worker, r):
    jids = _sets_filled(start_worker, "web:pages")
    home = web.get("/")
    assert home.code == 200 and "text/html" in home.header("Content-Type")
    assert re.search(r'data-stat="dead_size">2<', home.text) and re.search(r'data-stat="retry_size">1<', home.text)
    assert re.search(r'data-stat="scheduled_size">1<', home.text) and re.search(r'data-stat="enqueued">4<', home.text)
    assert re.search(r'data-stat="processed">3<', home.text) and re.search(r'data-stat="failed">3<', home.text)
    assert "data-live-chart" in home.text and "jobs per day" in home.text
    server = r.info("server")  # Valkey also reports a redis_version (7.2.4): its own name and version are shown
    shown = ("Valkey", server["valkey_version"]) if "valkey_version" in server else ("Redis", server["redis_version"])
    assert '<dt>{}</dt><dd data-redis="version">{}</dd>'.format(*shown) in home.text
    assert "default-src 'none'" in home.header("Content-Security-Policy")

    dead = web.get("/dead")
    assert dead.code == 200 and jids["dead"] in dead.text and jids["xss"] in dead.text
    assert "RuntimeError" in dead.text and "this job always fails" in dead.text
    retries = web.get("/retries")
    assert jids["retry"] in retries.text and "ValueError" in retries.text and "planned failure 1 of 5" in retries.text
    scheduled = web.get("/scheduled")
    assert jids["sched"] in scheduled.text and "tests.jobs.record" in scheduled.text

    queues = web.get("/queues")
    assert re.search(r">parked</b></a></td><td class=\"num\">4<", queues.text)
    parked = web.get("/queues/parked")
    assert all(j in parked.text for j in jids["queued"]) and "4</b> job(s) waiting" in parked.text
    assert web.get("/busy").code == 200
    assert web.get("/nope").code == 404


def test_job_detail_shows_arguments_and_backtrace(web, start_worker):
    jids = _sets_filled(start_worker, "web:detail")
    listing = web.get("/retries").text
    href = re.search(r'href="(/retries/[^"]+)"', listing).group(1)
    detail = web.get(href.replace("%40", "@"))
    assert detail.code == 200 and jids["retry"] in detail.text
    assert "Traceback (most recent call last)" in detail.text and "planned failure 1 of 5" in detail.text
    assert ":web:detail:retry" in detail.text and "Retries allowed" in detail.text
    gone = web.get("/dead/" + "0" * 24 + "@1.5")
    assert gone.code == 404 and "no longer in the dead set" in gone.text


def test_retry_and_delete_one_job_by_post(web, start_worker):
    jids = _sets_filled(start_worker, "web:one")
    dead = api.DeadSet()
    entry = next(e for e in dead if e.jid == jids["dead"])
    resp = web.post("/dead", {"retry": f"{entry.jid}@{entry.score!r}"})
    assert resp.code == 303 and resp.header("Location") == "/dead?flash=retried&n=1"
    assert len(dead) == 1 and [e.jid for e in api.Queue("work")] == [jids["dead"]]
    assert "1 job(s) sent back to their queue." in web.get(resp.header("Location")).text

    retry = next(iter(api.RetrySet()))
    resp = web.post("/retries", {"delete": f"{retry.jid}@{retry.score!r}"})
    assert resp.code == 303 and len(api.RetrySet()) == 0
    again = web.post("/retries", {"delete": f"{retry.jid}@{retry.score!r}"})
    assert again.header("Location") == "/retries?flash=missing"

    sched = next(iter(api.ScheduledSet()))
    web.post(f"/scheduled/{sched.jid}@{sched.score!r}", {"retry": f"{sched.jid}@{sched.score!r}"})
    assert len(api.ScheduledSet()) == 0 and jids["sched"] in [e.jid for e in api.Queue("default")]


def test_selected_and_all_actions(web, start_worker):
    _sets_filled(start_worker, "web:bulk")
    dead = list(api.DeadSet())
    resp = web.post("/dead", {"bulk": "delete-selected", "key": [f"{e.jid}@{e.score!r}" for e in dead[:1]]})
    assert resp.header("Location") == "/dead?flash=deleted&n=1" and len(api.DeadSet()) == 1
    resp = web.post("/dead?page=1&per=25", {"bulk": "retry-all"})
    assert resp.header("Location") == "/dead?page=1&per=25&flash=retried&n=1"
    assert len(api.DeadSet()) == 0 and dead[1].jid in [e.jid for e in api.Queue("work")]
    assert web.post("/retries", {"bulk": "delete-all"}).header("Location") == "/retries?flash=deleted&n=1"
    assert len(api.RetrySet()) == 0
    assert web.post("/scheduled", {"bulk": "retry-selected"}).header("Location") == "/scheduled?flash=nothing"
    assert len(api.ScheduledSet()) == 1


def test_queue_delete_one_job_and_clear(web, ns):
    jids = [jobs.record.set(queue="q1").enqueue("web:q", i) for i in range(30)]
    page = web.get("/queues/q1?page=2&per=10").text
    assert jids[10] in page and jids[19] in page and jids[9] not in page and jids[20] not in page
    resp = web.post("/queues/q1?page=2&per=10", {"delete": f"{jids[12]}@12"})
    assert resp.header("Location") == "/queues/q1?page=2&per=10&flash=deleted&n=1"
    remaining = [e.jid for e in api.Queue("q1")]
    assert len(remaining) == 29 and jids[12] not in remaining
    # a stale position still finds the job when it moved within the window
    assert web.post("/queues/q1", {"delete": f"{jids[20]}@25"}).header("Location").endswith("flash=deleted&n=1")
    assert web.post("/queues/q1", {"delete": f"{jids[20]}@19"}).header("Location").endswith("flash=missing")
    resp = web.post("/queues/q1", {"bulk": "clear"})
    assert resp.header("Location") == "/queues?flash=cleared&n=28" and len(api.Queue("q1")) == 0
    assert "No queue yet" in web.get("/queues").text


def test_post_without_a_valid_csrf_token_is_refused(web, ns):
    jid = jobs.record.enqueue_in(3600, "web:csrf", 1)
    entry = next(iter(api.ScheduledSet()))
    form = {"delete": f"{jid}@{entry.score!r}"}
    assert web.request("POST", "/scheduled", form).code == 403  # no cookie, no field
    token = web.get("/scheduled").csrf()
    assert token == web.cookies["jiggler_csrf"]
    assert web.request("POST", "/scheduled", form).code == 403  # cookie but no field
    assert web.request("POST", "/scheduled", dict(form, csrf=token + "x")).code == 403
    other = create_app()  # another secret: its tokens are not ours
    forged = Browser(other)
    forged_token = forged.get("/scheduled").csrf()
    web_cookie = dict(web.cookies)
    web.cookies = dict(forged.cookies)
    assert web.request("POST", "/scheduled", dict(form, csrf=forged_token)).code == 403
    web.cookies = web_cookie
    assert len(api.ScheduledSet()) == 1
    assert web.request("POST", "/scheduled", dict(form, csrf=token)).code == 303
    assert len(api.ScheduledSet()) == 0
    fresh = Browser(create_app()).get("/")
    set_cookie = fresh.header("Set-Cookie")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie


def test_payload_values_are_escaped_never_markup(web, start_worker):
    _sets_filled(start_worker, "web:xss")
    jobs.record.set(queue="parked").enqueue("web:xss", {"html": "<img src=x onerror=alert(1)>"})
    for path in ("/dead", "/queues/parked"):
        text = web.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in text
    xss = next(e for e in api.DeadSet() if XSS in e.args[0])
    detail = web.get(f"/dead/{xss.jid}@{xss.score!r}").text
    assert "<script>alert" not in detail and "&lt;script&gt;" in detail
    # a name and an error message that are markup stay text too
    client_raw = '{"jid":"j<b>1</b>","name":"<i>evil</i>","args":[],"error_message":"</td><script>x</script>"}'
    api.DeadSet().redis.zadd(api.DeadSet().key, {client_raw: time.time()})
    text = web.get("/dead").text
    assert "<i>evil</i>" not in text and "&lt;i&gt;evil&lt;/i&gt;" in text and "</td><script>" not in text


def test_sorted_sets_page_in_windows(web, ns):
    now = time.time()
    jids = [jobs.record.enqueue_at(now + 1000 + i, "web:paging", i) for i in range(60)]
    page2 = web.get("/scheduled?page=2&per=25").text
    shown = [j for j in jids if j in page2]
    assert shown == jids[25:50]
    assert "page 2 of 3" in page2
    assert [j for j in jids if j in web.get("/scheduled?page=3&per=25").text] == jids[50:]
    assert [j for j in jids if j in web.get("/scheduled?page=99&per=25").text] == jids[50:]  # clamped
    assert [j for j in jids if j in web.get("/scheduled?page=x&per=0").text] == jids[:1]


def test_busy_page_lists_processes_and_running_jobs(web, start_worker, r):
    w = start_worker("-q", "work", "-c", "3")
    key = f"{config.current().namespace}:web:busy"
    jid = jobs.started_then_nap.set(queue="work").enqueue(key, 60)
    wait_for(lambda: r.llen(key + ":started"), 40, "the job to start")
    wait_for(lambda: any(p.jobs for p in api.ProcessSet()), 40, "the heartbeat to list the running job")
    page = web.get("/busy").text
    assert str(w.pid) in page and jid in page and "tests.jobs.started_then_nap" in page
    assert re.search(r'data-label="busy">1 / 3<', page) and "MiB" in page
    assert re.search(r'data-stat="busy">1<', page)


def test_stats_json_static_files_and_prefix_mount(ns, start_worker):
    jobs.record.enqueue_in(60, "web:json", 1)
    web = Browser(create_app(), root="/ops/jiggler")
    data = web.get("/stats.json")
    assert data.code == 200 and data.header("Content-Type") == "application/json"
    numbers = json.loads(data.text)
    assert numbers["scheduled_size"] == 1 and numbers["redis"]["version"]
    home = web.get("/")
    assert 'href="/ops/jiggler/busy"' in home.text and 'src="/ops/jiggler/static/app.js' in home.text
    assert "Path=/ops/jiggler;" in home.header("Set-Cookie")
    css = web.get("/static/style.css")
    assert css.code == 200 and css.header("Content-Type").startswith("text/css") and ".cards" in css.text
    assert web.get("/static/../app.py").code == 404 and web.get("/static/nothing.js").code == 404
    resp = web.post("/scheduled", {"bulk": "delete-all"})
    assert resp.header("Location") == "/ops/jiggler/scheduled?flash=deleted&n=1"


def test_redis_down_is_a_503_page(ns):
    config.configure(redis_url="redis://127.0.0.1:1/0")
    page = Browser(create_app()).get("/")
    assert page.code == 503 and "Redis did not answer" in page.text


def test_gjiggler_web_serves_over_http(ns):
    proc = subprocess.Popen(
        gjiggler_command(ns, "web", "--port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = proc.stdout.readline().decode()
        url = re.search(r"http://\S+/", line).group(0)
        assert ns.namespace in line
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url + "queues", timeout=10) as resp:
            assert resp.status == 200 and b"No queue yet" in resp.read()
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait(10)


DJANGO_SCRIPT = textwrap.dedent("""
    import sys
    import django
    from django.conf import settings
    settings.configure(
        DEBUG=False, SECRET_KEY="s" * 50, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.admin",
                        "django.contrib.sessions", "django.contrib.messages"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        JIGGLER_WEB_LOGIN_URL="/login/",
    )
    django.setup()
    from django.urls import include, path
    from django.contrib.auth.models import AnonymousUser, User
    from django.test import RequestFactory
    from jiggler_gevent import configure
    configure(redis_url=sys.argv[1], namespace=sys.argv[2])
    urlpatterns = [path("jiggler/", include("jiggler_gevent.contrib.django.urls"))]
    from django.urls import resolve
    rf = RequestFactory()
    def call(method, url, user, **kw):
        request = getattr(rf, method)(url, **kw)
        request.user = user
        match = resolve(request.path)
        return match.func(request, **match.kwargs)
    staff = User(username="s", is_staff=True, is_active=True)
    anon = call("get", "/jiggler/", AnonymousUser())
    print("anon", anon.status_code, anon["Location"])
    home = call("get", "/jiggler/", staff)
    print("home", home.status_code, b'href="/jiggler/dead"' in home.content)
    token = home.cookies.get("jiggler_csrf") or home["Set-Cookie"].split(";")[0].split("=", 1)[1]
    rf.cookies["jiggler_csrf"] = token
    dead = call("post", "/jiggler/scheduled", staff, data={"bulk": "delete-all", "csrf": token})
    print("post", dead.status_code, dead.get("Location"))
    bad = call("post", "/jiggler/dead", staff, data={"bulk": "delete-all", "csrf": "nope"})
    print("bad", bad.status_code)
""")


def test_django_view_mounts_the_app_for_staff_only(ns, tmp_path):
    pytest.importorskip("django")
    script = tmp_path / "django_mount.py"
    script.write_text(DJANGO_SCRIPT)
    jobs.record.enqueue_in(60, "web:django", 1)
    out = subprocess.run(
        [sys.executable, str(script), ns.url, ns.namespace],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("anon 302 /login/?next=/jiggler/")
    assert lines[1] == "home 200 True"
    assert lines[2] == "post 303 /jiggler/scheduled?flash=deleted&n=1"
    assert lines[3] == "bad 403"
    assert len(api.ScheduledSet()) == 0


def test_gjiggler_web_on_a_busy_port_is_one_line_and_exit_1(ns):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "jiggler_gevent",
                "web",
                "--port",
                str(port),
                "--redis-url",
                ns.url,
                "--namespace",
                ns.namespace,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    assert out.returncode == 1
    assert out.stderr.startswith(f"gjiggler: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in out.stderr


def _publish(r, ns, items: list[dict]) -> None:
    """Publish a periodic table as a live worker process would (its heartbeat names the table's signature)."""
    r.sadd(ns.keys.processes, "web-test:1:aa")
    r.hset(ns.keys.process("web-test:1:aa"), "info", json.dumps({"cron": "sig1", "started_at": time.time()}))
    r.set(ns.keys.cron_table("sig1"), json.dumps(items))


def test_cron_page_lists_entries_and_enqueue_now_posts(web, ns, r, start_worker):
    assert "No periodic entries" in web.get("/cron").text
    env = {"JIGGLER_TEST_CRON": "hourly", "JIGGLER_TEST_CRON_KEY": f"{ns.namespace}:web:cron"}
    start_worker("-r", "tests.cron_jobs", "--heartbeat-interval", "0.5", env=env)
    wait_for(lambda: len(api.PeriodicSet()) == 1, 30, "the worker's table")
    page = web.get("/cron")
    assert page.code == 200 and 'aria-current="page">Cron' in page.text
    assert "hourly-report" in page.text and "<code>0 * * * *</code>" in page.text and "Europe/Berlin" in page.text
    assert "tests.cron_jobs.report" in page.text and ">reports<" in page.text and "never" in page.text
    assert re.search(r'<button name="enqueue" value="hourly-report" class="small">Enqueue now</button>', page.text)
    assert web.request("POST", "/cron", {"enqueue": "hourly-report"}).code == 403  # no CSRF token
    assert len(api.Queue("reports")) == 0
    resp = web.post("/cron", {"enqueue": "hourly-report"})
    assert resp.code == 303 and resp.header("Location") == "/cron?flash=enqueued&n=1"
    [entry] = list(api.Queue("reports"))
    assert entry.name == "tests.cron_jobs.report" and entry.item["periodic"] == "hourly-report"
    assert "1 periodic job(s) enqueued now." in web.get(resp.header("Location")).text
    assert web.post("/cron", {"enqueue": "no-such-entry"}).header("Location") == "/cron?flash=gone"
    assert "no longer published" in web.get("/cron?flash=gone").text
    assert web.post("/cron", {}).header("Location") == "/cron?flash=nothing"


def test_cron_page_escapes_what_workers_published(web, ns, r):
    evil = "<script>alert('cron')</script>"
    item = {"name": evil, "cron": "@daily", "tz": "UTC", "job": "<b>x</b>", "queue": "q", "args": [evil], "kwargs": {}}
    _publish(r, ns, [item, dict(item, name="unreadable", cron="not a cron")])
    text = web.get("/cron").text
    assert "<script>alert" not in text and "<b>x</b>" not in text
    assert "&lt;script&gt;alert(&#x27;cron&#x27;)&lt;/script&gt;" in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "unreadable" in text  # an entry whose expression this release cannot read is still listed


def test_limits_page_lists_limiters_escaped(web, ns):
    from jiggler_gevent import limits

    assert "No limiters" in web.get("/limits").text
    token = limits.concurrent("stripe", 5).acquire()
    limits.bucket("sms", 10, per=1).acquire()
    page = web.get("/limits")
    assert page.code == 200 and 'aria-current="page">Limits' in page.text
    assert re.search(r'data-limit="stripe">.*concurrent.*1 / 5', page.text)
    assert re.search(r'data-limit="sms">.*bucket.*/ 10.*1 s', page.text)
    limits.concurrent("stripe", 5).release(token)
