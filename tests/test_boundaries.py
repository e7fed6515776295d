"""The architecture's boundaries, checked at run time (import-linter checks the imports themselves in CI).

- A worker process, alone or as a `-p 2` child, loads the worker (server/) and never the admin side:
  neither `jiggler_gevent.api` nor `jiggler_gevent.web` nor anything under `jiggler_gevent.admin`.
- User code that imports jiggler_gevent, defines a job and enqueues it loads nothing of the worker, of the
  admin side, of the CLI, nor gevent.
- The wire reads a registered job's options through the registry job.py hands it, and loads no client.
"""

import json
import subprocess
import sys

import pytest

from tests import jobs
from tests.conftest import ROOT, wait_for

ADMIN = ("jiggler_gevent.api", "jiggler_gevent.web", "jiggler_gevent.admin")


def _is_under(module: str, packages: tuple) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_worker_process_never_loads_the_admin_side(ns, r, tkey, start_worker, processes):
    key = tkey("modules")
    w = start_worker("-c", "2", "-p", processes)
    jobs.record_loaded_modules.enqueue(key)
    loaded = wait_for(lambda: r.lrange(key, 0, -1), 30, "the job that lists the loaded modules")
    assert "jiggler_gevent.server.manager" in loaded and "jiggler_gevent.server.processor" in loaded
    assert [m for m in loaded if _is_under(m, ADMIN)] == []
    assert "jiggler_gevent.cli" in loaded  # the entry point parsed the options: the list is a worker's own
    assert w.stop() == 0


def test_defining_and_enqueueing_a_job_loads_nothing_of_the_worker(ns):
    code = f"""
import json, sys
import jiggler_gevent
from jiggler_gevent import configure, job
configure(redis_url={ns.url!r}, namespace={ns.namespace!r})

@job
def add(a, b):
    return a + b

jid = add.enqueue(1, 2)
print(json.dumps({{"jid": jid, "modules": sorted(sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["jid"]) == 24
    forbidden = ("jiggler_gevent.server", "jiggler_gevent.cli", "jiggler_gevent.demo", "gevent", *ADMIN)
    assert [m for m in result["modules"] if _is_under(m, forbidden)] == []
    assert "jiggler_gevent.client" in result["modules"] and "redis" in result["modules"]


def test_importing_the_package_and_calling_periodic_loads_nothing_of_the_worker():
    code = """
import json, sys
import jiggler_gevent
before = sorted(sys.modules)
from jiggler_gevent import job, periodic

@job
def nightly():
    pass

entry = periodic("0 3 * * *", nightly, tz="Europe/Berlin")
print(json.dumps({"before": before, "after": sorted(sys.modules), "name": entry.name}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["name"] == "__main__.nightly"
    assert "croniter" not in result["before"]  # loaded when a fire time is first computed, not by the import
    forbidden = ("jiggler_gevent.server", "jiggler_gevent.cli", "jiggler_gevent.demo", "gevent", "redis", *ADMIN)
    assert [m for m in result["after"] if _is_under(m, forbidden)] == []


def test_using_limits_and_unique_jobs_loads_nothing_of_the_worker(ns):
    code = f"""
import json, sys
from jiggler_gevent import configure, job, limits
configure(redis_url={ns.url!r}, namespace={ns.namespace!r})

@job(unique_for=60)
def once():
    pass

with limits.concurrent("boundary", 2):
    jids = [once.enqueue(), once.enqueue()]
print(json.dumps({{"jids": jids, "modules": sorted(sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["jids"][0] is not None and result["jids"][1] is None
    forbidden = ("jiggler_gevent.server", "jiggler_gevent.cli", "jiggler_gevent.demo", "gevent", *ADMIN)
    assert [m for m in result["modules"] if _is_under(m, forbidden)] == []


def test_the_wire_reads_sidekiq_payloads_with_the_jobs_options_without_loading_the_client():
    """wire/ sits under job and client (setup.cfg): a job's own options reach it through the registry job.py hands
    over, not through an import, and reading a payload loads no client (nor redis)."""
    code = """
import json, sys
from jiggler_gevent import job
from jiggler_gevent.config import sidekiq_keys
from jiggler_gevent.wire import of

@job(name="Resize", retries=3, timeout=7)
def resize(path):
    pass

wire = of(sidekiq_keys("jiggler"))
known = wire.decode(json.dumps({"class": "Resize", "args": ["/a.png"], "retry": True, "jid": "j1"}))
unknown = wire.decode(json.dumps({"class": "Other", "args": [], "retry": True, "jid": "j2"}))
print(json.dumps({"known": known, "unknown": unknown, "modules": sorted(sys.modules)}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["known"]["retries"], result["known"]["timeout"], result["known"]["args"]) == (3, 7, ["/a.png"])
    assert result["unknown"]["retries"] == 25 and "timeout" not in result["unknown"]
    assert "jiggler_gevent.wire.sidekiq" in result["modules"]
    forbidden = ("jiggler_gevent.client", "jiggler_gevent.sidekiq", "jiggler_gevent.server", "redis", *ADMIN)
    assert [m for m in result["modules"] if _is_under(m, forbidden)] == []
