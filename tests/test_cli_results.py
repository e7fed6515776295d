"""`gjiggler cancel`, `status`, `batches` and `batch` as a user runs them, against a real Redis; a real worker
(`-r tests.ui_jobs`) runs the jobs whose end a test reads."""

import json
import subprocess

from jiggler_gevent import Batch, api
from tests import jobs, ui_jobs
from tests.conftest import ROOT, gjiggler_command, wait_for

UNKNOWN = "0" * 24
NOT_FOUND = "not found waiting or running (unknown, or already ended)"


def gj(ns, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(gjiggler_command(ns, *args), cwd=ROOT, capture_output=True, text=True, timeout=60)


def status_json(ns, jid: str) -> dict:
    out = gj(ns, "status", jid, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_new_command_has_help_with_the_redis_options(ns):
    for command in ("cancel", "status", "batches", "batch"):
        out = gj(ns, command, "--help")
        assert out.returncode == 0 and "--redis-url" in out.stdout and "--namespace" in out.stdout, command


def test_cancel_removes_queued_jobs_and_their_status_says_cancelled(ns):
    tracked = ui_jobs.add.set(queue="parked").enqueue(1, 2)
    plain = jobs.record.set(queue="parked").enqueue("k", "v")
    kept = ui_jobs.add.set(queue="parked").enqueue(3, 4)
    first, second = gj(ns, "status", tracked).stdout.splitlines()
    assert first == f"{tracked}: queued" and second.startswith("  last change: 20") and second.endswith(" UTC")
    out = gj(ns, "cancel", tracked, plain, UNKNOWN)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{tracked}: cancelled",
        f"{plain}: cancelled",
        f"{UNKNOWN}: {NOT_FOUND}",
    ]
    assert [e.jid for e in api.Queue("parked")] == [kept]
    info = status_json(ns, tracked)
    assert info["jid"] == tracked and info["status"] == "cancelled" and info["error_class"] == "JobCancelled"
    assert status_json(ns, plain) == {"jid": plain, "status": "cancelled"}
    text = gj(ns, "status", tracked).stdout.splitlines()
    assert text[0] == f"{tracked}: cancelled" and "  error: JobCancelled" in text
    again = gj(ns, "cancel", tracked)
    assert again.returncode == 0 and again.stdout == f"{tracked}: {NOT_FOUND}\n"


def test_status_of_done_and_dead_tracked_jobs(ns, start_worker):
    done, dead = ui_jobs.run_done_and_dead(start_worker)
    info = status_json(ns, done)
    assert set(info) == {"jid", "status", "started_at", "updated_at", "result"}
    assert info["status"] == "done" and info["result"] == 5 and info["started_at"] <= info["updated_at"]
    info = status_json(ns, dead)
    assert info["status"] == "dead" and "result" not in info
    assert info["error_class"] == "ValueError" and info["error_message"] == "bad <b>input</b>"
    text = gj(ns, "status", done).stdout.splitlines()
    assert text[0] == f"{done}: done" and "  result: 5" in text
    assert text[1].startswith("  started: 20") and text[2].startswith("  last change: 20") and text[1].endswith(" UTC")
    assert "  error: ValueError: bad <b>input</b>" in gj(ns, "status", dead).stdout.splitlines()


def test_status_of_untracked_jobs_is_looked_up_where_they_wait(ns):
    queued = jobs.record.enqueue("k", 1)
    later = jobs.record.enqueue_in(3600, "k", 2)
    assert status_json(ns, queued) == {"jid": queued, "status": "queued"}
    assert status_json(ns, later) == {"jid": later, "status": "scheduled"}
    assert status_json(ns, UNKNOWN) == {"jid": UNKNOWN, "status": "unknown"}
    out = gj(ns, "status", UNKNOWN)
    assert out.returncode == 0 and out.stdout == f"{UNKNOWN}: unknown (not found, or ended without result_ttl)\n"


def test_batches_and_batch_show_the_counts(ns, start_worker):
    assert gj(ns, "batches").stdout.startswith("no batches")
    assert json.loads(gj(ns, "batches", "--json").stdout) == []
    batch = Batch(description="import 42")
    with batch:
        ok = [ui_jobs.step.enqueue(True) for _ in range(2)]
        bad = ui_jobs.step.enqueue(False)
    newer = Batch(description="parked")
    with newer:
        ui_jobs.step.set(queue="parked").enqueue(True)  # no worker reads this queue: stays pending
    w = start_worker("-r", "tests.ui_jobs")
    wait_for(lambda: api.BatchStatus(batch.bid).complete, 60, "the batch to complete")
    assert w.stop() == 0
    assert ok and bad not in ok

    rows = json.loads(gj(ns, "batches", "--json").stdout)
    assert [row["bid"] for row in rows] == [newer.bid, batch.bid]  # newest first
    row = rows[1]
    assert row["description"] == "import 42" and row["total"] == 3 and row["pending"] == 1 and row["failures"] == 1
    assert row["complete"] is True and row["success"] is False and row["failed_jids"] == [bad]
    assert row["complete_at"] >= row["created_at"] and row["success_at"] is None
    assert rows[0]["total"] == 1 and rows[0]["pending"] == 1 and rows[0]["complete"] is False
    assert [r["bid"] for r in json.loads(gj(ns, "batches", "--json", "--limit", "1").stdout)] == [newer.bid]
    text = gj(ns, "batches").stdout.splitlines()
    assert text[1].startswith(f"{batch.bid} 'import 42': 2/3 succeeded, 1 pending, 1 failed, complete; created 20")
    assert text[0].startswith(f"{newer.bid} 'parked': 0/1 succeeded, 1 pending, 0 failed, in progress")

    out = gj(ns, "batch", batch.bid, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == row
    text = gj(ns, "batch", batch.bid).stdout.splitlines()
    assert text[0] == f"{batch.bid} 'import 42': 2/3 succeeded, 1 pending, 1 failed, complete"
    assert "  success: not yet" in text and text[-1] == f"  failed: {bad}"


def test_batch_of_an_unknown_bid_is_one_line_and_exit_2(ns):
    for args in (("batch", "no-such-bid"), ("batch", "no-such-bid", "--json")):
        out = gj(ns, *args)
        assert out.returncode == 2 and out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("gjiggler: error: no batch 'no-such-bid'"), out.stderr


def test_a_zero_job_batch_is_listed_as_a_success_at_once(ns):
    batch = Batch(description="nothing to do")
    with batch:
        pass
    row = json.loads(gj(ns, "batch", batch.bid, "--json").stdout)
    assert row["total"] == 0 and row["complete"] is True and row["success"] is True
    assert gj(ns, "batch", batch.bid).stdout.startswith(f"{batch.bid} 'nothing to do': 0/0 succeeded, 0 pending")
