"""Workflows (chain, group, chord) against a real Redis and real worker processes: results passed on, failure and
cancellation stopping what follows, each step pushed exactly once through a SIGKILL, and bad input refused whole.

The jobs are in tests/workflow_jobs.py.
"""

import json
import re
import time

import pytest

from jiggler_gevent import Batch, EnqueueError, api, chain, chord, config, group, job, scripts, testing
from jiggler_gevent.job import Signature
from jiggler_gevent.server.acker import Outcome
from jiggler_gevent.server.ending import Ending
from jiggler_gevent.web import create_app
from tests import workflow_jobs as w
from tests.conftest import identity_of, wait_for
from tests.test_batches import _settle_together
from tests.test_cli_results import gj
from tests.test_web import Browser

LOAD = ("-r", "tests.workflow_jobs")
FAST = ("--heartbeat-interval", "0.2")  # a SIGKILLed process is presumed dead after 12 beats: 2.4 s
STOP_BOUND = 10.0  # a hang detector: a cancelled CPU-bound step stops within about a second


def _namespace_keys(r, ns) -> list[str]:
    return [k for k in r.scan_iter(f"{ns.namespace}:*") if ":t:" not in k]


def test_a_chain_passes_each_result_to_the_next_step(ns, r, start_worker):
    start_worker(*LOAD, "-c", "5")
    wf = chain(w.add.s(1, 2), w.add.s(10), w.add.s(100, 1000)).enqueue()
    assert wf.result(timeout=30) == 1113
    workflow = api.Workflow(wf.id)
    assert workflow.status == "succeeded"
    steps = workflow.steps
    assert [(s.name, s.status, s.after) for s in steps] == [
        (w.add.name, "done", []),
        (w.add.name, "done", [0]),
        (w.add.name, "done", [1]),
    ]
    assert [api.Job(s.jid).result(timeout=1) for s in steps] == [3, 13, 1113]  # each step's own result is kept
    assert workflow.cancel() is False  # ended: nothing to cancel
    assert 0 < r.ttl(ns.keys.workflow(wf.id)) <= config.BATCH_TTL  # expires as a batch does
    assert 0 < r.ttl(ns.keys.batch(wf.id)) <= config.BATCH_TTL


def test_a_group_returns_its_members_results_in_order(ns, r, start_worker):
    start_worker(*LOAD, "-c", "10")
    wf = group(w.add.s(i, i) for i in range(12)).enqueue()
    assert wf.result(timeout=30) == [2 * i for i in range(12)]
    nested = group(group(w.add.s(1, 1), w.add.s(2, 2)), w.add.s(3, 3)).enqueue()
    assert nested.result(timeout=30) == [[2, 4], 6]


def test_a_chord_gives_the_groups_list_to_its_body(ns, r, start_worker):
    start_worker(*LOAD, "-c", "10")
    wf = chord([w.add.s(i, 1) for i in range(8)], w.total.s()).enqueue()
    assert wf.result(timeout=30) == sum(range(1, 9))
    body = api.Workflow(wf.id).steps[-1]
    assert body.name == w.total.name and body.after == list(range(8))


def test_nesting_makes_a_dag_and_si_steps_receive_nothing_extra(ns, r, start_worker):
    start_worker(*LOAD, "-c", "10")
    # 1+1 -> [2+1, (2+2)+3] -> total -> echo.si("fixed") -> echo(["fixed"], "x")
    wf = chain(
        w.add.s(1, 1),
        group(w.add.s(1), chain(w.add.s(2), w.add.s(3))),
        w.total.s(),
        w.echo.si("fixed"),
        w.echo.s("x"),
    ).enqueue()
    assert wf.result(timeout=30) == [["fixed"], "x"]
    steps = api.Workflow(wf.id).steps
    assert [s.after for s in steps] == [[], [0], [0], [2], [1, 3], [4], [5]]
    assert api.Job(steps[4].jid).result(timeout=1) == 3 + 7  # total got the group's list, in order


def test_a_signature_enqueued_alone_is_a_plain_job(ns, r, start_worker):
    start_worker(*LOAD, "-c", "2")
    jid = w.add.s(2, 3).set(result_ttl=60, queue="default").enqueue()
    assert api.Job(jid).result(timeout=30) == 5
    assert repr(w.add.si(1, x=2)) == f"{w.add.name}.si(1, x=2)"


def test_a_failed_step_fails_the_workflow_and_nothing_after_it_starts(ns, r, start_worker, tkey):
    key = tkey("runs")
    start_worker(*LOAD, "-c", "5")
    wf = chain(
        w.record.s(None, key, "first"),
        group(w.fail.s("boom"), w.record.s(key, "beside")),
        w.record.s(key, "after"),
    ).enqueue()
    with pytest.raises(api.JobFailed) as failed:
        wf.result(timeout=30)
    assert failed.value.error_class == "RuntimeError" and failed.value.error_message == "boom"
    workflow = api.Workflow(wf.id)
    steps = workflow.steps
    assert failed.value.jid == steps[1].jid
    assert workflow.status == "failed"
    wait_for(lambda: api.Job(steps[2].jid).status == "done", 10, "the member beside the failed one to end")
    assert [s.status for s in steps[:2]] == ["done", "dead"]
    assert api.Workflow(wf.id).steps[3].status == "skipped"
    assert sorted(r.lrange(key, 0, -1)) == ["beside", "first"]  # the step after the group never ran
    assert workflow.info()["error"]["error_class"] == "RuntimeError"


def test_cancel_stops_a_running_cpu_bound_step_and_nothing_after_it_starts(ns, r, start_worker, tkey):
    key = tkey("runs")
    worker = start_worker(*LOAD, "-c", "2")
    wf = chain(w.add.s(1, 1), w.spin.s(key), w.record.s(key, "after")).enqueue()
    wait_for(lambda: r.lrange(key, 0, -1) == ["spin"], 20, "the CPU-bound step to start")
    workflow = api.Workflow(wf.id)
    assert workflow.steps[1].status == "running"
    cancelled_at = time.monotonic()
    assert workflow.cancel() is True
    with pytest.raises(api.JobCancelled):
        wf.result(timeout=STOP_BOUND)
    wait_for(lambda: api.Job(workflow.steps[1].jid).status == "cancelled", STOP_BOUND, "the step to be stopped")
    assert time.monotonic() - cancelled_at < STOP_BOUND
    assert workflow.status == "cancelled"
    assert [s.status for s in workflow.steps] == ["done", "cancelled", "skipped"]
    assert workflow.cancel() is False
    # The worker is alive and free: a new workflow runs through it.
    assert chain(w.add.s(2, 2), w.add.s(1)).enqueue().result(timeout=20) == 5
    assert worker.proc.poll() is None, worker.output()
    assert r.lrange(key, 0, -1) == ["spin"]  # never ran again, and the step after it never started


def test_cancel_of_a_workflow_waiting_in_the_queue(ns, r):
    wf = group(w.add.s(1, 1), w.add.s(2, 2)).enqueue()  # no worker: both wait in the queue
    assert api.Workflow(wf.id).cancel() is True
    with pytest.raises(api.JobCancelled):
        wf.result(timeout=5)
    assert [s.status for s in api.Workflow(wf.id).steps] == ["cancelled", "cancelled"]
    assert r.llen(ns.keys.queue("default")) == 0
    page = Browser(create_app()).get(f"/workflows/{wf.id}")
    assert page.code == 200 and "(the workflow was cancelled)" in page.text and 'data-status="cancelled"' in page.text
    shown = gj(ns, "workflow", wf.id).stdout.splitlines()
    assert shown[0] == f"{wf.id}: cancelled, 0/2 step(s) succeeded"
    assert "  error: JobCancelled (the workflow was cancelled)" in shown


@pytest.mark.slow
def test_a_forty_step_chain_over_three_workers_with_one_killed_runs_each_step_once_in_order(ns, r, start_worker, tkey):
    key = tkey("runs")
    workers = [start_worker(*LOAD, "-c", "5", *FAST) for _ in range(3)]
    wait_for(lambda: all(identity_of(r, ns, x.pid) for x in workers), 30, "3 workers' heartbeats")
    wf = chain(w.link.s(None, key, 0, 0.1), *(w.link.s(key, i, 0.1) for i in range(1, 40))).enqueue()
    wait_for(lambda: r.llen(key) >= 10, 30, "ten steps to start")

    def holder():
        for x in workers:
            identity = identity_of(r, ns, x.pid)
            if identity and r.llen(ns.keys.working(identity)):
                return x
        return None

    victim = wait_for(holder, 10, "a worker holding the running step", interval=0.005)
    victim.kill()  # SIGKILL, in the middle of a step
    killed_at = r.llen(key)
    assert wf.result(timeout=60) == 39
    runs = [int(x) for x in r.lrange(key, 0, -1)]
    once = [i for n, i in enumerate(runs) if n == 0 or runs[n - 1] != i]
    assert once == list(range(40)), runs  # every step, in order
    assert len(runs) - 40 <= 1, runs  # at most the killed worker's running step twice
    assert all(runs.count(i) == 1 for i in range(40) if i != runs[killed_at - 1])
    assert [s.status for s in api.Workflow(wf.id).steps] == ["done"] * 40
    assert [x.stop() for x in workers if x is not victim] == [0, 0]


def test_the_next_step_is_pushed_once_when_two_processes_settle_the_same_success(ns, r):
    # After a recovery two processes may hold and finish the same step; only the first success counts.
    wf = chain(w.add.s(1, 1), w.add.s(1)).enqueue()
    first = api.Workflow(wf.id).steps[0]
    raw = r.rpop(ns.keys.queue("default"))
    for identity in ("a", "b"):
        r.lpush(ns.keys.working(identity), raw)
    done = Ending(first.jid, bid=wf.id, ttl=60, detail="2")
    results = _settle_together(ns, [(r, identity, Outcome(raw, end=done)) for identity in ("a", "b")])
    assert results == [1, 1]
    queued = [json.loads(x) for x in r.lrange(ns.keys.queue("default"), 0, -1)]
    assert [(p["name"], p["args"]) for p in queued] == [(w.add.name, [2, 1])]  # pushed once, with the result


def test_a_chord_under_two_processes(ns, r, start_worker):
    worker = start_worker(*LOAD, "-p", "2", "-c", "5")
    wf = chord([w.add.s(i, 1) for i in range(30)], w.total.s()).enqueue()
    assert wf.result(timeout=60) == sum(range(1, 31))
    assert worker.stop() == 0


def test_steps_not_made_with_job_are_refused_and_nothing_is_written(ns, r):
    with pytest.raises(TypeError, match="signature"):
        chain(w.plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"give its signature, job\.s"):
        group(w.add.s(1), w.add)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="@job function"):
        Signature(w.plain)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one step"):
        chain()
    with pytest.raises(ValueError, match="at least one step"):
        group([])
    with pytest.raises(TypeError, match="does not survive a JSON round trip"):
        w.add.s(object())
    assert _namespace_keys(r, ns) == []


def test_arguments_that_cannot_bind_are_refused_before_anything_is_written(ns, r):
    @job(retries=0, name="tests.workflow.two_args")
    def two_args(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match=r"workflow step 1 .*previous result as its first argument"):
        chain(w.add.s(1), two_args.s(1, 2)).enqueue()  # it would get 3 arguments
    with pytest.raises(TypeError, match="workflow step 0"):
        chain(two_args.s(1), w.add.s()).enqueue()  # the first step gets nothing extra: one argument short
    with pytest.raises(ValueError, match="unique"):
        chain(w.add.s(1), w.add.set(unique_for=60).s()).enqueue()
    with pytest.raises(RuntimeError, match="inside a `with Batch"), Batch():
        chain(w.add.s(1)).enqueue()
    with pytest.raises(RuntimeError, match="inline"), testing.fake():
        chain(w.add.s(1)).enqueue()
    assert _namespace_keys(r, ns) == []
    assert chain(two_args.s(1, 2), two_args.si(3, 4)).enqueue().id  # the same job bound right is taken


def test_a_result_that_is_not_json_fails_its_step_clearly_and_loses_nothing(ns, r, start_worker, tkey):
    key = tkey("runs")
    start_worker(*LOAD, "-c", "2")
    wf = chain(w.add.s(1, 1), w.not_json.s(), w.record.s(key, "after")).enqueue()
    with pytest.raises(api.JobFailed) as failed:
        wf.result(timeout=30)
    assert failed.value.error_class == "TypeError"
    assert "does not survive a JSON round trip" in failed.value.error_message
    steps = api.Workflow(wf.id).steps
    assert [s.status for s in steps] == ["done", "dead", "skipped"]
    [dead] = api.DeadSet()
    assert dead.jid == steps[1].jid and dead.args == [2]  # the step, with the result it was given, kept to look at
    assert api.Job(steps[0].jid).result(timeout=1) == 2
    assert r.llen(key) == 0


def test_enqueue_is_one_script_call(ns, r):
    wf = chain(w.add.s(1), group(w.add.s(1), w.add.s(2)), w.total.s()).enqueue()
    # Only the first step is pushed; the others are in the workflow's hash until their turn.
    assert [json.loads(x)["jid"] for x in r.lrange(ns.keys.queue("default"), 0, -1)] == [
        api.Workflow(wf.id).steps[0].jid
    ]
    assert "workflow_push" in scripts.SOURCES
    fields = r.hgetall(ns.keys.workflow(wf.id))
    assert "h0" not in fields and {"h1", "t1", "h2", "t2", "h3", "t3"} <= set(fields)  # a payload kept until pushed
    assert [wid for wid in api.Workflows().page()] and api.Workflows().page()[0].id == wf.id


def test_gjiggler_workflows_and_workflow(ns, r, start_worker):
    assert gj(ns, "workflows").stdout.startswith("no workflows")
    assert json.loads(gj(ns, "workflows", "--json").stdout) == []
    wf = chain(w.add.s(1, 1), group(w.add.s(1), w.add.s(2)), w.total.s()).enqueue()
    [line] = gj(ns, "workflows").stdout.splitlines()
    assert line.startswith(f"{wf.id}: running, 0/4 step(s) succeeded; created 20")
    text = gj(ns, "workflow", wf.id).stdout.splitlines()
    assert text[0] == f"{wf.id}: running, 0/4 step(s) succeeded" and text[2] == "  ended: not yet"
    steps = api.Workflow(wf.id).steps
    assert text[3:] == [
        f"  step 0 {steps[0].jid} {w.add.name}: queued",
        f"  step 1 {steps[1].jid} {w.add.name}: waiting after 0",
        f"  step 2 {steps[2].jid} {w.add.name}: waiting after 0",
        f"  step 3 {steps[3].jid} {w.total.name}: waiting after 1,2",
    ]
    start_worker(*LOAD, "-c", "3")
    assert wf.result(timeout=30) == 7
    info = json.loads(gj(ns, "workflow", wf.id, "--json").stdout)
    assert (info["status"], info["result"], info["succeeded"], info["total"]) == ("succeeded", 7, 4, 4)
    assert [s["status"] for s in info["steps"]] == ["done"] * 4 and info["steps"][3]["after"] == [1, 2]
    assert "  result: 7" in gj(ns, "workflow", wf.id).stdout.splitlines()
    [row] = json.loads(gj(ns, "workflows", "--json").stdout)
    assert row["id"] == wf.id and row["status"] == "succeeded"
    for args in (("workflow", "no-such-id"), ("workflow", "no-such-id", "--json")):
        out = gj(ns, *args)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.startswith("gjiggler: error: no workflow 'no-such-id'"), out.stderr


def test_the_dashboard_draws_a_workflows_steps_and_links_them_from_their_job_pages(ns, r, start_worker):
    web = Browser(create_app())
    assert "No workflows" in web.get("/workflows").text
    start_worker(*LOAD, "-c", "3")
    wf = chain(w.add.s(1, 1), group(w.add.s(1), w.fail.s("no <b>luck</b>")), w.total.s()).enqueue()
    with pytest.raises(api.JobFailed):
        wf.result(timeout=30)
    steps = api.Workflow(wf.id).steps
    wait_for(lambda: api.Workflow(wf.id).steps[1].status == "done", 10, "the member beside the failed one")
    page = web.get("/workflows")
    assert page.code == 200 and 'aria-current="page">Workflows' in page.text
    row = re.search(rf'<tr data-workflow="{wf.id}">.*?</tr>', page.text)
    assert row and f'href="/workflows/{wf.id}"' in row.group(0) and "2 / 4" in row.group(0)
    assert '<span class="tag bad" data-status>failed</span>' in row.group(0)

    page = web.get(f"/workflows/{wf.id}")
    assert page.code == 200 and "'unsafe-inline'" not in (page.header("Content-Security-Policy") or "")
    svg = re.search(r'<div class="workflow-graph"><svg .*?</svg>', page.text)
    assert svg, page.text
    drawn = re.findall(r'<a href="/jobs/(\w+)" data-step="(\d)" data-status="(\w+)">', svg.group(0))
    statuses = ("done", "done", "dead", "skipped")
    assert drawn == [(s.jid, str(s.index), status) for s, status in zip(steps, statuses, strict=True)]
    assert svg.group(0).count("<line ") == 4  # 0->1, 0->2, 1->3, 2->3
    assert "style=" not in svg.group(0) and "<script" not in page.text.split("</nav>", 1)[-1]
    assert "no &lt;b&gt;luck&lt;/b&gt;" in page.text and "<b>luck</b>" not in page.text  # the error, escaped
    job_page = web.get(f"/jobs/{steps[1].jid}").text
    assert f'<a class="mono" href="/workflows/{wf.id}">{wf.id}</a>' in job_page
    assert web.get("/workflows/no-such-id").code == 404


def test_a_workflow_on_sidekiqs_wire(ns, r, start_worker):
    # Sidekiq's payload format keeps jiggler's own fields apart; a step's payload is still spliced and run.
    config.configure(redis_url=ns.url, namespace=ns.namespace, wire="sidekiq")
    start_worker(*LOAD, "--wire", "sidekiq", "-c", "3")
    wf = chain(w.add.s(1, 1), group(w.add.s(1), w.add.s(2)), w.total.s()).enqueue()
    assert wf.result(timeout=30) == 7
    assert [s.status for s in api.Workflow(wf.id).steps] == ["done"] * 4


def test_enqueue_errors_name_the_workflow(ns, r):
    config.configure(wait_replicas=1, wait_timeout=0.2)  # the shared test Redis has no replica
    with pytest.raises(EnqueueError, match=r"workflow \w+ \(1 first step\(s\)\).*only 0 of 1 replica\(s\)"):
        chain(w.add.s(1), w.add.s(2)).enqueue()
    config.configure(redis_url="redis://127.0.0.1:1/0", namespace=ns.namespace)  # nothing listens there
    with pytest.raises(EnqueueError, match=r"could not push workflow \w+ \(2 first step\(s\)\)"):
        group(w.add.s(1), w.add.s(2)).enqueue()
