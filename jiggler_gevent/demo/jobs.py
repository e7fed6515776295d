"""Example jobs: ordinary blocking code, run cooperatively by the worker.

gjiggler worker -r jiggler_gevent.demo.jobs
"""

import time
import urllib.request

from jiggler_gevent import job


@job
def nap(seconds: float) -> None:
    """Sleep with the plain time.sleep: the worker runs other jobs meanwhile."""
    time.sleep(seconds)


@job
def fetch_url(url: str) -> int:
    """An HTTP GET with urllib; returns how many bytes came back."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


@job
def write_line(path: str, line: str) -> None:
    """Append a line to a file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@job(retries=0)
def explode(message: str) -> None:
    """Always raises; with retries=0 it goes straight to the dead set."""
    raise RuntimeError(message)
