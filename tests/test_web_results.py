"""The Batches pages and the job status page at the WSGI level, against a real Redis.

Batches are built with the API; a job of a batch is cancelled to make a failure without a worker. A real worker
(`-r tests.ui_jobs`) ends the tracked jobs whose result or error a page shows.
"""

import re
from urllib.parse import quote

import pytest

from jiggler_gevent import Batch, api
from jiggler_gevent.web import create_app
from tests import jobs, ui_jobs
from tests.test_web import XSS, Browser

UNKNOWN = "0" * 24


@pytest.fixture
def web(ns) -> Browser:
    return Browser(create_app())


def _row(text: str, bid: str) -> str:
    m = re.search(rf'<tr data-batch="{bid}">.*?</tr>', text)
    assert m, f"no row for batch {bid}"
    return m.group(0)


def test_batches_page_lists_a_batch_with_counts_and_progress(web, ns):
    assert "No batches" in web.get("/batches").text
    batch = Batch(description="nightly import")
    with batch:
        jids = [ui_jobs.step.set(queue="parked").enqueue(True) for _ in range(4)]
    assert api.Job(jids[0]).cancel()  # a cancelled job counts as a failure
    page = web.get("/batches")
    assert page.code == 200 and 'aria-current="page">Batches' in page.text and "1</b> batch(es)" in page.text
    row = _row(page.text, batch.bid)
    assert f'href="/batches/{batch.bid}"><b>nightly import</b>' in row
    assert 'data-label="total">4<' in row and 'data-label="pending">4<' in row and 'data-label="failures">1<' in row
    assert 'role="progressbar"' in row and 'aria-valuenow="0"' in row and "in progress" in row
    assert '<rect class="bad" x="0.00" y="0" width="25.00"' in row and "<small>0%</small>" in row

    for jid in jids[1:]:
        api.Job(jid).cancel()  # every job has now run once, or never will: complete, not a success
    row = _row(web.get("/batches").text, batch.bid)
    assert '<span class="tag warn">complete</span>' in row and 'width="100.00"' in row

    empty = Batch(description="nothing to do")
    with empty:
        pass
    text = web.get("/batches").text
    assert text.index(empty.bid) < text.index(batch.bid)  # newest first
    row = _row(text, empty.bid)
    assert '<span class="tag ok">success</span>' in row and "<small>100%</small>" in row


def test_batch_detail_links_its_failed_jobs_to_the_job_page(web, ns):
    batch = Batch(description="with a failure")
    with batch:
        jids = [ui_jobs.step.set(queue="parked").enqueue(True) for _ in range(3)]
    api.Job(jids[1]).cancel()
    page = web.get(f"/batches/{batch.bid}")
    assert page.code == 200 and 'aria-current="page">Batches' in page.text
    assert "with a failure" in page.text and "<dt>Total</dt><dd>3</dd>" in page.text
    assert "<dt>Failures</dt><dd>1</dd>" in page.text and "<dt>Complete</dt><dd>not yet</dd>" in page.text
    assert 'class="progress wide"' in page.text
    assert f'<a class="mono" href="/jobs/{jids[1]}">{jids[1]}</a>' in page.text
    assert jids[0] not in page.text and jids[2] not in page.text
    job = web.get(f"/jobs/{jids[1]}")
    assert job.code == 200 and "data-status>cancelled<" in job.text and 'name="cancel"' not in job.text
    missing = web.get("/batches/no-such-bid")
    assert missing.code == 404 and "No such batch" in missing.text and 'href="/batches"' in missing.text


def test_job_page_of_tracked_jobs_shows_result_error_and_times(web, ns, start_worker):
    done, dead = ui_jobs.run_done_and_dead(start_worker)
    page = web.get(f"/jobs/{done}")
    assert page.code == 200 and 'aria-current="page">Job status' in page.text
    assert "data-status>done<" in page.text and '<h2>Result</h2><pre class="code">5</pre>' in page.text
    assert "<dt>Started</dt><dd><time" in page.text and "<dt>Ended</dt><dd><time" in page.text
    assert 'name="cancel"' not in page.text and "<h2>Error</h2>" not in page.text
    page = web.get(f"/jobs/{dead}")
    assert "data-status>dead<" in page.text and "<b>ValueError</b>: bad &lt;b&gt;input&lt;/b&gt;" in page.text
    assert '<dt>Listed in</dt><dd><a href="/dead">Dead</a>' in page.text and "<h2>Result</h2>" not in page.text


def test_job_page_of_a_waiting_job_offers_cancel(web, ns):
    queued = jobs.record.set(queue="parked").enqueue("k", 1)  # untracked: found where it waits
    page = web.get(f"/jobs/{queued}")
    assert "data-status>queued<" in page.text and '<a href="/queues">Queues</a>' in page.text
    assert re.search(rf'<button name="cancel" value="{queued}" class="danger">Cancel job</button>', page.text)
    assert "Not enqueued with <code>result_ttl</code>" in page.text
    unknown = web.get(f"/jobs/{UNKNOWN}")
    assert unknown.code == 200 and "data-status>unknown<" in unknown.text and "No job with this id" in unknown.text
    assert 'name="cancel"' not in unknown.text


def test_cancel_is_a_post_with_the_csrf_token(web, ns):
    jid = ui_jobs.add.set(queue="parked").enqueue(1, 1)
    page = web.get(f"/jobs/{jid}")
    assert "data-status>queued<" in page.text and f'data-confirm="Cancel job {jid}?"' in page.text
    assert page.csrf() == web.cookies["jiggler_csrf"]
    assert web.request("POST", f"/jobs/{jid}", {"cancel": jid}).code == 403  # the cookie, but no field
    assert web.request("POST", f"/jobs/{jid}", {"cancel": jid, "csrf": page.csrf() + "x"}).code == 403
    assert Browser(create_app()).request("POST", f"/jobs/{jid}", {"cancel": jid, "csrf": page.csrf()}).code == 403
    assert api.Job(jid).status == "queued" and len(api.Queue("parked")) == 1

    resp = web.post(f"/jobs/{jid}", {"cancel": jid})
    assert resp.code == 303 and resp.header("Location") == f"/jobs/{jid}?flash=cancelled&n=1"
    assert len(api.Queue("parked")) == 0 and api.Job(jid).status == "cancelled"
    after = web.get(resp.header("Location")).text
    assert "Job cancelled" in after and "data-status>cancelled<" in after and 'name="cancel"' not in after
    assert "<b>JobCancelled</b>" in after
    again = web.post(f"/jobs/{jid}", {"cancel": jid})
    assert again.header("Location") == f"/jobs/{jid}?flash=not-cancelled"
    assert "Nothing to cancel" in web.get(again.header("Location")).text
    assert web.post(f"/jobs/{jid}", {"cancel": "another-jid"}).code == 400


def test_job_lookup_form_goes_to_the_job_page(web, ns):
    page = web.get("/jobs")
    assert page.code == 200 and 'aria-current="page">Job status' in page.text
    assert '<form method="get" action="/jobs" class="lookup" role="search">' in page.text
    resp = web.get("/jobs?jid=" + quote(" a b/c "))
    assert resp.code == 303 and resp.header("Location") == "/jobs/a%20b%2Fc"
    assert web.get("/jobs?jid=").code == 200
    mounted = Browser(create_app(), root="/ops")
    assert mounted.get("/jobs?jid=abc").header("Location") == "/ops/jobs/abc"
    batch = Batch(description="mounted")
    with batch:
        jid = ui_jobs.step.set(queue="parked").enqueue(True)
    assert f'href="/ops/batches/{batch.bid}"' in mounted.get("/batches").text
    assert mounted.post(f"/jobs/{jid}", {"cancel": jid}).header("Location") == f"/ops/jobs/{jid}?flash=cancelled&n=1"


def test_hostile_descriptions_and_jids_stay_text(web, ns):
    batch = Batch(description=XSS)
    with batch:
        jid = ui_jobs.step.set(queue="parked").enqueue(True)
    api.Job(jid).cancel()
    escaped = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;"
    for path in ("/batches", f"/batches/{batch.bid}"):
        text = web.get(path).text
        assert "<script>alert" not in text and escaped in text, path
    text = web.get("/jobs/" + XSS).text
    assert "<script>alert" not in text and escaped in text and "data-status>unknown<" in text
    resp = web.get("/jobs?jid=" + quote(XSS))
    assert "<" not in resp.header("Location") and resp.header("Location").startswith("/jobs/%3Cscript%3E")
    assert "<script>alert" not in web.get("/batches/" + XSS).text
