"""The dashboard on damaged and hostile data (issue 25): payloads that are not UTF-8, timestamps that are NaN or
past year 9999, malformed limiter and metrics records, a non-ASCII CSRF field, megabyte descriptions and results.
No page of it is a 500; a page that still fails carries the security headers. Served by `gjiggler web` over HTTP
where the server's own handling of paths and errors matters, else through the WSGI app."""

import http.client
import json
import math
import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator

import pytest
import redis

from jiggler_gevent import Batch, api, config
from jiggler_gevent.admin.web.app import SECURITY_HEADERS
from jiggler_gevent.admin.web.html import SHOWN
from jiggler_gevent.web import create_app
from tests import result_jobs
from tests.conftest import ROOT, gjiggler_command, wait_for
from tests.test_web import Browser

NOT_UTF8 = [b"\xff\xfe{not json at all", b'{"jid": "\xffj1", "name": "tests.jobs.record", "args": [], "queue": "q"}']


class Server:
    """`gjiggler web` on a free port, spoken to with http.client (so paths and headers go over a real socket)."""

    def __init__(self, ns: config.Config) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = gjiggler_command(ns, "web", "--port", "0")
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        line = self.proc.stdout.readline().decode()
        host, port = re.search(r"http://([^:/]+):(\d+)/", line).groups()
        self.host, self.port = host, int(port)
        self.cookie = ""

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:  # bytes a jid kept by surrogateescape are sent as those bytes, as a browser would
            body = urllib.parse.urlencode(form, encoding="utf-8", errors="surrogateescape").encode()
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8")
        found = re.search(r"jiggler_csrf=([^;]+)", resp.getheader("Set-Cookie") or "")
        if found:
            self.cookie = f"jiggler_csrf={found.group(1)}"
        conn.close()
        return resp.status, dict(resp.getheaders()), text

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        finally:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(ns) -> Iterator[Server]:
    s = Server(ns)
    yield s
    s.close()


def _entry(**fields) -> str:
    p = {"jid": "j", "name": "tests.jobs.record", "args": ["a", "b"], "kwargs": {}, "queue": "default", "retries": 1}
    return json.dumps({**p, **fields})  # NaN and Infinity as Python's json writes them, and reads them back


def _secure(headers: dict[str, str]) -> bool:
    return all(headers.get(name) == value for name, value in SECURITY_HEADERS)


def test_the_dead_entry_a_worker_writes_for_a_payload_that_is_not_utf8_opens(ns, start_worker, server):
    raw = redis.Redis.from_url(ns.url)  # bytes, as a foreign producer pushes them
    raw.lpush(ns.keys.queue("default"), *NOT_UTF8)
    w = start_worker("-c", "2")
    wait_for(lambda: len(api.DeadSet()) == 2, 15, "both payloads in the dead set")
    assert w.stop() == 0
    code, _, listing = server.request("GET", "/dead")
    assert code == 200
    links = re.findall(r'href="(/dead/[^"]+)"', listing)
    assert len(links) == 2 and any("%FFj1" in link for link in links)  # the jid's own byte, quoted
    for left, link in zip((1, 0), links, strict=True):
        code, headers, page = server.request("GET", link)
        assert code == 200 and _secure(headers), (link, code)
        assert "PayloadError" in page and "\ufffd" in page  # the byte that is not UTF-8, shown as U+FFFD
        value = re.search(r'name="delete" value="([^"]+)"', page).group(1)  # what a browser sends back
        csrf = server.cookie.split("=", 1)[1]
        code, headers, _ = server.request("POST", "/dead", {"delete": value, "csrf": csrf})
        assert code == 303 and "flash=deleted" in headers["Location"] and len(api.DeadSet()) == left


def test_nan_and_out_of_range_times_leave_every_page_readable(ns, r, server):
    k = ns.keys
    r.lpush(
        k.queue("default"), _entry(jid="nan", enqueued_at=math.nan, created_at=math.inf), _entry(jid="far", at=1e300)
    )
    for key in (k.schedule, k.retry, k.dead):
        r.zadd(key, {_entry(jid=f"odd-{key[-4:]}", enqueued_at=math.nan, failed_at=-math.inf, created_at=1e20): 1e9})
    for path in ("/queues/default", "/scheduled", "/retries", "/dead", "/busy", "/"):
        code, headers, page = server.request("GET", path)
        assert code == 200 and _secure(headers), (path, code)
    assert "nan" in server.request("GET", "/queues/default")[2]
    for path, key in (("/scheduled", k.schedule), ("/retries", k.retry), ("/dead", k.dead)):
        [entry] = [
            e
            for e in (api.ScheduledSet(), api.RetrySet(), api.DeadSet())[
                ("/scheduled", "/retries", "/dead").index(path)
            ]
        ]
        code, _, page = server.request("GET", f"{path}/{entry.jid}@{entry.score!r}")
        assert code == 200 and "not a valid time" in page, path
        csrf = server.cookie.split("=", 1)[1]
        code, headers, _ = server.request("POST", path, {"delete": f"{entry.jid}@{entry.score!r}", "csrf": csrf})
        assert code == 303 and "flash=deleted" in headers["Location"] and r.zcard(key) == 0, path
    code, headers, _ = server.request("GET", "/scheduled/x@nan")
    assert code == 404 and _secure(headers)  # no score is NaN: no such entry, not "Redis did not answer"


def test_malformed_limits_and_metrics_are_shown_not_failed(ns, r, server):
    k = ns.keys
    r.hset(k.limits, "ok", json.dumps({"kind": "concurrent", "size": 2, "per": 0}))
    r.hset(k.limits, mapping={"size-x": json.dumps({"kind": "concurrent", "size": "x"}), "not-json": "{"})
    r.hset(k.limits, "bucket", json.dumps({"kind": "bucket", "size": 3, "per": "soon"}))
    r.hset(k.limit("bucket"), mapping={"interval": "zz", "count": "q"})
    minute = int(time.time() // 60)
    r.hset(k.metrics(minute), mapping={"tests.jobs.record|runs": "x", "tests.jobs.record|failed": "1", "|": "2"})
    code, headers, page = server.request("GET", "/limits")
    assert code == 200 and _secure(headers) and 'data-limit="ok"' in page and 'data-limit="not-json"' in page
    for path in ("/metrics", "/metrics/tests.jobs.record"):
        code, headers, page = server.request("GET", path)
        assert code == 200 and _secure(headers), path
    assert {x.name: x.kind for x in api.Limits()}["not-json"] == "?"
    r.set(k.stat("processed"), "not a number")  # damage no page reads around: a 500, still with its headers
    code, headers, page = server.request("GET", "/")
    assert code == 500 and _secure(headers) and "internal error" in page


def test_a_csrf_field_that_is_not_ascii_is_a_403(ns, server):
    server.request("GET", "/")
    csrf = server.cookie.split("=", 1)[1]
    for field in ("é" + csrf, csrf + "\u2603", "\udcff"):
        code, headers, _ = server.request("POST", "/dead", {"bulk": "delete-all", "csrf": field})
        assert code == 403 and _secure(headers), field
    web = Browser(create_app())
    web.cookies["jiggler_csrf"] = "é.é"  # a cookie of the same kind
    assert web.request("POST", "/dead", {"bulk": "delete-all", "csrf": "é.é"}).code == 403


def test_megabyte_descriptions_results_and_arguments_render_clipped(ns, r, start_worker, tkey):
    big = "d" * 1_000_000
    bids = []
    for _ in range(3):
        batch = Batch(description=big)
        with batch:
            pass
        bids.append(batch.bid)
    w = start_worker("-r", "tests.result_jobs", "-c", "2")
    jid = result_jobs.give.enqueue(tkey("g"), "r" * 1_000_000)
    assert len(api.Job(jid).result(timeout=20)) == 1_000_000
    r.zadd(ns.keys.dead, {_entry(jid="big", args=["a" * 1_000_000], error_message="e" * 1_000_000): 1e9})
    assert w.stop() == 0
    web = Browser(create_app())
    pages = {
        "/batches?per=200": web.get("/batches?per=200"),
        f"/batches/{bids[0]}": web.get(f"/batches/{bids[0]}"),
        f"/jobs/{jid}": web.get(f"/jobs/{jid}"),
        "/dead": web.get("/dead"),
        "/dead/big@1000000000.0": web.get("/dead/big@1000000000.0"),
    }
    sizes = {path: len(page.text) for path, page in pages.items()}
    assert all(page.code == 200 for page in pages.values()), sizes
    assert sizes["/batches?per=200"] < 20_000, sizes  # three 1 MB descriptions, 200 characters each
    assert all(size < 6 * SHOWN for size in sizes.values()), sizes
    assert "more characters" in pages[f"/batches/{bids[0]}"].text and "more characters" in pages[f"/jobs/{jid}"].text
