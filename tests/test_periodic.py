"""periodic() on the app side: fire times (croniter + zoneinfo, daylight-saving nights), the payload of an entry,
bad input refused at the call, and a worker that refuses two entries with one name (exit code 2, naming both)."""

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from jiggler_gevent import periodic
from jiggler_gevent.periodic import PeriodicError, PeriodicTypeError, entries, fire_times, next_fire
from jiggler_gevent.periodic import clear as clear_entries
from tests import jobs
from tests.conftest import wait_for

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def no_entries_left():
    clear_entries()
    yield
    clear_entries()


def at(*fields: int, tz: dt.tzinfo = dt.UTC, fold: int = 0) -> float:
    return dt.datetime(*fields, tzinfo=tz, fold=fold).timestamp()


def local(times: list[float], tz: dt.tzinfo = BERLIN) -> list[str]:
    """Fire times as local wall-clock times with their UTC offset, e.g. '29 03:00 +0200'."""
    return [dt.datetime.fromtimestamp(t, tz).strftime("%d %H:%M:%S %z") for t in times]


def test_five_fields_and_six_with_seconds_last():
    start = at(2026, 1, 1, 10, 0, 0)
    assert fire_times("*/20 * * * *", "UTC", start, start + 3600) == [start + 1200, start + 2400, start + 3600]
    # 6 fields: minute hour day month weekday second (croniter's order, seconds last)
    assert fire_times("0 * * * * 30", "UTC", start, start + 7200) == [start + 30, start + 3630]
    assert fire_times("* * * * * */15", "UTC", start, start + 60) == [start + 15, start + 30, start + 45, start + 60]
    assert next_fire("0 10 * * *", "UTC", start) == at(2026, 1, 2, 10)  # strictly after: not the start itself


def test_aliases():
    start = at(2026, 1, 1, 10, 30)  # a Thursday
    assert next_fire("@hourly", "UTC", start) == at(2026, 1, 1, 11)
    assert next_fire("@daily", "UTC", start) == at(2026, 1, 2)
    assert next_fire("@weekly", "UTC", start) == at(2026, 1, 4)  # Sunday 00:00
    assert next_fire("@monthly", "UTC", start) == at(2026, 2, 1)
    assert next_fire("@daily", "Europe/Berlin", start) == at(2026, 1, 2, tz=BERLIN)


def test_spring_forward_in_berlin():
    """2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day."""
    night = at(2026, 3, 28, 12, tz=BERLIN), at(2026, 3, 30, 12, tz=BERLIN)
    # An entry that names its hour fires once that day, at the first instant after the gap.
    assert local(fire_times("30 2 * * *", "Europe/Berlin", *night)) == ["29 03:00:00 +0200", "30 02:30:00 +0200"]
    assert local(fire_times("*/15 2 * * *", "Europe/Berlin", *night))[:2] == ["29 03:00:00 +0200", "30 02:00:00 +0200"]
    # An hourly-or-faster entry has nothing in the missing hour.
    hour = at(2026, 3, 29, 1, 0, tz=BERLIN), at(2026, 3, 29, 4, 0, tz=BERLIN)
    assert local(fire_times("*/30 * * * *", "Europe/Berlin", *hour)) == [
        "29 01:30:00 +0100",
        "29 03:00:00 +0200",
        "29 03:30:00 +0200",
        "29 04:00:00 +0200",
    ]
    gap = fire_times("*/30 * * * *", "Europe/Berlin", *hour)
    assert gap[1] - gap[0] == 1800  # 01:30 CET to 03:00 CEST is half an hour of real time


def test_fall_back_in_berlin():
    """2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice."""
    night = at(2026, 10, 24, 12, tz=BERLIN), at(2026, 10, 26, 12, tz=BERLIN)
    # An entry that names its hour fires once, in the first pass.
    assert local(fire_times("30 2 * * *", "Europe/Berlin", *night)) == ["25 02:30:00 +0200", "26 02:30:00 +0100"]
    # An hourly-or-faster entry fires in both passes, an hour apart in real time.
    hour = at(2026, 10, 25, 1, 45, tz=BERLIN), at(2026, 10, 25, 3, 0, tz=BERLIN)
    assert local(fire_times("*/30 * * * *", "Europe/Berlin", *hour)) == [
        "25 02:00:00 +0200",
        "25 02:30:00 +0200",
        "25 02:00:00 +0100",
        "25 02:30:00 +0100",
        "25 03:00:00 +0100",
    ]
    # Every second of 02:xx, once per wall-clock second: 3,600 in the first pass, none in the second.
    seconds = fire_times("* 2 * * * *", "Europe/Berlin", *night)
    assert len(seconds) == 2 * 3600 and local(seconds[3599:3601]) == ["25 02:59:59 +0200", "26 02:00:00 +0100"]
    # Starting inside the second pass does not go back to it either.
    inside = at(2026, 10, 25, 2, 10, tz=BERLIN, fold=1)
    assert local([next_fire("30 2 * * *", "Europe/Berlin", inside)]) == ["26 02:30:00 +0100"]
    assert local([next_fire("*/30 * * * *", "Europe/Berlin", inside)]) == ["25 02:30:00 +0100"]


def test_an_entry_has_the_jobs_options_and_its_payload_the_fire_time():
    entry = periodic("*/5 * * * *", jobs.slow_io, args=("k", 1.5))
    assert entry.name == "tests.jobs.slow_io" and entries() == [entry]
    assert (entry.job, entry.queue, entry.retries, entry.timeout, entry.tz) == (
        "tests.jobs.slow_io",
        "default",
        0,
        0.5,
        "UTC",
    )
    other = periodic("0 * * * *", jobs.record.set(retries=7), args=("k", "v"), name="rec", queue="low", tz="Asia/Tokyo")
    assert (other.queue, other.retries, other.tz, other.cron) == ("low", 7, "Asia/Tokyo", "0 * * * *")
    payload = other.payload(1_800_000_000)
    assert payload["name"] == "tests.jobs.record" and payload["args"] == ["k", "v"] and payload["queue"] == "low"
    assert payload["retries"] == 7 and payload["periodic"] == "rec" and payload["fire_at"] == 1_800_000_000
    assert len(payload["jid"]) == 24 and other.payload(1)["jid"] != payload["jid"]
    assert periodic("  @DAILY ", jobs.record, args=("k", "v"), name="d").cron == "@daily"


def _plain(key):
    return key


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: periodic("61 * * * *", jobs.record, args=("k", "v")), ValueError, "61 * * * *"),
        (lambda: periodic("* * * *", jobs.record, args=("k", "v")), ValueError, "4 field(s)"),
        (lambda: periodic("0 0 * * * * 2030", jobs.record, args=("k", "v")), ValueError, "7 field(s)"),
        (lambda: periodic("@reboot", jobs.record, args=("k", "v")), ValueError, "@reboot"),
        (lambda: periodic("R * * * *", jobs.record, args=("k", "v")), ValueError, "random"),
        (lambda: periodic("0 0 30 2 *", jobs.record, args=("k", "v")), ValueError, "never fires"),
        (lambda: periodic("every day", jobs.record, args=("k", "v")), ValueError, "every day"),
        (lambda: periodic(None, jobs.record, args=("k", "v")), TypeError, "string"),
        (lambda: periodic("@daily", jobs.record, args=("k", "v"), tz="Mars/Olympus"), ValueError, "Mars/Olympus"),
        (lambda: periodic("@daily", jobs.record, args=("k", "v"), tz="../../etc/passwd"), ValueError, "time zone"),
        (lambda: periodic("@daily", _plain, args=("k",)), TypeError, "@job"),
        (lambda: periodic("@daily", print), TypeError, "@job"),
        (lambda: periodic("@daily", jobs.record, args=("k", {1, 2})), TypeError, "argument 1"),
        (lambda: periodic("@daily", jobs.record, args=("k", dt.datetime.now())), TypeError, "JSON"),
        (lambda: periodic("@daily", jobs.record, args=("k",), kwargs={"value": float("nan")}), TypeError, "value"),
        (lambda: periodic("@daily", jobs.record, args="kv"), TypeError, "tuple or list"),
        (lambda: periodic("@daily", jobs.record, args=("k", "v", "extra")), TypeError, "do not match"),
        (lambda: periodic("@daily", jobs.record, args=("k", "v"), queue="a:b"), ValueError, "queue"),
        (lambda: periodic("@daily", jobs.record, args=("k", "v"), name=""), ValueError, "name"),
    ],
)
def test_bad_input_raises_at_the_call(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert words in str(caught.value)
    assert isinstance(caught.value, PeriodicError)  # what the worker turns into a usage error
    assert entries() == []


def test_two_entries_with_one_name():
    first = periodic("0 3 * * *", jobs.record, args=("k", "v"), name="nightly")
    assert periodic("0 3 * * *", jobs.record, args=("k", "v"), name="nightly") is first  # same settings: one entry
    with pytest.raises(ValueError) as caught:
        periodic("0 4 * * *", jobs.record, args=("k", "v"), name="nightly")
    message = str(caught.value)
    assert "'nightly'" in message and "'0 3 * * *'" in message and "'0 4 * * *'" in message
    assert message.count("test_periodic.py:") == 2  # where each was defined
    assert entries() == [first]
    assert isinstance(caught.value, PeriodicError) and not isinstance(caught.value, PeriodicTypeError)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_worker_refuses_two_entries_with_one_name_and_names_both(ns, start_worker, tkey, processes):
    w = start_worker("-r", "tests.cron_jobs", "-p", processes, env={"JIGGLER_TEST_CRON": "duplicate"})
    assert w.proc.wait(60) == 2
    out = w.output()
    errors = [line for line in out.splitlines() if line.startswith("gjiggler: error:")]
    assert errors, out
    assert "'twice'" in errors[0] and "'0 3 * * *'" in errors[0] and "'0 4 * * *'" in errors[0]
    assert "tests.cron_jobs" in errors[0] and re.search(r"cron_jobs\.py:\d+", errors[0])
    assert "Traceback" not in out


def test_a_worker_refuses_a_bad_expression(ns, start_worker):
    w = start_worker("-r", "tests.cron_jobs", env={"JIGGLER_TEST_CRON": "bad"})
    assert w.proc.wait(60) == 2
    assert "gjiggler: error: -r/--require tests.cron_jobs: bad cron expression '61 * * * *'" in w.output()


def test_a_worker_without_entries_runs_no_scheduler(ns, r, start_worker, tkey):
    w = start_worker("--heartbeat-interval", "0.5")
    jobs.record.enqueue(tkey("ran"), "x")
    wait_for(lambda: r.llen(tkey("ran")) == 1, 20, "the job")
    assert w.stop() == 0
    assert list(r.scan_iter(f"{ns.namespace}:cron:*")) == []
