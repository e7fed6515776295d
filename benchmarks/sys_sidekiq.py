"""Sidekiq (Ruby) in the benchmark: `sidekiq -r benchmarks/sidekiq_jobs.rb -c C -q QUEUE...`, retry off.

The worker and the enqueuer (`ruby benchmarks/sidekiq_jobs.rb ...`, Sidekiq's own client) get the harness's
Redis as REDIS_URL, which is how Sidekiq finds its Redis; the log level (warn) and redis-rb's deprecation warnings
are set in sidekiq_jobs.rb. Sidekiq OSS runs one process: `-p 2` rows start two sidekiq processes side by side
(what a Sidekiq OSS user does to use two cores). Several queues are `-q mail -q low -q default`: without
weights Sidekiq serves them in that strict order. The bulk API is `Sidekiq::Client.push_bulk`, 1,000 a call.
"""

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from benchmarks import common

MULTI_PROCESS = True
BULK = "push_bulk"
YJIT = False
JOBS_RB = str(Path(__file__).resolve().with_name("sidekiq_jobs.rb"))


def ruby_env(yjit: bool) -> list[str]:
    """`env` arguments that give a Ruby process the harness's Redis (and YJIT)."""
    return ["env", f"REDIS_URL={common.REDIS_URL}", f"RUBYOPT={'--yjit' if yjit else ''}"]


def sidekiq_command(concurrency: int, processes: int, queues: Sequence[str], yjit: bool) -> list[str]:
    """`processes` sidekiq processes of `concurrency` threads each (through `sh` when more than one)."""
    one = [
        *ruby_env(yjit),
        shutil.which("sidekiq") or "sidekiq",
        "-r",
        JOBS_RB,
        "-c",
        str(concurrency),
        *[arg for q in queues for arg in ("-q", q)],
    ]
    if processes == 1:
        return one
    return ["sh", "-c", " & ".join([shlex.join(one)] * processes) + " & wait"]


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return sidekiq_command(concurrency, processes, queues, YJIT)


def enqueuer(args: Sequence[str], yjit: bool = YJIT) -> list[str]:
    """The enqueuer's command line: `ruby sidekiq_jobs.rb preload|single|bulk|paced ...`."""
    return [*ruby_env(yjit), shutil.which("ruby") or "ruby", JOBS_RB, *args]


@cache
def _ruby_problem(feature: str) -> str | None:
    if not shutil.which("ruby") or not shutil.which("sidekiq"):
        return "Ruby or Sidekiq missing: apt-get install -y ruby-sidekiq ruby-pg"
    check = subprocess.run(["ruby", "-e", f"require {feature!r}"], capture_output=True, env=dict(os.environ))
    return f"ruby cannot require {feature!r}: apt-get install -y ruby-sidekiq ruby-pg" if check.returncode else None


def unavailable(workload: str) -> str | None:
    """Why this machine cannot run the workload under Sidekiq, or None."""
    return _ruby_problem("sidekiq") or (_ruby_problem("pg") if workload == "pg" else None)


def version() -> str:
    """Ruby's, Sidekiq's and redis-rb's versions."""
    script = 'require "sidekiq"; print RUBY_VERSION, " ", Sidekiq::VERSION, " ", Redis::VERSION'
    out = subprocess.run(["ruby", "-e", script], capture_output=True, text=True).stdout.split()
    return f"sidekiq {out[1]} on Ruby {out[0]}, redis-rb {out[2]}" if len(out) == 3 else "sidekiq ?"
