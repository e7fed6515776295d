"""What `--health-port` costs a worker: no-op jobs drained with and without it, in alternating rounds.

    python -m benchmarks.bench_health [--jobs 50000] [--rounds 8] [--port 8188]

The same tree on both sides (ab.py against HEAD, with `--health-port PORT` given to this tree's worker only): a
worker `-c 10` drains `--jobs` no-op jobs per round; prints each drain, the medians of jobs/s and worker CPU per job
of each side, and the paired ratios (with / without).
"""

import argparse
import sys

from benchmarks import ab


def main() -> None:
    """Run ab.py's alternating rounds with the health endpoints on one side."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--port", type=int, default=8188, help="a free port for the health endpoints")
    opts = parser.parse_args()
    sys.argv = [sys.argv[0], "HEAD", "--jobs", str(opts.jobs), "--rounds", str(opts.rounds)]
    sys.argv += ["--this-args", f"--health-port {opts.port}"]
    ab.main()


if __name__ == "__main__":
    main()
